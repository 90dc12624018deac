//! Probes the upstreams that stopped answering (a connect timed out: the
//! host is gone from the network), so that live traffic never waits on a
//! dead host again: a thread tries each of them once a second, with a
//! short connect timeout, and puts one back in use the moment it answers.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::log::Log;
use crate::upstream::address::UpstreamAddress;
use crate::upstream::pool::Pool;

const PROBE_EVERY: Duration = Duration::from_secs(1);

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
            while !stopped.load(Ordering::Acquire) {
                std::thread::sleep(PROBE_EVERY);
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
