//! The upstream pool: every server a request may go to (in embedded mode
//! the master's own workers first), how many requests each has in flight
//! and may have, whether it is in use (failures, an unreachable host), and
//! the one queue where requests wait, first come first served, when every
//! server that could take them is busy. The front keeps that queue itself,
//! rather than in an accept queue, so it knows how long each request
//! waited and the moment every local worker is busy.
//!
//! A request holds room on one server as an `InFlight` value and a place
//! in the queue as a `QueuePlace`; each is given back when dropped, so no
//! path through a connection's life can leak one.
//!
//! Which server takes a request, among those of its group it has not tried:
//! 1. a primary that is not busy (the local workers while fewer requests
//!    are in flight than there are workers; a remote primary below its
//!    max_conns), the least loaded first (among equals, the one that has
//!    taken the fewest requests, so they take turns as in nginx);
//! 2. else a backup with room, the least loaded first: backups take the
//!    overflow, and only when every local worker is busy;
//! 3. else a primary with room left (the local workers' accept queue, a few
//!    requests per worker, which keeps them from ever waiting for the front);
//! 4. else the request waits in the queue, or, when every server it could
//!    still use is out of use, tries one of those anyway (with room, and
//!    one taken down by failures before an unreachable one), as nginx does.
//!
//! A waiter remembers the servers it tried, so a grant never sends it back
//! to one that failed it; the queue is first come, first served within a
//! group, except that a waiter which only waits because it tried the free
//! servers lets the next one go.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::connection_id::ConnectionId;
use crate::upstream::address::UpstreamAddress;
use crate::upstream::proxy_header::Secret;
use crate::upstream::spec::{HostPattern, ServerSpec, UpstreamSpec, host_name};

mod choice;
mod health;
mod queue;
mod room;
#[cfg(test)]
mod tests;

use choice::Pick;
pub use health::Failure;
use health::ServerState;
use queue::Waiter;
pub use room::{InFlight, QueuePlace};

pub type ServerId = usize;
/// 0 is the default group; route `i` of the spec is group `i + 1`.
pub type GroupId = usize;

/// Where grants are delivered: the loop of the connection that waits.
/// Room a sink drops instead of delivering goes back to the pool.
pub trait GrantSink: Send + Sync {
    fn deliver(&self, waiter: ConnectionId, room: InFlight);
    /// A host was found gone: exchanges waiting on it may leave now rather
    /// than at their loop's next tick.
    fn host_lost(&self) {}
}

/// What goes ahead of a request on the connection, and who says where the
/// client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preamble {
    /// The master's own workers: PROXY v2 with the master's secret.
    Workers(Secret),
    /// A remote listener marked for it: PROXY v2, the client's address.
    ProxyV2,
    /// A plain HTTP listener: the client's address in X-Forwarded-For.
    Forwarded,
}

/// What a server is; fixed for the pool's life.
#[derive(Debug)]
pub struct Server {
    pub address: UpstreamAddress,
    pub preamble: Preamble,
    pub backup: bool,
    /// The master's own workers.
    pub local: bool,
    max_fails: u32,
    fail_timeout: Duration,
}

/// The master's own workers, in embedded mode.
#[derive(Clone, Debug)]
pub struct LocalWorkers {
    /// Their private listener; each preamble carries `secret`.
    pub socket: std::path::PathBuf,
    pub secret: Secret,
    /// How many run now.
    pub workers: usize,
    /// Requests in flight per worker at most (in_flight_per_worker).
    pub per_worker: usize,
}

#[derive(Debug, Default)]
struct State {
    servers: Vec<ServerState>,
    queue: VecDeque<Waiter>,
}

/// Where a request comes from, for its place in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A new request: last in the queue, which may be full.
    New,
    /// One a server could not take: first, as it came first.
    Again,
    /// One whose server's accept queue was full: another server now, or
    /// first in the queue for the next room anywhere (that one included).
    AfterBusy(ServerId),
}

