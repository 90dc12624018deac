//! How one loop thread hands work to another: each loop has a mailbox
//! (room on a server granted to its queued requests, a turn among its
//! address's requests, and news that a temp file write finished), and a
//! connection is addressed by its `ConnectionId`.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mio::Waker;

pub use crate::connection_id::ConnectionId;
use crate::request_share::{ShareSink, ShareSlot};
use crate::upstream::pool::{GrantSink, InFlight};

thread_local! {
    /// The mailbox whose loop runs on this thread, by address: a grant
    /// posted there from its own thread is picked up before the loop next
    /// polls, so it needs no wakeup (an eventfd write and a context switch).
    static OWN_MAILBOX: Cell<*const Mailbox> = const { Cell::new(std::ptr::null()) };
}

/// The loop takes each list whole, every turn: only the entry that makes a
/// list non-empty needs to wake it, later ones are taken with it.
#[derive(Default)]
struct Grants {
    rooms: Vec<(ConnectionId, InFlight)>,
    /// Turns of requests that waited for their address's earlier ones.
    shares: Vec<(ConnectionId, ShareSlot)>,
    /// Set when the loop has ended: no one would take a room posted now.
    closed: bool,
}

pub struct Mailbox {
    /// Room on a server for a queued request; dropped undelivered (its
    /// connection gone, or its loop ended), it goes back to the pool.
    grants: Mutex<Grants>,
    /// Connections whose spool writer finished a write.
    written: Mutex<Vec<ConnectionId>>,
    /// A host was found gone: the loop should look at its exchanges now.
    host_lost: AtomicBool,
    waker: Waker,
}

impl Mailbox {
    pub fn new(waker: Waker) -> Self {
        Mailbox { grants: Mutex::default(), written: Mutex::new(Vec::new()), host_lost: AtomicBool::new(false), waker }
    }

    /// Called by the loop thread that drains this mailbox.
    pub fn claim_for_this_thread(&self) {
        OWN_MAILBOX.with(|own| own.set(self));
    }

    fn is_drained_by_this_thread(&self) -> bool {
        OWN_MAILBOX.with(|own| std::ptr::eq(own.get(), self))
    }

    pub fn take_grants(&self) -> Vec<(ConnectionId, InFlight)> {
        std::mem::take(&mut self.lock_grants().rooms)
    }

    pub fn take_shares(&self) -> Vec<(ConnectionId, ShareSlot)> {
        std::mem::take(&mut self.lock_grants().shares)
    }

    /// Called by the loop as it ends: the rooms granted to it and any
    /// granted later go back to the pool, for the loops still running.
    pub fn close(&self) {
        let undelivered = {
            let mut grants = self.lock_grants();
            grants.closed = true;
            (std::mem::take(&mut grants.rooms), std::mem::take(&mut grants.shares))
        };
        drop(undelivered);
    }

    fn lock_grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a host was found gone since the last look.
    pub fn take_host_lost(&self) -> bool {
        // Looked at every loop turn: a plain load keeps the line shared
        // while there is no news.
        self.host_lost.load(Ordering::Acquire) && self.host_lost.swap(false, Ordering::AcqRel)
    }

    pub fn take_written(&self) -> Vec<ConnectionId> {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn wake(&self) {
        // A failed wake (eventfd full) still leaves the loop with a pending
        // wakeup, so there is nothing to do about it.
        let _ = self.waker.wake();
    }

    fn post_grant(&self, id: ConnectionId, room: InFlight) {
        let mut grants = self.lock_grants();
        if grants.closed {
            // Released once the lock is let go: the release may grant again.
            drop(grants);
            drop(room);
            return;
        }
        let was_empty = grants.rooms.is_empty();
        grants.rooms.push((id, room));
        drop(grants);
        if was_empty && !self.is_drained_by_this_thread() {
            self.wake();
        }
    }

    fn post_share(&self, id: ConnectionId, slot: ShareSlot) {
        let mut grants = self.lock_grants();
        if grants.closed {
            // Passed on once the lock is let go: passing on may post again.
            drop(grants);
            drop(slot);
            return;
        }
        let was_empty = grants.shares.is_empty();
        grants.shares.push((id, slot));
        drop(grants);
        if was_empty && !self.is_drained_by_this_thread() {
            self.wake();
        }
    }

    fn post_written(&self, id: ConnectionId) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = written.is_empty();
        if written.last() != Some(&id) {
            written.push(id);
        }
        drop(written);
        if was_empty {
            self.wake();
        }
    }
}

/// Every loop's mailbox, by loop index.
pub struct Mailboxes(pub Vec<Mailbox>);

impl Mailboxes {
    /// Room on a server for a queued request of `id`'s loop.
    pub fn post_grant(&self, id: ConnectionId, room: InFlight) {
        if let Some(mailbox) = self.0.get(id.loop_index) {
            mailbox.post_grant(id, room);
        }
    }

