//! How one loop thread hands work to another: each loop has a mailbox
//! (grants of room with the workers for its queued requests, and news that
//! a temp file write finished), and a connection is addressed by its
//! `ConnectionId`.

use std::cell::Cell;
use std::sync::Mutex;

use mio::Waker;

/// Where a connection lives: its loop, its slab slot, and a serial that
/// tells it apart from a later connection reusing the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionId {
    pub loop_index: usize,
    pub slot: usize,
    pub serial: u64,
}

thread_local! {
    /// The mailbox whose loop runs on this thread, by address: a grant
    /// posted there from its own thread is picked up before the loop next
    /// polls, so it needs no wakeup (an eventfd write and a context switch).
    static OWN_MAILBOX: Cell<*const Mailbox> = const { Cell::new(std::ptr::null()) };
}

/// The loop takes each list whole, every turn: only the entry that makes a
/// list non-empty needs to wake it, later ones are taken with it.
pub struct Mailbox {
    /// Room on a server (by id) for a queued request.
    grants: Mutex<Vec<(ConnectionId, usize)>>,
    /// Connections whose spool writer finished a write.
    written: Mutex<Vec<ConnectionId>>,
    waker: Waker,
}

impl Mailbox {
    pub fn new(waker: Waker) -> Self {
        Mailbox { grants: Mutex::new(Vec::new()), written: Mutex::new(Vec::new()), waker }
    }

    /// Called by the loop thread that drains this mailbox.
    pub fn claim_for_this_thread(&self) {
        OWN_MAILBOX.with(|own| own.set(self));
    }

    fn is_drained_by_this_thread(&self) -> bool {
        OWN_MAILBOX.with(|own| std::ptr::eq(own.get(), self))
    }

    pub fn take_grants(&self) -> Vec<(ConnectionId, usize)> {
        std::mem::take(&mut *self.grants.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn take_written(&self) -> Vec<ConnectionId> {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn wake(&self) {
        // A failed wake (eventfd full) still leaves the loop with a pending
        // wakeup, so there is nothing to do about it.
        let _ = self.waker.wake();
    }

    fn post_grant(&self, id: ConnectionId, server: usize) {
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = grants.is_empty();
        grants.push((id, server));
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
    /// Room on `server` for a queued request of `id`'s loop.
    pub fn post_grant(&self, id: ConnectionId, server: usize) {
        if let Some(mailbox) = self.0.get(id.loop_index) {
            mailbox.post_grant(id, server);
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

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::sync::Arc;
    use std::time::Duration;

    fn woken(poll: &mut Poll) -> bool {
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).expect("poll");
        !events.is_empty()
    }

    #[test]
    fn a_grant_from_the_loops_own_thread_skips_the_wakeup_and_others_wake_it() {
        let mut poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(0)).expect("waker");
        let mailboxes = Arc::new(Mailboxes(vec![Mailbox::new(waker)]));
        let id = |slot| ConnectionId { loop_index: 0, slot, serial: 1 };

        mailboxes.0[0].claim_for_this_thread();
        mailboxes.post_grant(id(1), 0);
        assert!(!woken(&mut poll), "the loop's own grant must not wake it");
        assert_eq!(mailboxes.0[0].take_grants(), vec![(id(1), 0)], "the loop drains it before polling");

        let from_elsewhere = Arc::clone(&mailboxes);
        std::thread::spawn(move || from_elsewhere.post_grant(id(2), 3)).join().expect("thread");
        assert!(woken(&mut poll), "another thread's grant must wake the loop");
        assert_eq!(mailboxes.0[0].take_grants(), vec![(id(2), 3)]);
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
