//! The ACME thread: which certificate is due, ordering it, publishing it to
//! the store and the state files, and waiting (with backoff after a
//! failure) until the next one is due. At start, before the thread runs,
//! every name gets its stored certificate or a temporary one, so the TLS
//! listeners answer from their first handshake.

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::certificate_dates::Validity;
use super::protocol::{AcmeClient, AcmeError, ChallengeKind};
use super::state_files::StateFiles;
use super::store::{AcmeStore, UsableCertificate, temporary_certificate};
use super::{AcmeSettings, ChallengeRoutes};
use crate::http::date;
use crate::log::Log;

/// After a failure: 5 minutes, doubling to a day (after a first refusal,
/// the other challenge is tried at once). Five failed validations of a
/// name in an hour would trip Let's Encrypt's limit; this makes at most
/// four.
const FIRST_RETRY: Duration = Duration::from_secs(300);
const LAST_RETRY: Duration = Duration::from_secs(86_400);
/// The clock is looked at again at least this often while waiting, so a
/// suspended machine or a clock step does not oversleep a renewal.
const CLOCK_CHECK: Duration = Duration::from_secs(60);

pub struct AcmeManager {
    wake: Arc<Wake>,
    _thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Wake {
    stopped: Mutex<bool>,
    signal: Condvar,
}

/// One `acme_certificate` line and when it next needs the issuer.
struct Duty {
    block: usize,
    names: Vec<String>,
    due: SystemTime,
    failures: u32,
    preferred: ChallengeKind,
}

/// One `ssl` block's issuer: its settings, and the account once reached.
struct Issuer {
    settings: AcmeSettings,
    routes: ChallengeRoutes,
    client: Option<AcmeClient>,
}

struct Worker {
    issuers: Vec<Issuer>,
    duties: Vec<Duty>,
    store: Arc<AcmeStore>,
    log: Arc<Log>,
    wake: Arc<Wake>,
}

impl AcmeManager {
    /// `blocks` pairs each ssl block's ACME settings with how the issuer can
    /// reach the front for it.
    pub fn start(
        blocks: Vec<(AcmeSettings, ChallengeRoutes)>,
        store: Arc<AcmeStore>,
        log: Arc<Log>,
    ) -> io::Result<AcmeManager> {
        let wake = Arc::new(Wake::default());
        let now = SystemTime::now();
        let mut duties = Vec::new();
        for (index, (settings, routes)) in blocks.iter().enumerate() {
            let files = StateFiles::open(&settings.state_path, &settings.directory);
            if let Err(error) = &files {
                log.error(format!(
                    "acme_issuer state_path {}: {error}; certificates cannot be stored (give the server's user a \
                     directory it can write)",
                    settings.state_path.display()
                ));
            }
            if !routes.http && !routes.tls_alpn {
                log.error(format!(
                    "acme_issuer {}: no listener can answer the issuer's challenge{}; add `listen 80` (HTTP-01) or \
                     an ssl listener (TLS-ALPN-01)",
                    settings.directory,
                    settings.challenge.map(|kind| format!(" ({} asked)", kind.name())).unwrap_or_default()
                ));
            }
            for names in &settings.certificates {
                let stored = files.as_ref().ok().and_then(|files| files.certificate(names));
                let retry = files.as_ref().ok().and_then(|files| files.retry_time(names)).filter(|at| *at > now);
                let due = match stored.filter(|stored| stored.covers(names) && stored.validity.not_after > now) {
                    Some(stored) => {
                        store.install(names, &stored.key);
                        log.info(format!(
                            "acme_certificate {}: using the stored certificate, valid until {}",
                            names.join(", "),
                            date::format(stored.validity.not_after)
                        ));
                        next_renewal(&stored.validity, now)
                    }
                    None => {
                        let temporary = temporary_certificate(names).map_err(io::Error::other)?;
                        store.install(names, &temporary);
                        now
                    }
                };
                // A failure before this start set the next attempt.
                let due = retry.map_or(due, |retry| retry.max(due));
                let preferred = if routes.http { ChallengeKind::Http01 } else { ChallengeKind::TlsAlpn01 };
                duties.push(Duty { block: index, names: names.clone(), due, failures: 0, preferred });
            }
        }
        let issuers = blocks.into_iter().map(|(settings, routes)| Issuer { settings, routes, client: None }).collect();
        let worker = Worker { issuers, duties, store, log, wake: Arc::clone(&wake) };
        let thread = if worker.duties.is_empty() {
            None
        } else {
            Some(crate::threads::spawn_without_signals("nightmare-acme".to_owned(), move || worker.run())?)
        };
        Ok(AcmeManager { wake, _thread: thread })
    }

    /// Ends the thread at its next wait. One in the middle of a request to
    /// the issuer finishes it first (20 s at most); it is not joined, as the
    /// front's exit need not wait for the issuer.
    pub fn stop(&self) {
        *self.wake.stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
        self.wake.signal.notify_all();
    }
}

impl Drop for AcmeManager {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Wake {
    /// False once stopped.
    fn sleep_until(&self, due: SystemTime) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if *stopped {
                return false;
            }
            let Ok(left) = due.duration_since(SystemTime::now()) else { return true };
            if left.is_zero() {
                return true;
            }
            stopped = self
                .signal
                .wait_timeout(stopped, left.min(CLOCK_CHECK))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }
}

impl Worker {
    fn run(mut self) {
        loop {
            let Some(next) = (0..self.duties.len()).min_by_key(|index| self.duties[*index].due) else { return };
            if !self.wake.sleep_until(self.duties[next].due) {
                return;
            }
            self.attempt(next);
        }
    }

