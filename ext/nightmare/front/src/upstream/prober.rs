//! Watches the upstreams' hosts. One that stopped answering (a connect
//! timed out: the host is gone from the network) is left out of live
//! traffic and tried once a second, with a short connect timeout, until it
//! answers again. One that leaves a request waiting for its answer (the
//! connection itself says nothing of a host that drops off the network
//! until keepalive gives up, about two seconds on) is probed at once: if
//! it does not answer a connect within PROBE_PATIENCE it is out of use, and
//! requests that may safely run twice go elsewhere on the loops' next tick.
//! That patience outlasts Linux's first SYN resend (one second) by a
//! fifth, since a live host whose accept queue is full drops SYNs rather
//! than refusing, and keeps a request on a vanished host under two seconds.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::log::Log;
use crate::upstream::address::UpstreamAddress;
use crate::upstream::pool::{Failure, Pool};

/// How often a gone host is tried again.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often suspects are looked for, and how long a suspect has to
/// answer a connect.
const SUSPECTS_EVERY: Duration = Duration::from_millis(100);
const PROBE_PATIENCE: Duration = Duration::from_millis(1200);
/// A suspect that answered is not probed again this soon: a slow
/// endpoint is no news about its host.
const ANSWERED_SPARES_FOR: Duration = Duration::from_secs(2);

pub struct Prober {
    stop: Arc<AtomicBool>,
}

impl Prober {
    /// Probes `pool`'s unreachable servers until stopped (or dropped),
    /// each connect given `patience`; says so in `log` when one is back.
    pub fn start(pool: Arc<Pool>, patience: Duration, log: Arc<Log>) -> std::io::Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        crate::threads::spawn_without_signals("nightmare-prober".into(), move || {
            let mut last_round = std::time::Instant::now();
            let mut answered_at: Vec<Option<std::time::Instant>> = pool.servers().map(|_| None).collect();
            while !stopped.load(Ordering::Acquire) {
                std::thread::sleep(SUSPECTS_EVERY);
                for server in pool.take_suspects() {
                    if answered_at[server].is_some_and(|at| at.elapsed() < ANSWERED_SPARES_FOR) {
                        continue;
                    }
                    if answers(&pool.server(server).address, PROBE_PATIENCE) {
                        answered_at[server] = Some(std::time::Instant::now());
                    } else {
                        pool.failed(server, Failure::Unreachable, std::time::Instant::now());
                        log.warn(format!(
                            "upstream {} left a request unanswered and does not answer a connect: \
                             out of use until it does",
                            pool.server(server).address
                        ));
                    }
                }
                if last_round.elapsed() < PROBE_EVERY {
                    continue;
                }
                last_round = std::time::Instant::now();
                for server in pool.unreachable() {
                    if stopped.load(Ordering::Acquire) {
                        return;
                    }
                    if answers(&pool.server(server).address, patience) {
                        pool.reachable(server);
                        log.info(format!("upstream {} answers again; back in use", pool.server(server).address));
                    }
                }
            }
        })?;
        Ok(Prober { stop })
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn answers(address: &UpstreamAddress, patience: Duration) -> bool {
    match address {
        UpstreamAddress::Tcp(address) => TcpStream::connect_timeout(address, patience).is_ok(),
        UpstreamAddress::Unix(path) => UnixStream::connect(path).is_ok(),
    }
}
