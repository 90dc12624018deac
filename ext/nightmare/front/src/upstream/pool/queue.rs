//! The one queue where requests wait, first come first served within a
//! group, and the room that comes back to it: a request ends, a server is
//! back in use, a waiter leaves.

use std::sync::Arc;
use std::time::Instant;

use super::choice::Pick;
use super::{GroupId, InFlight, Pool, ServerId, State};
use crate::connection_id::ConnectionId;

/// A request waiting for room, and the servers it already tried.
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) id: ConnectionId,
    pub(super) group: GroupId,
    pub(super) tried: Vec<ServerId>,
}

impl Pool {
    pub(super) fn cancel(&self, waiter: ConnectionId) {
        let mut state = self.lock();
        if let Some(index) = state.queue.iter().position(|queued| queued.id == waiter) {
            state.queue.remove(index);
        }
    }

    /// Room in flight given back; `hold_back` when the server's accept
    /// queue was found full, so no one gets it until a request to it ends.
    pub(super) fn release(self: &Arc<Self>, server: ServerId, hold_back: bool) {
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
    pub(super) fn deliver(&self, granted: Vec<(ConnectionId, InFlight)>) {
        granted.into_iter().for_each(|(waiter, room)| self.sink.deliver(waiter, room));
    }

    /// Grants room to waiters, in order, while a server they may use has
    /// some. A waiter that cannot go holds back no one: what a later one
    /// takes is room it could not use now (a server it tried, or one out
    /// of use while it still has one in use to wait for).
    pub(super) fn grant_free(self: &Arc<Self>, state: &mut State, now: Instant) -> Vec<(ConnectionId, InFlight)> {
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
}
