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

#[derive(Debug)]
struct ServerState {
    in_flight: usize,
    /// Requests in flight at most.
    limit: usize,
    /// From this many in flight it counts as busy (step 1 above).
    busy_at: usize,
    /// Its accept queue was found full: no more until a request ends.
    held_back: bool,
    fails: u32,
    first_fail: Option<Instant>,
    down_until: Option<Instant>,
    /// Since a connect timed out: out of use until the prober reaches it.
    unreachable: Option<Instant>,
    /// How many times it was found unreachable: room taken before the
    /// latest time is on a host that went away under it.
    times_lost: u64,
    /// A request to it has waited long for an answer: the prober checks
    /// that its host is still there.
    suspect: bool,
    requests: u64,
}

impl ServerState {
    fn new(limit: usize, busy_at: usize) -> Self {
        ServerState {
            in_flight: 0,
            limit,
            busy_at,
            held_back: false,
            fails: 0,
            first_fail: None,
            down_until: None,
            unreachable: None,
            times_lost: 0,
            suspect: false,
            requests: 0,
        }
    }

    fn in_use(&self, now: Instant) -> bool {
        self.unreachable.is_none() && self.down_until.is_none_or(|until| now >= until)
    }

    fn has_room(&self) -> bool {
        !self.held_back && self.in_flight < self.limit
    }
}

/// A request waiting for room, and the servers it already tried.
#[derive(Debug)]
struct Waiter {
    id: ConnectionId,
    group: GroupId,
    tried: Vec<ServerId>,
}

/// Where a request may go now.
enum Pick {
    Server(ServerId),
    /// A server it may use will have room when a request ends.
    Wait,
    /// It tried every server of its group.
    Exhausted,
}

#[derive(Debug, Default)]
struct State {
    servers: Vec<ServerState>,
    queue: VecDeque<Waiter>,
}

