//! Which server takes a request (the rules in the module's head): the
//! least loaded of its group that it has not tried, primaries before
//! backups, and a last resort when nothing in use is left.

use std::sync::Arc;
use std::time::Instant;

use super::{GroupId, InFlight, Pool, ServerId, State};

/// Where a request may go now.
pub(super) enum Pick {
    Server(ServerId),
    /// A server it may use will have room when a request ends.
    Wait,
    /// It tried every server of its group.
    Exhausted,
}

impl Pool {
    pub(super) fn pick(
        &self,
        state: &State,
        group: GroupId,
        tried: &[ServerId],
        avoided: Option<ServerId>,
        now: Instant,
    ) -> Pick {
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

    pub(super) fn take(self: &Arc<Self>, state: &mut State, server: ServerId) -> InFlight {
        let slot = &mut state.servers[server];
        slot.in_flight += 1;
        slot.requests += 1;
        InFlight { pool: Arc::clone(self), server, hold_back: false, times_lost: slot.times_lost }
    }
}
