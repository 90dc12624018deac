//! What a request holds: room in flight on one server (`InFlight`) or a
//! place in the queue (`QueuePlace`), each given back when dropped, so no
//! path through a connection's life can leak one.

use std::sync::Arc;

use super::{Pool, ServerId};
use crate::connection_id::ConnectionId;
use crate::upstream::address::UpstreamAddress;

/// Room for one request in flight to one server.
pub struct InFlight {
    pub(super) pool: Arc<Pool>,
    pub(super) server: ServerId,
    pub(super) hold_back: bool,
    /// The server's `times_lost` when the room was taken.
    pub(super) times_lost: u64,
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
    pub(super) pool: Arc<Pool>,
    pub(super) waiter: Option<ConnectionId>,
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
