//! The Nightmare! front: accepts every client on Unicorn's listeners,
//! buffers each request whole, hands it to an upstream (the master's own
//! workers through their private listener, with a PROXY protocol preamble,
//! or Unicorns on other hosts), and relays the response back. This crate
//! knows nothing of Ruby; the gem's glue drives it through `Front`.

pub mod access_log;
pub mod acme;
pub mod byte_queue;
pub mod config;
pub mod connection;
pub mod connection_id;
pub mod connection_permit;
pub mod counters;
pub mod event_loop;
pub mod http;
pub mod http2;
pub mod log;
pub mod loop_context;
pub mod mailbox;
pub mod net;
pub mod request;
pub mod request_share;
pub mod response;
pub mod shared;
pub mod shedding;
pub mod spool_writer;
pub mod static_files;
pub mod stats;
pub mod status_page;
pub mod temp_budget;
#[cfg(test)]
mod test_support;
pub mod threads;
pub mod upstream;

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};

pub use config::FrontConfig;
pub use request::head::HeadLimits;

use access_log::AccessLog;
use acme::{AcmeManager, AcmeStore, ChallengeRoutes};
use event_loop::EventLoop;
use log::Log;
use loop_context::WAKER;
use mailbox::{Mailbox, Mailboxes};
use net::listener::Listener;
use net::tls::{self, TlsContext, TlsSettings, TlsSetupError};
use shared::{Outputs, OwnAnswers, Shared, StopMode};
use static_files::StaticFiles;
use static_files::accel::AccelFiles;
use upstream::pool::Pool;
use upstream::prober::Prober;

pub use upstream::pool::LocalWorkers;

/// A running front: its loop threads and what they share.
pub struct Front {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// One per `ssl` block, shared by its listeners on every loop.
    tls: Vec<Arc<TlsContext>>,
    /// Certificates of `acme_certificate` names, kept across reloads.
    acme_store: Arc<AcmeStore>,
    /// Orders and renews them; stops with the front.
    acme: Option<AcmeManager>,
    /// Stops probing with the front.
    _prober: Prober,
}

/// A listening socket passed down by the master, and the `ssl` block (an
/// index into the TLS settings) whose certificates it serves, if any.
pub struct InheritedListener {
    pub fd: OwnedFd,
    pub tls: Option<usize>,
}

/// Everything a front starts with.
pub struct FrontSetup {
    pub config: FrontConfig,
    pub listeners: Vec<InheritedListener>,
    /// The `ssl` blocks, which listeners name by index.
    pub tls: Vec<TlsSettings>,
    /// The master's own workers, in embedded mode (standalone has none):
    /// the first server of the default group.
    pub local: Option<LocalWorkers>,
    /// The non-blocking write end of the log pipe.
    pub log: OwnedFd,
    /// The access log's descriptor, when `access_log` is on. It stays the
    /// caller's, open for the front's life: reopening it (USR1) in place
    /// points the front's writes at the new file.
    pub access_log: Option<RawFd>,
}

/// Where plain listeners send clients (308), if anywhere: the first
/// listener of an ssl block that says `ssl_redirect true`, else, with the
/// `ssl_redirect` setting, the first HTTPS listener.
fn https_redirect_port(
    config: &FrontConfig,
    listeners: &[Listener],
    blocks: &[Option<usize>],
    settings: &[TlsSettings],
) -> io::Result<Option<u16>> {
    let https = || listeners.iter().zip(blocks).filter_map(|(listener, block)| block.map(|index| (listener, index)));
    let asked = https().find(|(_, index)| settings.get(*index).is_some_and(|block| block.redirect));
    let chosen = asked.or_else(|| if config.ssl_redirect { https().next() } else { None });
    match chosen {
        Some((listener, _)) => Ok(listener.port()),
        None if config.ssl_redirect => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ssl_redirect: there is no ssl listener to send clients to; add an ssl block or drop ssl_redirect",
        )),
        None => Ok(None),
    }
}

/// Each ssl block with `acme_certificate` lines, and how its issuer can
/// reach the front: HTTP-01 through any plain TCP listener, TLS-ALPN-01
/// through the block's own.
fn acme_blocks(
    listeners: &[Listener],
    blocks: &[Option<usize>],
    settings: &[TlsSettings],
) -> Vec<(acme::AcmeSettings, ChallengeRoutes)> {
    let tcp = |listener: &Listener| listener.port().is_some();
    let http = listeners.iter().zip(blocks).any(|(listener, block)| block.is_none() && tcp(listener));
    settings
        .iter()
        .enumerate()
        .filter_map(|(index, block)| {
            let acme = block.acme.clone()?;
            let tls_alpn = blocks.contains(&Some(index));
            let routes = ChallengeRoutes { http, tls_alpn }.narrowed(acme.challenge);
            Some((acme, routes))
        })
        .collect()
}