    fn attempt(&mut self, index: usize) {
        let duty = &self.duties[index];
        let names = duty.names.join(", ");
        let directory = self.issuers[duty.block].settings.directory.clone();
        self.log.info(format!("acme_certificate {names}: ordering from {directory}"));
        match self.obtain(index) {
            Ok((usable, challenge, saved)) => {
                self.store.install(&self.duties[index].names, &usable.key);
                let renewal = next_renewal(&usable.validity, SystemTime::now());
                let duty = &mut self.duties[index];
                duty.due = renewal;
                duty.failures = 0;
                self.record_retry(index, None);
                self.log.info(format!(
                    "acme_certificate {names}: certificate installed ({}), valid until {}, renewal at {}{}",
                    challenge.name(),
                    date::format(usable.validity.not_after),
                    date::format(renewal),
                    saved.map_or_else(
                        |error| format!("; NOT stored: {error}"),
                        |dir| format!("; stored in {}", dir.display())
                    )
                ));
            }
            Err(error) => {
                let duty = &mut self.duties[index];
                duty.failures += 1;
                // The other challenge may get through where this one did
                // not (port 80 closed by a firewall, 443 behind a proxy).
                let other = match duty.preferred {
                    ChallengeKind::Http01 if self.issuers[duty.block].routes.tls_alpn => Some(ChallengeKind::TlsAlpn01),
                    ChallengeKind::TlsAlpn01 if self.issuers[duty.block].routes.http => Some(ChallengeKind::Http01),
                    _ => None,
                };
                duty.preferred = other.unwrap_or(duty.preferred);
                // The first refusal tries the other challenge at once; then
                // 10 minutes, doubling: four failed validations in the first
                // hour at most.
                let delay = match (duty.failures, other) {
                    (1, Some(_)) if !error.issuer_unreachable => Duration::ZERO,
                    (failures, _) => FIRST_RETRY.saturating_mul(1 << (failures - 1).min(16)).min(LAST_RETRY),
                };
                let due = SystemTime::now() + delay;
                duty.due = due;
                self.record_retry(index, Some(due));
                let retry = match delay.as_secs() {
                    0 => format!("retrying now with {}", self.duties[index].preferred.name()),
                    seconds => format!("retrying in {seconds} s; the names keep the certificate they have"),
                };
                if error.issuer_unreachable {
                    self.issuers[self.duties[index].block].client = None;
                    self.log.error(format!(
                        "acme_issuer {directory}: {} (acme_certificate {names}); {retry}",
                        error.message
                    ));
                } else {
                    self.log
                        .error(format!("acme_certificate {names}: {directory} refused: {}; {retry}", error.message));
                }
            }
        }
    }

    /// Keeps when the duty is next due after a failure (`Some`), or forgets
    /// it after a success, in its certificate's directory. Best effort:
    /// without it a restart only retries sooner.
    fn record_retry(&self, index: usize, at: Option<SystemTime>) {
        let duty = &self.duties[index];
        let settings = &self.issuers[duty.block].settings;
        if let Ok(files) = StateFiles::open(&settings.state_path, &settings.directory) {
            drop(files.set_retry_time(&duty.names, at));
        }
    }

    /// Orders the duty's certificate and stores it; the storing may fail
    /// without losing the certificate.
    fn obtain(
        &mut self,
        index: usize,
    ) -> Result<(UsableCertificate, ChallengeKind, io::Result<std::path::PathBuf>), AcmeError> {
        let duty = &self.duties[index];
        let issuer = &mut self.issuers[duty.block];
        let settings = &issuer.settings;
        let files = StateFiles::open(&settings.state_path, &settings.directory).map_err(|error| {
            AcmeError::unreachable(format!("state_path {}: {error}", settings.state_path.display()))
        })?;
        if issuer.client.is_none() {
            let key = files.account_key().map_err(AcmeError::unreachable)?;
            issuer.client = Some(AcmeClient::new(settings, key)?);
        }
        let client = issuer.client.as_mut().expect("made above");
        client.register(&settings.contact)?;
        let issued = client.order(&duty.names, issuer.routes, duty.preferred, &self.store)?;
        let usable = UsableCertificate::from_pem(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())
            .map_err(|error| AcmeError::refused(format!("the issued certificate: {error}")))?;
        if !usable.covers(&duty.names) {
            let names = usable.names.join(", ");
            return Err(AcmeError::refused(format!("the issued certificate lacks some names (it has {names})")));
        }
        let saved = files.save_certificate(&duty.names, &issued.chain_pem, &issued.key_pem);
        Ok((usable, issued.challenge, saved))
    }
}

/// Two thirds into the lifetime, but never sooner than a tenth of the
/// lifetime from now: a certificate whose renewal time has passed already
/// (a clock behind the issuer's, a backdated notBefore) must not be
/// ordered again in a loop.
fn next_renewal(validity: &Validity, now: SystemTime) -> SystemTime {
    let lifetime = validity.not_after.duration_since(validity.not_before).unwrap_or_default();
    validity.renewal_time().max(now + lifetime / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_two_thirds_in_but_never_a_loop() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let validity = Validity { not_before: start, not_after: start + Duration::from_secs(900) };
        assert_eq!(next_renewal(&validity, start), start + Duration::from_secs(600));
        let late = start + Duration::from_secs(700);
        assert_eq!(next_renewal(&validity, late), late + Duration::from_secs(90), "past two thirds: a tenth on");
    }
}