    /// A temp file write for `id` finished: it may send more.
    pub fn post_written(&self, id: ConnectionId) {
        if let Some(mailbox) = self.0.get(id.loop_index) {
            mailbox.post_written(id);
        }
    }

    pub fn wake_all(&self) {
        self.0.iter().for_each(Mailbox::wake);
    }
}

impl ShareSink for Arc<Mailboxes> {
    fn deliver(&self, waiter: ConnectionId, slot: ShareSlot) {
        if let Some(mailbox) = self.0.get(waiter.loop_index) {
            mailbox.post_share(waiter, slot);
        }
    }
}

impl GrantSink for Arc<Mailboxes> {
    fn deliver(&self, waiter: ConnectionId, room: InFlight) {
        self.post_grant(waiter, room);
    }

    fn host_lost(&self) {
        for mailbox in &self.0 {
            mailbox.host_lost.store(true, Ordering::Release);
            mailbox.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::pool::{Admission, LocalWorkers, Placement, Pool};
    use crate::upstream::spec::UpstreamSpec;
    use mio::{Events, Poll, Token};
    use std::time::{Duration, Instant};

    fn woken(poll: &mut Poll) -> bool {
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).expect("poll");
        !events.is_empty()
    }

    /// Room on the local workers, as the pool grants it.
    fn room(pool: &Arc<Pool>, id: ConnectionId) -> InFlight {
        match pool.admit(id, 0, &[], Placement::New, Instant::now()) {
            Admission::Granted(room) => room,
            _ => panic!("the workers have room"),
        }
    }

    fn servers(grants: Vec<(ConnectionId, InFlight)>) -> Vec<(ConnectionId, usize)> {
        grants.into_iter().map(|(id, room)| (id, room.server())).collect()
    }

    #[test]
    fn a_grant_from_the_loops_own_thread_skips_the_wakeup_and_others_wake_it() {
        let mut poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(0)).expect("waker");
        let mailboxes = Arc::new(Mailboxes(vec![Mailbox::new(waker)]));
        let workers = LocalWorkers { socket: "/tmp/w.sock".into(), secret: [1; 16], workers: 4, per_worker: 1 };
        let pool = Pool::new(Some(workers), &UpstreamSpec::default(), 10, Box::new(Arc::clone(&mailboxes)));
        let id = |slot| ConnectionId { loop_index: 0, slot, serial: 1 };

        mailboxes.0[0].claim_for_this_thread();
        mailboxes.post_grant(id(1), room(&pool, id(1)));
        assert!(!woken(&mut poll), "the loop's own grant must not wake it");
        assert_eq!(servers(mailboxes.0[0].take_grants()), vec![(id(1), 0)], "the loop drains it before polling");

        let from_elsewhere = Arc::clone(&mailboxes);
        let granted = room(&pool, id(2));
        std::thread::spawn(move || from_elsewhere.post_grant(id(2), granted)).join().expect("thread");
        assert!(woken(&mut poll), "another thread's grant must wake the loop");
        assert_eq!(servers(mailboxes.0[0].take_grants()), vec![(id(2), 0)]);
        assert_eq!(pool.stats().local_in_flight, 0, "grants dropped undelivered give their room back");
    }

    #[test]
    fn an_ended_loop_gives_back_the_rooms_it_held_and_any_granted_later() {
        let poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(0)).expect("waker");
        let mailboxes = Arc::new(Mailboxes(vec![Mailbox::new(waker)]));
        let workers = LocalWorkers { socket: "/tmp/w.sock".into(), secret: [1; 16], workers: 4, per_worker: 1 };
        let pool = Pool::new(Some(workers), &UpstreamSpec::default(), 10, Box::new(Arc::clone(&mailboxes)));
        let id = |slot| ConnectionId { loop_index: 0, slot, serial: 1 };

        mailboxes.post_grant(id(1), room(&pool, id(1)));
        assert_eq!(pool.stats().local_in_flight, 1, "a posted grant holds its room");
        mailboxes.0[0].close();
        assert_eq!(pool.stats().local_in_flight, 0, "closing gives it back");
        mailboxes.post_grant(id(2), room(&pool, id(2)));
        assert_eq!(pool.stats().local_in_flight, 0, "a grant to an ended loop is given back at once");
        assert!(mailboxes.0[0].take_grants().is_empty());
    }

    #[test]
    fn written_news_for_one_connection_is_posted_once_in_a_row() {
        let poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(0)).expect("waker");
        let mailboxes = Mailboxes(vec![Mailbox::new(waker)]);
        let id = |slot| ConnectionId { loop_index: 0, slot, serial: 1 };
        for slot in [1, 1, 2, 1] {
            mailboxes.post_written(id(slot));
        }
        assert_eq!(mailboxes.0[0].take_written(), vec![id(1), id(2), id(1)]);
    }
}