impl Front {
    /// Starts `config.threads` event loops accepting on the listeners,
    /// handing requests to the workers.
    pub fn start(setup: FrontSetup) -> io::Result<Front> {
        let FrontSetup { mut config, listeners, tls: tls_settings, local, log, access_log } = setup;
        config.check().map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
        if listeners.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listeners to accept on"));
        }
        let blocks: Vec<Option<usize>> = listeners.iter().map(|inherited| inherited.tls).collect();
        let acme_store = Arc::new(AcmeStore::default());
        let tls = tls_settings
            .iter()
            .map(|settings| TlsContext::new(settings, &acme_store).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))?;
        let listeners = listeners
            .into_iter()
            .map(|inherited| {
                let listener = Listener::from_inherited(inherited.fd)?;
                match inherited.tls {
                    None => Ok(listener),
                    Some(index) => match tls.get(index) {
                        Some(context) => listener.with_tls(Arc::clone(context)),
                        None => Err(io::Error::new(io::ErrorKind::InvalidInput, "a listener names no ssl block")),
                    },
                }
            })
            .collect::<io::Result<Vec<_>>>()?;
        config.https_redirect_port = https_redirect_port(&config, &listeners, &blocks, &tls_settings)?;
        let polls = (0..config.threads).map(|_| Poll::new()).collect::<io::Result<Vec<_>>>()?;
        let mailboxes = polls
            .iter()
            .map(|poll| Waker::new(poll.registry(), WAKER).map(Mailbox::new))
            .collect::<io::Result<Vec<_>>>()?;
        let mailboxes = Arc::new(Mailboxes(mailboxes));
        let static_files = config.static_files.clone().map(StaticFiles::new).transpose()?;
        let log = Arc::new(Log::new(log));
        let access_log = access_log
            .map(|fd| {
                AccessLog::start(config.access_log_format.clone(), fd, config.access_log_buffer, Arc::clone(&log))
            })
            .transpose()?;
        let local = local.map(|local| LocalWorkers { per_worker: config.in_flight_per_worker, ..local });
        let pool = Pool::new(local, &config.upstreams, config.max_queued_requests, Box::new(Arc::clone(&mailboxes)));
        let prober = Prober::start(Arc::clone(&pool), config.upstream_connect_timeout, Arc::clone(&log))?;
        let outputs = Outputs { log, access_log };
        let accel_files = AccelFiles::new(&config.sendfile_roots)?;
        let acme_blocks = acme_blocks(&listeners, &blocks, &tls_settings);
        let acme_challenges = (!acme_blocks.is_empty()).then(|| Arc::clone(&acme_store));
        let own_answers = OwnAnswers { static_files, accel_files, acme_challenges };
        let shared = Arc::new(Shared::new(config, pool, outputs, mailboxes, own_answers));
        // Before the loops, so the first handshake finds every ACME name's
        // certificate (stored, or temporary); the issuer's validation that
        // comes before the loops run waits in the listeners' backlog.
        let acme = match acme_blocks.is_empty() {
            true => None,
            false => Some(AcmeManager::start(acme_blocks, Arc::clone(&acme_store), Arc::clone(&shared.log))?),
        };

        let mut threads = Vec::with_capacity(polls.len());
        for (index, poll) in polls.into_iter().enumerate() {
            let started = listeners
                .iter()
                .map(Listener::duplicate)
                .collect::<io::Result<Vec<_>>>()
                .and_then(|own_listeners| EventLoop::new(index, poll, Arc::clone(&shared), own_listeners))
                .and_then(|event_loop| {
                    threads::spawn_without_signals(format!("nightmare-{index}"), move || event_loop.run())
                });
            match started {
                Ok(handle) => threads.push(handle),
                Err(error) => {
                    // The loops already running must not outlive a failed start.
                    shared.request_stop(StopMode::Immediate);
                    threads.into_iter().for_each(|thread| drop(thread.join()));
                    return Err(error);
                }
            }
        }
        Ok(Front { shared, threads, tls, acme_store, acme, _prober: prober })
    }

    /// Workers now running; requests in flight follow it.
    pub fn set_worker_count(&self, workers: usize) {
        self.shared.pool.set_worker_count(workers);
        self.shared.shares.set_worker_count(workers);
    }

    /// Reloads every `ssl` block's certificates (HUP): all or none, so a
    /// bad file keeps the running ones. Connections already open keep the
    /// session they have.
    pub fn reload_tls(&self, settings: &[TlsSettings]) -> Result<(), TlsSetupError> {
        if settings.len() != self.tls.len() {
            return Err(TlsSetupError::setting("ssl", "the number of ssl blocks changed; that needs a new front"));
        }
        let fresh = self
            .tls
            .iter()
            .zip(settings)
            .map(|(context, settings)| tls::server_config(settings, Some(&context.current()), &self.acme_store))
            .collect::<Result<Vec<_>, _>>()?;
        for (context, config) in self.tls.iter().zip(fresh) {
            context.replace(Arc::new(config));
        }
        Ok(())
    }

    pub fn stop(&self, graceful: bool) {
        if let Some(acme) = &self.acme {
            acme.stop();
        }
        self.shared.request_stop(if graceful { StopMode::Graceful } else { StopMode::Immediate });
    }

    pub fn is_stopping(&self) -> bool {
        self.shared.stop_mode() != StopMode::Running
    }

    /// Loop threads that have ended. Any ending while the front is not
    /// stopping means a bug took one down.
    pub fn finished_threads(&self) -> usize {
        self.threads.iter().filter(|thread| thread.is_finished()).count()
    }

    pub fn is_finished(&self) -> bool {
        self.finished_threads() == self.threads.len()
    }

    /// Waits for the loops to end; returns how many ended by panicking.
    pub fn join(&mut self) -> usize {
        self.threads.drain(..).map(|thread| thread.join()).filter(Result::is_err).count()
    }

    /// Every figure, by name (see `stats`).
    pub fn stats(&self) -> stats::Figures {
        stats::snapshot(&self.shared)
    }
}
