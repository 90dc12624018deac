//! Whether a server is in use: failures counted against max_fails and
//! rested for fail_timeout, hosts found unreachable and given back by the
//! prober, and suspicion when a request waits long for its answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Pool, ServerId, State};
use crate::upstream::address::UpstreamAddress;

#[derive(Debug)]
pub(super) struct ServerState {
    pub(super) in_flight: usize,
    /// Requests in flight at most.
    pub(super) limit: usize,
    /// From this many in flight it counts as busy (step 1 above).
    pub(super) busy_at: usize,
    /// Its accept queue was found full: no more until a request ends.
    pub(super) held_back: bool,
    pub(super) fails: u32,
    pub(super) first_fail: Option<Instant>,
    pub(super) down_until: Option<Instant>,
    /// Since a connect timed out: out of use until the prober reaches it.
    pub(super) unreachable: Option<Instant>,
    /// How many times it was found unreachable: room taken before the
    /// latest time is on a host that went away under it.
    pub(super) times_lost: u64,
    /// A request to it has waited long for an answer: the prober checks
    /// that its host is still there.
    pub(super) suspect: bool,
    pub(super) requests: u64,
}

impl ServerState {
    pub(super) fn new(limit: usize, busy_at: usize) -> Self {
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

    pub(super) fn in_use(&self, now: Instant) -> bool {
        self.unreachable.is_none() && self.down_until.is_none_or(|until| now >= until)
    }

    pub(super) fn has_room(&self) -> bool {
        !self.held_back && self.in_flight < self.limit
    }
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

impl Pool {
    /// Servers whose fail_timeout has ended are back in use; true if any.
    pub(super) fn end_rests(&self, state: &mut State, now: Instant) -> bool {
        let mut ended = false;
        for slot in &mut state.servers {
            if slot.down_until.is_some_and(|until| now >= until) {
                slot.down_until = None;
                ended = true;
            }
        }
        ended
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
}