/// How a connection to a server failed, for its health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Refused, reset, closed early: counted against max_fails.
    Refused,
    /// Nothing answered in time: the host is gone from the network, and
    /// live traffic stays away until a probe reaches it.
    Unreachable,
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

    fn pick(&self, state: &State, group: GroupId, tried: &[ServerId], avoided: Option<ServerId>, now: Instant) -> Pick {
        if let Some(server) = self.choose(state, group, tried, avoided, now) {
            return Pick::Server(server);
        }
        let untried = || self.groups[group].iter().copied().filter(|id| !tried.contains(id));
        if untried().any(|id| state.servers[id].in_use(now)) {
            return Pick::Wait;
        }
        // Nothing in use is left to wait for: one out of use anyway, as
        // nginx does; an unreachable one only if nothing else is left.
        let with_room = |id: &ServerId| state.servers[*id].has_room();
        let last_resort = untried()
            .filter(with_room)
            .find(|id| state.servers[*id].unreachable.is_none())
            .or_else(|| untried().find(with_room));
        match last_resort {
            Some(server) => Pick::Server(server),
            None if untried().next().is_some() => Pick::Wait,
            None => Pick::Exhausted,
        }
    }

    fn choose(
        &self,
        state: &State,
        group: GroupId,
        tried: &[ServerId],
        avoided: Option<ServerId>,
        now: Instant,
    ) -> Option<ServerId> {
        let candidates = || {
            self.groups[group].iter().copied().filter(|id| {
                let server = &state.servers[*id];
                !tried.contains(id) && avoided != Some(*id) && !server.held_back && server.in_use(now)
            })
        };
        let least = |filter: &dyn Fn(ServerId) -> bool| {
            candidates()
                .filter(|id| filter(*id))
                .min_by_key(|id| (state.servers[*id].in_flight, state.servers[*id].requests))
        };
        let servers = &state.servers;
        least(&|id| !self.servers[id].backup && servers[id].in_flight < servers[id].busy_at)
            .or_else(|| least(&|id| self.servers[id].backup && servers[id].in_flight < servers[id].limit))
            .or_else(|| least(&|id| !self.servers[id].backup && servers[id].in_flight < servers[id].limit))
    }

    fn take(self: &Arc<Self>, state: &mut State, server: ServerId) -> InFlight {
        let slot = &mut state.servers[server];
        slot.in_flight += 1;
        slot.requests += 1;
        InFlight { pool: Arc::clone(self), server, hold_back: false, times_lost: slot.times_lost }
    }

    /// Servers whose fail_timeout has ended are back in use; true if any.
    fn end_rests(&self, state: &mut State, now: Instant) -> bool {
        let mut ended = false;
        for slot in &mut state.servers {
            if slot.down_until.is_some_and(|until| now >= until) {
                slot.down_until = None;
                ended = true;
            }
        }
        ended
    }

    fn cancel(&self, waiter: ConnectionId) {
        let mut state = self.lock();
        if let Some(index) = state.queue.iter().position(|queued| queued.id == waiter) {
            state.queue.remove(index);
        }
    }

    /// Room in flight given back; `hold_back` when the server's accept
    /// queue was found full, so no one gets it until a request to it ends.
    fn release(self: &Arc<Self>, server: ServerId, hold_back: bool) {
        let granted = {
            let mut state = self.lock();
            let slot = &mut state.servers[server];
            debug_assert!(slot.in_flight > 0, "room in flight was given back twice");
            slot.in_flight = slot.in_flight.saturating_sub(1);
            // A request that ended made room in its accept queue.
            slot.held_back = hold_back;
            if hold_back {
                return;
            }
            self.grant_free(&mut state, Instant::now())
        };
        self.deliver(granted);
    }

    /// Called without the lock: room a sink drops comes straight back.
    fn deliver(&self, granted: Vec<(ConnectionId, InFlight)>) {
        granted.into_iter().for_each(|(waiter, room)| self.sink.deliver(waiter, room));
    }

    /// Grants room to waiters, in order, while a server they may use has
    /// some. A waiter that cannot go holds back no one: what a later one
    /// takes is room it could not use now (a server it tried, or one out
    /// of use while it still has one in use to wait for).
    fn grant_free(self: &Arc<Self>, state: &mut State, now: Instant) -> Vec<(ConnectionId, InFlight)> {
        let mut granted = Vec::new();
        // Groups where a waiter that tried nothing cannot go: nor can the
        // next such waiter, so it need not be asked.
        let mut full: Vec<GroupId> = Vec::new();
        let mut index = 0;
        while index < state.queue.len() {
            let waiter = &state.queue[index];
            let fresh = waiter.tried.is_empty();
            if fresh && full.contains(&waiter.group) {
                index += 1;
                continue;
            }
            match self.pick(state, waiter.group, &waiter.tried, None, now) {
                Pick::Server(server) => {
                    let id = waiter.id;
                    state.queue.remove(index);
                    granted.push((id, self.take(state, server)));
                }
                _ => {
                    if fresh {
                        full.push(waiter.group);
                    }
                    index += 1;
                }
            }
        }
        granted
    }

    /// A server's connect failed (or its connection broke before a reply).
    /// Waiters whose every server is now out of use try one anyway.
    pub fn failed(self: &Arc<Self>, server: ServerId, failure: Failure, now: Instant) {
        let mut newly_lost = false;
        let granted = {
            let mut state = self.lock();
            let info = &self.servers[server];
            let slot = &mut state.servers[server];
            match failure {
                Failure::Unreachable if info.local => return,
                Failure::Unreachable => {
                    if slot.unreachable.is_none() {
                        slot.unreachable = Some(now);
                        slot.times_lost += 1;
                        newly_lost = true;
                    }
                }
                Failure::Refused if info.max_fails == 0 || info.fail_timeout.is_zero() => return,
                Failure::Refused => {
                    if slot.first_fail.is_none_or(|first| now.saturating_duration_since(first) > info.fail_timeout) {
                        slot.first_fail = Some(now);
                        slot.fails = 0;
                    }
                    slot.fails += 1;
                    if slot.fails < info.max_fails {
                        return;
                    }
                    slot.down_until = Some(now + info.fail_timeout);
                    slot.fails = 0;
                    slot.first_fail = None;
                }
            }
            self.grant_free(&mut state, now)
        };
        self.deliver(granted);
        if newly_lost {
            self.sink.host_lost();
        }
    }

    /// A server answered: its count of failures starts over.
    pub fn succeeded(&self, server: ServerId) {
        let mut state = self.lock();
        let slot = &mut state.servers[server];
        slot.fails = 0;
        slot.first_fail = None;
    }

    /// A request to `server` has waited long for its answer: if its host
    /// is reached by TCP, the prober checks it is still on the network.
    pub fn suspect(&self, server: ServerId) {
        if matches!(self.servers[server].address, UpstreamAddress::Tcp(_)) {
            let mut state = self.lock();
            if !std::mem::replace(&mut state.servers[server].suspect, true) {
                self.suspected.notify_one();
            }
        }
    }

    /// Servers under suspicion, cleared: the prober checks each once. Waits
    /// up to `patience` for one when there is none.
    pub fn take_suspects(&self, patience: Duration) -> Vec<ServerId> {
        let mut state = self.lock();
        let none = |state: &mut State| !state.servers.iter().any(|slot| slot.suspect && slot.unreachable.is_none());
        if none(&mut state) {
            state = match self.suspected.wait_timeout_while(state, patience, |state| none(state)) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        let suspects = state.servers.iter().enumerate().filter(|(_, slot)| slot.suspect && slot.unreachable.is_none());
        let suspects: Vec<ServerId> = suspects.map(|(id, _)| id).collect();
        suspects.iter().for_each(|id| state.servers[*id].suspect = false);
        suspects
    }

    /// Unreachable servers, for the prober.
    pub fn unreachable(&self) -> Vec<ServerId> {
        let state = self.lock();
        state.servers.iter().enumerate().filter(|(_, slot)| slot.unreachable.is_some()).map(|(id, _)| id).collect()
    }

    /// The prober reached it: back in use, and whoever waits may go.
    pub fn reachable(self: &Arc<Self>, server: ServerId) {
        let granted = {
            let mut state = self.lock();
            state.servers[server].unreachable = None;
            state.servers[server].down_until = None;
            self.grant_free(&mut state, Instant::now())
        };
        self.deliver(granted);
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

/// Room for one request in flight to one server.
pub struct InFlight {
    pool: Arc<Pool>,
    server: ServerId,
    hold_back: bool,
    /// The server's `times_lost` when the room was taken.
    times_lost: u64,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InFlight({})", self.server)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.release(self.server, self.hold_back);
    }
}

impl InFlight {
    pub fn server(&self) -> ServerId {
        self.server
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The server's host was found gone from the network after this room
    /// was taken (not before: a request sent there anyway, as a last
    /// resort, waits it out).
    pub fn host_lost(&self) -> bool {
        // Only a TCP host is ever found gone; the local workers' exchanges,
        // asked every tick while they wait, need not take the lock.
        if !matches!(self.pool.servers[self.server].address, UpstreamAddress::Tcp(_)) {
            return false;
        }
        let state = self.pool.lock();
        let slot = &state.servers[self.server];
        slot.unreachable.is_some() && slot.times_lost > self.times_lost
    }

    /// The server's accept queue was full: its room goes back, held back
    /// (granted to no one) until a request in flight to it ends.
    pub fn busy(mut self) {
        self.hold_back = true;
    }
}

/// A connection's place in the queue: dropping it leaves the queue (a
/// client gone, a queue_timeout), so a server is never granted to nobody.
pub struct QueuePlace {
    pool: Arc<Pool>,
    waiter: Option<ConnectionId>,
}

impl std::fmt::Debug for QueuePlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueuePlace")
    }
}