pub enum Admission {
    Granted(InFlight),
    Queued(QueuePlace),
    /// The queue is at max_queued_requests.
    Full,
    /// Every server of the group was tried.
    Exhausted,
}

/// Figures for the front's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// The local workers, their room, and requests in flight to them.
    pub workers: usize,
    pub local_limit: usize,
    pub local_in_flight: usize,
    /// Requests in flight to other servers.
    pub remote_in_flight: usize,
    pub queued: usize,
    /// Servers out of use now (failures, or unreachable).
    pub servers_out_of_use: usize,
}

pub struct Pool {
    servers: Vec<Server>,
    /// Server ids by group, primaries first.
    groups: Vec<Vec<ServerId>>,
    routes: Vec<HostPattern>,
    /// Whether the default group has any server (standalone with only a map may not).
    has_default: bool,
    per_worker: usize,
    max_queued: usize,
    state: Mutex<State>,
    /// Signalled when a server comes under suspicion, for the prober.
    suspected: Condvar,
    sink: Box<dyn GrantSink>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("servers", &self.servers).finish_non_exhaustive()
    }
}

impl Pool {
    pub fn new(
        local: Option<LocalWorkers>,
        spec: &UpstreamSpec,
        max_queued: usize,
        sink: Box<dyn GrantSink>,
    ) -> Arc<Pool> {
        let mut servers = Vec::new();
        let mut states = Vec::new();
        let per_worker = local.as_ref().map_or(1, |local| local.per_worker);
        if let Some(local) = &local {
            servers.push(Server {
                address: UpstreamAddress::Unix(local.socket.clone()),
                preamble: Preamble::Workers(local.secret),
                backup: false,
                local: true,
                // Its master is what answers for it: never out of use.
                max_fails: 0,
                fail_timeout: Duration::ZERO,
            });
            states.push(ServerState::new(local.workers.saturating_mul(local.per_worker), local.workers));
        }
        let mut add_group = |specs: &[ServerSpec], with_local: bool| {
            let mut members: Vec<ServerId> = if with_local && local.is_some() { vec![0] } else { Vec::new() };
            let mut backups = Vec::new();
            for spec in specs {
                let id = servers.len();
                servers.push(Server {
                    address: spec.address.clone(),
                    preamble: if spec.proxy_protocol { Preamble::ProxyV2 } else { Preamble::Forwarded },
                    backup: spec.backup,
                    local: false,
                    max_fails: spec.max_fails,
                    fail_timeout: spec.fail_timeout,
                });
                let limit = if spec.max_conns == 0 { usize::MAX } else { spec.max_conns };
                states.push(ServerState::new(limit, limit));
                if spec.backup { backups.push(id) } else { members.push(id) }
            }
            members.extend(backups);
            members
        };
        let mut groups = vec![add_group(&spec.servers, true)];
        for route in &spec.routes {
            groups.push(add_group(&route.servers, false));
        }
        let has_default = !groups[0].is_empty();
        Arc::new(Pool {
            servers,
            groups,
            routes: spec.routes.iter().map(|route| route.pattern.clone()).collect(),
            has_default,
            per_worker,
            max_queued,
            state: Mutex::new(State { servers: states, queue: VecDeque::new() }),
            suspected: Condvar::new(),
            sink,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counts that are
        // still the best information there is.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn server(&self, id: ServerId) -> &Server {
        &self.servers[id]
    }

    pub fn servers(&self) -> impl Iterator<Item = (ServerId, &Server)> {
        self.servers.iter().enumerate()
    }

    /// The group a request with this Host goes to; `None` when no route
    /// matches and there is no default group.
    pub fn group_for(&self, host: Option<&[u8]>) -> Option<GroupId> {
        let name = host.and_then(host_name);
        let routed = name.and_then(|name| self.routes.iter().position(|pattern| pattern.matches(name)));
        match routed {
            Some(index) => Some(index + 1),
            None => self.has_default.then_some(0),
        }
    }

    /// Room on a server of `group` now, if the rules above find one;
    /// otherwise a place in the queue. No waiter is passed over: room
    /// that came back (a request ended, a fail_timeout ran out) went to the
    /// waiters first (`end_rests`, `grant_free`), so room a newcomer finds
    /// is room no waiter can use.
    pub fn admit(
        self: &Arc<Self>,
        waiter: ConnectionId,
        group: GroupId,
        tried: &[ServerId],
        placement: Placement,
        now: Instant,
    ) -> Admission {
        let (admission, granted) = {
            let mut state = self.lock();
            // A server back from its fail_timeout goes to the waiters first.
            let granted = if self.end_rests(&mut state, now) { self.grant_free(&mut state, now) } else { Vec::new() };
            // A server just found busy is not taken again at once, but it
            // is still one to wait for: it does not count as tried.
            let avoided = match placement {
                Placement::AfterBusy(server) => Some(server),
                _ => None,
            };
            let admission = match self.pick(&state, group, tried, avoided, now) {
                Pick::Server(server) => Admission::Granted(self.take(&mut state, server)),
                // A server whose accept queue was full is still the one to
                // wait for, once a request to it ends.
                Pick::Exhausted if !matches!(placement, Placement::AfterBusy(_)) => Admission::Exhausted,
                Pick::Wait | Pick::Exhausted => {
                    if placement == Placement::New && state.queue.len() >= self.max_queued {
                        Admission::Full
                    } else {
                        let entry = Waiter { id: waiter, group, tried: tried.to_vec() };
                        if placement == Placement::New {
                            state.queue.push_back(entry);
                        } else {
                            state.queue.push_front(entry);
                        }
                        Admission::Queued(QueuePlace { pool: Arc::clone(self), waiter: Some(waiter) })
                    }
                }
            };
            (admission, granted)
        };
        self.deliver(granted);
        admission
    }

    /// The local workers now running; their room follows.
    pub fn set_worker_count(self: &Arc<Self>, workers: usize) {
        let granted = {
            let mut state = self.lock();
            let Some(local) = self.servers.iter().position(|server| server.local) else { return };
            state.servers[local].limit = workers.saturating_mul(self.per_worker);
            state.servers[local].busy_at = workers;
            self.grant_free(&mut state, Instant::now())
        };
        self.deliver(granted);
    }

    /// A full accept queue with nothing in flight has no release coming to
    /// lift the hold (strangers filled it, or the workers were replaced),
    /// and a server out of use for failures comes back after its
    /// fail_timeout with no event to say so: the loops call this on their tick.
    pub fn tick(self: &Arc<Self>, now: Instant) {
        let granted = {
            let mut state = self.lock();
            let mut changed = self.end_rests(&mut state, now);
            for slot in &mut state.servers {
                if slot.held_back && slot.in_flight == 0 {
                    slot.held_back = false;
                    changed = true;
                }
            }
            if !changed || state.queue.is_empty() {
                return;
            }
            self.grant_free(&mut state, now)
        };
        self.deliver(granted);
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.lock();
        let now = Instant::now();
        let local = self.servers.iter().position(|server| server.local).map(|id| &state.servers[id]);
        PoolStats {
            workers: local.map_or(0, |slot| slot.busy_at),
            local_limit: local.map_or(0, |slot| slot.limit),
            local_in_flight: local.map_or(0, |slot| slot.in_flight),
            remote_in_flight: self
                .servers
                .iter()
                .zip(&state.servers)
                .filter(|(server, _)| !server.local)
                .map(|(_, slot)| slot.in_flight)
                .sum(),
            queued: state.queue.len(),
            servers_out_of_use: state.servers.iter().filter(|slot| !slot.in_use(now)).count(),
        }
    }

    /// Requests in flight to one server now.
    pub fn in_flight_to(&self, server: ServerId) -> usize {
        self.lock().servers.get(server).map_or(0, |slot| slot.in_flight)
    }

    /// Requests each server has taken so far, by id.
    pub fn requests_by_server(&self) -> Vec<u64> {
        self.lock().servers.iter().map(|slot| slot.requests).collect()
    }
}
