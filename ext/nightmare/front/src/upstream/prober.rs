//! Watches the upstreams' hosts, off the loops and on threads of its own
//! (one for suspects, one for gone hosts, one per suspect probed), so that
//! a gone host's slow connect never delays other news.
//!
//! One that stopped answering (a connect timed out: the host is gone from
//! the network) is left out of live traffic and tried about once a second,
//! each connect given upstream_connect_timeout, until it answers again.
//!
//! One that leaves a request waiting for its answer is a suspect: the
//! connection itself says nothing of a host that dropped off the network,
//! so the host is probed at once, each suspect on a thread of its own. If
//! it does not answer a connect within PROBE_PATIENCE it is out of use,
//! and requests that may safely run twice go elsewhere at once (the loops
//! are woken for it). That patience outlasts Linux's first SYN resend (one
//! second) by a fifth, since a live host whose accept queue is full drops
//! SYNs rather than refusing, and keeps a request on a vanished host under
//! two seconds.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::log::Log;
use crate::upstream::address::UpstreamAddress;
use crate::upstream::pool::{Failure, Pool, ServerId};

/// How often gone hosts are tried again.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a wait for suspects may last before the stop flag is looked
/// at (a suspect itself is taken at once), and how long a suspect has to
/// answer a connect.
const SUSPECTS_EVERY: Duration = Duration::from_millis(100);
const PROBE_PATIENCE: Duration = Duration::from_millis(1200);
/// A suspect that answered is not probed again this soon: a slow
/// endpoint is no news about its host (a connect a second to each host
/// at most, while its requests are slow).
const ANSWERED_SPARES_FOR: Duration = Duration::from_secs(1);

pub struct Prober {
    stop: Arc<AtomicBool>,
}

impl Prober {
    /// Probes `pool`'s suspect and unreachable servers until stopped (or
    /// dropped), a gone host's connects given `patience`; says so in `log`
    /// when a host goes out of use and when it is back.
    pub fn start(pool: Arc<Pool>, patience: Duration, log: Arc<Log>) -> std::io::Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let (pool_for_suspects, log_for_suspects, stopped) = (Arc::clone(&pool), Arc::clone(&log), Arc::clone(&stop));
        crate::threads::spawn_without_signals("nightmare-suspects".into(), move || {
            check_suspects(&pool_for_suspects, &log_for_suspects, &stopped)
        })?;
        let stopped = Arc::clone(&stop);
        crate::threads::spawn_without_signals("nightmare-prober".into(), move || {
            retry_unreachable(&pool, patience, &log, &stopped)
        })?;
        Ok(Prober { stop })
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// What the suspect checks share with their probes: when each server last
/// answered, and which are being probed now.
struct SuspectWatch {
    answered_at: Mutex<Vec<Option<Instant>>>,
    probing: Vec<AtomicBool>,
}

fn check_suspects(pool: &Arc<Pool>, log: &Arc<Log>, stopped: &AtomicBool) {
    let watch = Arc::new(SuspectWatch {
        answered_at: Mutex::new(pool.servers().map(|_| None).collect()),
        probing: pool.servers().map(|_| AtomicBool::new(false)).collect(),
    });
    while !stopped.load(Ordering::Acquire) {
        for server in pool.take_suspects(SUSPECTS_EVERY) {
            let spared = watch.answered_at.lock().unwrap_or_else(|p| p.into_inner())[server]
                .is_some_and(|at| at.elapsed() < ANSWERED_SPARES_FOR);
            if spared || watch.probing[server].swap(true, Ordering::AcqRel) {
                continue;
            }
            // A probe of its own, so that a gone host's wait holds up no
            // other suspect; it inherits this thread's blocked signals.
            let (pool_for_probe, log_for_probe, watch_for_probe) =
                (Arc::clone(pool), Arc::clone(log), Arc::clone(&watch));
            let probe = move || probe_suspect(&pool_for_probe, server, &log_for_probe, &watch_for_probe);
            if let Err(error) = std::thread::Builder::new().name("nightmare-probe".into()).spawn(probe) {
                log.warn(format!(
                    "could not start a thread to probe upstream {}: {error}",
                    pool.server(server).address
                ));
                watch.probing[server].store(false, Ordering::Release);
            }
        }
    }
}

fn probe_suspect(pool: &Arc<Pool>, server: ServerId, log: &Log, watch: &SuspectWatch) {
    if answers(&pool.server(server).address, PROBE_PATIENCE) {
        watch.answered_at.lock().unwrap_or_else(|p| p.into_inner())[server] = Some(Instant::now());
    } else {
        pool.failed(server, Failure::Unreachable, Instant::now());
        log.warn(format!(
            "upstream {} left a request unanswered and does not answer a connect: out of use until it does",
            pool.server(server).address
        ));
    }
    watch.probing[server].store(false, Ordering::Release);
}

fn retry_unreachable(pool: &Arc<Pool>, patience: Duration, log: &Log, stopped: &AtomicBool) {
    while !stopped.load(Ordering::Acquire) {
        let round = Instant::now();
        for server in pool.unreachable() {
            if stopped.load(Ordering::Acquire) {
                return;
            }
            if answers(&pool.server(server).address, patience) {
                pool.reachable(server);
                log.info(format!("upstream {} answers again; back in use", pool.server(server).address));
            }
        }
        // Sleeping in short steps so that a stop is seen soon.
        while round.elapsed() < PROBE_EVERY && !stopped.load(Ordering::Acquire) {
            std::thread::sleep(SUSPECTS_EVERY);
        }
    }
}

fn answers(address: &UpstreamAddress, patience: Duration) -> bool {
    match address {
        UpstreamAddress::Tcp(address) => TcpStream::connect_timeout(address, patience).is_ok(),
        UpstreamAddress::Unix(path) => UnixStream::connect(path).is_ok(),
    }
}