impl QueuePlace {
    /// The grant came: the place was already taken out of the queue.
    pub fn granted(mut self, room: InFlight) -> InFlight {
        self.waiter = None;
        room
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        // Not found means a grant is on its way; its receiver, finding no
        // one waiting, gives the room back.
        if let Some(waiter) = self.waiter {
            self.pool.cancel(waiter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::spec::HostRoute;

    /// Grants as a loop gets them; the room stays taken until a test
    /// hands it back (`take_rooms`, then drop).
    #[derive(Default)]
    struct Recorder {
        delivered: Mutex<Vec<(ConnectionId, InFlight)>>,
        kept: Mutex<Vec<InFlight>>,
        hosts_lost: std::sync::atomic::AtomicUsize,
    }

    impl GrantSink for Arc<Recorder> {
        fn deliver(&self, waiter: ConnectionId, room: InFlight) {
            self.delivered.lock().unwrap().push((waiter, room));
        }

        fn host_lost(&self) {
            self.hosts_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl Recorder {
        /// Who got room on which server since the last look.
        fn take(&self) -> Vec<(ConnectionId, ServerId)> {
            let rooms = self.take_rooms();
            let seen = rooms.iter().map(|(waiter, room)| (*waiter, room.server())).collect();
            self.kept.lock().unwrap().extend(rooms.into_iter().map(|(_, room)| room));
            seen
        }

        fn take_rooms(&self) -> Vec<(ConnectionId, InFlight)> {
            std::mem::take(&mut self.delivered.lock().unwrap())
        }
    }

    fn waiter(slot: usize) -> ConnectionId {
        ConnectionId { loop_index: 0, slot, serial: slot as u64 }
    }

    fn remote(port: u16, backup: bool) -> ServerSpec {
        let mut spec = ServerSpec::new(UpstreamAddress::Tcp(([10, 0, 0, 2], port).into()));
        spec.backup = backup;
        spec
    }

    fn local(workers: usize, per_worker: usize) -> Option<LocalWorkers> {
        Some(LocalWorkers { socket: "/tmp/w.sock".into(), secret: [7; 16], workers, per_worker })
    }

    fn pool(local: Option<LocalWorkers>, spec: UpstreamSpec, max_queued: usize) -> (Arc<Pool>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        (Pool::new(local, &spec, max_queued, Box::new(Arc::clone(&recorder))), recorder)
    }

    fn granted(admission: Admission) -> InFlight {
        match admission {
            Admission::Granted(room) => room,
            Admission::Queued(_) => panic!("queued, not granted"),
            Admission::Full => panic!("full, not granted"),
            Admission::Exhausted => panic!("exhausted, not granted"),
        }
    }

    fn queued(admission: Admission) -> QueuePlace {
        match admission {
            Admission::Queued(place) => place,
            Admission::Granted(room) => panic!("granted {room:?}, not queued"),
            Admission::Full => panic!("full, not queued"),
            Admission::Exhausted => panic!("exhausted, not queued"),
        }
    }

    #[test]
    fn local_workers_take_their_room_then_the_queue_holds_the_rest_in_order() {
        let (pool, recorder) = pool(local(2, 1), UpstreamSpec::default(), 100);
        let now = Instant::now();
        let first = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
        let second = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
        assert_eq!((first.server(), second.server()), (0, 0));
        let _places: Vec<_> =
            (3..6).map(|slot| queued(pool.admit(waiter(slot), 0, &[], Placement::New, now))).collect();
        assert_eq!(pool.stats().queued, 3);
        drop(first);
        assert_eq!(recorder.take(), vec![(waiter(3), 0)], "first come, first served");
        assert_eq!(pool.stats().local_in_flight, 2, "the grant holds the room given back");
        let _fourth = queued(pool.admit(waiter(9), 0, &[], Placement::New, now));
        drop(second);
        assert_eq!(recorder.take(), vec![(waiter(4), 0)], "a newcomer does not jump the queue");
    }

    #[test]
    fn backups_take_the_overflow_only_once_every_local_worker_is_busy() {
        let spec = UpstreamSpec { servers: vec![remote(8080, true)], routes: Vec::new() };
        let (pool, _recorder) = pool(local(2, 16), spec, 100);
        let now = Instant::now();
        let busy: Vec<_> = (0..2).map(|slot| granted(pool.admit(waiter(slot), 0, &[], Placement::New, now))).collect();
        assert!(busy.iter().all(|room| room.server() == 0), "a free worker always gets it");
        let overflow = granted(pool.admit(waiter(3), 0, &[], Placement::New, now));
        assert_eq!(overflow.server(), 1, "both workers busy: the backup");
        drop(busy);
        assert_eq!(granted(pool.admit(waiter(4), 0, &[], Placement::New, now)).server(), 0, "a worker is free again");
    }

    #[test]
    fn a_backup_at_its_max_conns_leaves_the_rest_to_the_workers_accept_queue() {
        let mut backup = remote(8080, true);
        backup.max_conns = 1;
        let (pool, _recorder) = pool(local(1, 4), UpstreamSpec { servers: vec![backup], routes: Vec::new() }, 100);
        let now = Instant::now();
        let servers: Vec<ServerId> = (0..5)
            .map(|slot| granted(pool.admit(waiter(slot), 0, &[], Placement::New, now)))
            .map(|room| {
                let server = room.server();
                std::mem::forget(room);
                server
            })
            .collect();
        assert_eq!(servers, vec![0, 1, 0, 0, 0], "worker, backup, then the workers' accept queue up to 4");
        assert!(matches!(pool.admit(waiter(9), 0, &[], Placement::New, now), Admission::Queued(_)));
    }

    #[test]
    fn idle_primaries_take_turns() {
        let spec =
            UpstreamSpec { servers: vec![remote(1, false), remote(2, false), remote(3, false)], routes: Vec::new() };
        let (pool, _recorder) = pool(None, spec, 100);
        let now = Instant::now();
        let turns: Vec<ServerId> =
            (0..6).map(|slot| granted(pool.admit(waiter(slot), 0, &[], Placement::New, now)).server()).collect();
        assert_eq!(turns, vec![0, 1, 2, 0, 1, 2], "one after another when none is busy");
    }

    #[test]
    fn primaries_share_the_load_least_busy_first_and_tried_ones_are_skipped() {
        let spec = UpstreamSpec { servers: vec![remote(1, false), remote(2, false)], routes: Vec::new() };
        let (pool, _recorder) = pool(None, spec, 100);
        let now = Instant::now();
        let a = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
        let b = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
        assert_ne!(a.server(), b.server());
        assert_eq!(granted(pool.admit(waiter(3), 0, &[a.server()], Placement::New, now)).server(), b.server());
        assert!(
            matches!(pool.admit(waiter(4), 0, &[0, 1], Placement::New, now), Admission::Exhausted),
            "every server tried"
        );
    }

    #[test]
    fn a_server_past_max_fails_rests_for_fail_timeout_and_fail_timeout_zero_never_does() {
        let mut flaky = remote(1, false);
        flaky.max_fails = 2;
        flaky.fail_timeout = Duration::from_secs(10);
        let mut steady = remote(2, false);
        steady.fail_timeout = Duration::ZERO;
        let spec = UpstreamSpec { servers: vec![flaky, steady], routes: Vec::new() };
        let (pool, _recorder) = pool(None, spec, 100);
        let now = Instant::now();
        pool.failed(0, Failure::Refused, now);
        assert_eq!(pool.stats().servers_out_of_use, 0, "one failure of two allowed");
        pool.failed(0, Failure::Refused, now);
        assert_eq!(pool.stats().servers_out_of_use, 1);
        for _ in 0..5 {
            pool.failed(1, Failure::Refused, now);
        }
        assert_eq!(
            granted(pool.admit(waiter(1), 0, &[], Placement::New, now)).server(),
            1,
            "fail_timeout 0: still in use"
        );
        let later = now + Duration::from_secs(11);
        pool.tick(later);
        assert_eq!(pool.stats().servers_out_of_use, 0, "back after fail_timeout");
    }

    #[test]
    fn the_prober_takes_a_suspect_as_soon_as_there_is_one() {
        let spec = UpstreamSpec { servers: vec![remote(1, false), remote(2, false)], routes: Vec::new() };
        let (pool, _recorder) = pool(None, spec, 100);
        assert!(pool.take_suspects(Duration::from_millis(10)).is_empty(), "none: the wait runs out");
        let accuser = Arc::clone(&pool);
        let suspicion = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            accuser.suspect(1);
        });
        let began = Instant::now();
        assert_eq!(pool.take_suspects(Duration::from_secs(30)), vec![1]);
        assert!(began.elapsed() < Duration::from_secs(30), "woken by the suspicion, not the timeout");
        suspicion.join().expect("thread");
        assert!(pool.take_suspects(Duration::ZERO).is_empty(), "taken once");
    }

    #[test]
    fn an_unreachable_server_waits_for_the_prober_and_is_tried_only_as_a_last_resort() {
        let spec = UpstreamSpec { servers: vec![remote(1, false), remote(2, true)], routes: Vec::new() };
        let (pool, recorder) = pool(None, spec, 100);
        let now = Instant::now();
        pool.failed(0, Failure::Unreachable, now);
        pool.failed(0, Failure::Unreachable, now);
        assert_eq!(pool.unreachable(), vec![0]);
        assert_eq!(recorder.hosts_lost.load(std::sync::atomic::Ordering::Relaxed), 1, "the loops told once");
        assert_eq!(
            granted(pool.admit(waiter(1), 0, &[], Placement::New, now)).server(),
            1,
            "live traffic goes around it"
        );
        assert_eq!(granted(pool.admit(waiter(2), 0, &[1], Placement::New, now)).server(), 0, "nothing else is left");
        pool.reachable(0);
        assert!(pool.unreachable().is_empty());
        assert!(recorder.take().is_empty());
    }

    #[test]
    fn a_grant_never_sends_a_waiter_back_to_a_server_it_tried() {
        let mut full = remote(1, false);
        full.max_conns = 1;
        let mut refusing = remote(2, false);
        refusing.max_conns = 1;
        refusing.fail_timeout = Duration::ZERO;
        let (pool, recorder) = pool(None, UpstreamSpec { servers: vec![full, refusing], routes: Vec::new() }, 100);
        let now = Instant::now();
        let _on_full = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
        let on_refusing = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
        assert_eq!(on_refusing.server(), 1);
        let _refused_once = queued(pool.admit(waiter(3), 0, &[1], Placement::Again, now));
        let _newcomer = queued(pool.admit(waiter(4), 0, &[], Placement::New, now));
        drop(on_refusing);
        assert_eq!(recorder.take(), vec![(waiter(4), 1)], "the one that tried it lets the next go");
    }

    #[test]
    fn a_full_accept_queue_on_the_last_resort_queues_instead_of_trying_it_again() {
        let spec = UpstreamSpec { servers: vec![remote(1, false)], routes: Vec::new() };
        let (pool, recorder) = pool(None, spec, 100);
        let now = Instant::now();
        pool.failed(0, Failure::Refused, now);
        assert_eq!(pool.stats().servers_out_of_use, 1);
        granted(pool.admit(waiter(1), 0, &[], Placement::New, now)).busy();
        let _place = queued(pool.admit(waiter(1), 0, &[], Placement::AfterBusy(0), now));
        pool.tick(now);
        assert_eq!(recorder.take(), vec![(waiter(1), 0)], "the hold lifted, the last resort again");
    }

    #[test]
    fn waiters_get_a_last_resort_once_their_whole_group_is_out_of_use() {
        let mut first = remote(1, false);
        first.max_conns = 1;
        let mut second = remote(2, false);
        second.max_conns = 1;
        let (pool, recorder) = pool(None, UpstreamSpec { servers: vec![first, second], routes: Vec::new() }, 100);
        let now = Instant::now();
        let on_first = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
        let on_second = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
        let _waiting = queued(pool.admit(waiter(3), 0, &[], Placement::New, now));
        pool.failed(on_second.server(), Failure::Refused, now);
        drop(on_second);
        assert!(recorder.take().is_empty(), "a live server is still there to wait for");
        pool.failed(on_first.server(), Failure::Refused, now);
        assert_eq!(recorder.take(), vec![(waiter(3), 1)], "nothing live is left: the one with room");
    }

    #[test]
    fn a_full_accept_queue_holds_its_server_back_until_a_request_ends() {
        let (pool, recorder) = pool(local(2, 1), UpstreamSpec::default(), 100);
        let now = Instant::now();
        let first = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
        let second = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
        second.busy();
        let requeued = queued(pool.admit(waiter(2), 0, &[], Placement::AfterBusy(0), now));
        let _third = queued(pool.admit(waiter(3), 0, &[], Placement::New, now));
        assert_eq!(pool.stats().local_in_flight, 1, "room is free but held back");
        pool.tick(now);
        assert!(recorder.take().is_empty(), "a release is still coming");
        drop(first);
        assert_eq!(recorder.take(), vec![(waiter(2), 0), (waiter(3), 0)], "the requeued one first");
        drop(requeued);
    }

    #[test]
    fn a_hold_with_nothing_in_flight_is_lifted_by_the_tick() {
        let (pool, recorder) = pool(local(1, 1), UpstreamSpec::default(), 100);
        let now = Instant::now();
        granted(pool.admit(waiter(1), 0, &[], Placement::New, now)).busy();
        let _place = queued(pool.admit(waiter(1), 0, &[], Placement::AfterBusy(0), now));
        pool.tick(now);
        assert_eq!(recorder.take(), vec![(waiter(1), 0)]);
    }

    #[test]
    fn a_request_back_from_busy_workers_waits_for_them_rather_than_a_gone_backup() {
        let spec = UpstreamSpec { servers: vec![remote(8080, true)], routes: Vec::new() };
        let (pool, recorder) = pool(local(1, 2), spec, 100);
        let now = Instant::now();
        pool.failed(1, Failure::Unreachable, now);
        let working = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
        granted(pool.admit(waiter(2), 0, &[], Placement::New, now)).busy();
        let _place = queued(pool.admit(waiter(2), 0, &[], Placement::AfterBusy(0), now));
        drop(working);
        assert_eq!(recorder.take(), vec![(waiter(2), 0)], "the workers, once a request to them ends");
    }

    #[test]
    fn a_dropped_place_leaves_the_queue_and_a_late_one_gives_its_grant_back() {
        let (pool, recorder) = pool(local(1, 1), UpstreamSpec::default(), 100);
        let now = Instant::now();
        let held = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
        let second = queued(pool.admit(waiter(2), 0, &[], Placement::New, now));
        let third = queued(pool.admit(waiter(3), 0, &[], Placement::New, now));
        drop(second);
        drop(held);
        let rooms = recorder.take_rooms();
        let seen: Vec<_> = rooms.iter().map(|(waiter, room)| (*waiter, room.server())).collect();
        assert_eq!(seen, vec![(waiter(3), 0)], "the departed one's turn skipped");
        drop(third);
        assert_eq!(pool.stats().local_in_flight, 1, "counted until the grant is handled");
        drop(rooms);
        assert_eq!(pool.stats().local_in_flight, 0, "a grant no one takes is given back");
    }

    #[test]
    fn room_taken_before_its_host_was_found_gone_knows_it_and_a_last_resort_after_does_not() {
        let mut only = remote(1, false);
        only.max_conns = 1;
        let (pool, recorder) = pool(None, UpstreamSpec { servers: vec![only], routes: Vec::new() }, 100);
        let now = Instant::now();
        let before = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
        let _waiting = queued(pool.admit(waiter(2), 0, &[], Placement::New, now));
        // As a timed-out connect does: the room goes back (and on to the
        // waiter) just before the host is marked gone.
        drop(before);
        pool.failed(0, Failure::Unreachable, now);
        let rooms = recorder.take_rooms();
        assert_eq!(rooms.len(), 1);
        assert!(rooms[0].1.host_lost(), "granted before the news: it leaves the host");
        drop(rooms);
        let last_resort = granted(pool.admit(waiter(3), 0, &[], Placement::New, now));
        assert!(!last_resort.host_lost(), "sent there knowing: it waits it out");
        pool.reachable(0);
        assert!(!last_resort.host_lost());
    }

    #[test]
    fn the_queue_has_a_cap_and_zero_workers_hold_everyone_until_some_come() {
        let (pool, recorder) = pool(local(0, 2), UpstreamSpec::default(), 2);
        let now = Instant::now();
        let _places: Vec<_> =
            (1..3).map(|slot| queued(pool.admit(waiter(slot), 0, &[], Placement::New, now))).collect();
        assert!(matches!(pool.admit(waiter(3), 0, &[], Placement::New, now), Admission::Full));
        pool.set_worker_count(1);
        assert_eq!(recorder.take(), vec![(waiter(1), 0), (waiter(2), 0)], "one worker, two in flight");
        assert_eq!(pool.stats().local_limit, 2);
    }

    #[test]
    fn hosts_go_to_their_routes_and_others_to_the_default_group_if_any() {
        let admin =
            HostRoute { pattern: HostPattern::parse("admin.example.com").unwrap(), servers: vec![remote(9, false)] };
        let spec = UpstreamSpec { servers: vec![remote(1, false)], routes: vec![admin.clone()] };
        let (pool, _recorder) = pool(None, spec, 100);
        assert_eq!(pool.group_for(Some(b"ADMIN.example.com:443")), Some(1));
        assert_eq!(pool.group_for(Some(b"www.example.com")), Some(0));
        assert_eq!(pool.group_for(None), Some(0));
        let now = Instant::now();
        let routed = granted(pool.admit(waiter(1), 1, &[], Placement::New, now));
        assert_eq!(pool.server(routed.server()).address, admin.servers[0].address);

        let (only_routes, _recorder) = self::pool(None, UpstreamSpec { servers: Vec::new(), routes: vec![admin] }, 100);
        assert_eq!(only_routes.group_for(Some(b"other.example.com")), None, "no default: 421");
    }

    #[test]
    fn groups_queue_apart_so_one_busy_group_does_not_block_another() {
        let mut busy = remote(1, false);
        busy.max_conns = 1;
        let other = HostRoute { pattern: HostPattern::parse("other.test").unwrap(), servers: vec![remote(2, false)] };
        let (pool, _recorder) = pool(None, UpstreamSpec { servers: vec![busy], routes: vec![other] }, 100);
        let now = Instant::now();
        let _held = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
        let _waiting = queued(pool.admit(waiter(2), 0, &[], Placement::New, now));
        assert_eq!(granted(pool.admit(waiter(3), 1, &[], Placement::New, now)).server(), 1, "the other group goes on");
    }
}
