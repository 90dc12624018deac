//! A fair share of the workers per client address (`requests_per_address`).
//!
//! A Unicorn has a few workers and the front's queue is first come, first
//! served: one address that sends two thousand requests at once (slow
//! readers of a large response, each costing a worker its output) put a
//! fresh client behind all of them, 27.7 s in one measured run. So each
//! address may have at most so many requests with the upstreams at once,
//! in flight or in the front's queue; its next ones wait in a line of
//! their own, and enter as its earlier ones end. A client with many
//! requests waits behind its own, not in front of other clients'.
//!
//! Addresses are counted as `max_connections_per_address` counts them (an
//! IPv4 address or an IPv6 /64; by default public ones only, since load
//! balancers and NAT put many clients behind one private address). An
//! HTTP/2 connection from an address that is not counted has a share of
//! its own: one connection can open a hundred streams.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::connection_id::ConnectionId;
use crate::connection_permit::AddressKey;
use crate::net::client_address::ClientAddress;

/// Where a slot freed by one request goes: the next waiting connection of
/// the same address, on its own loop (dropped undelivered, it passes on).
pub trait ShareSink: Send + Sync {
    fn deliver(&self, waiter: ConnectionId, slot: ShareSlot);
}

pub struct RequestShares {
    /// Requests one address may have with the upstreams; 0: no limit.
    limit: AtomicUsize,
    /// The limit follows the worker count (`"auto"`).
    follows_workers: bool,
    counts_private: bool,
    lines: Mutex<HashMap<ShareKey, Line>>,
    /// Requests waiting in all lines, and how many may (max_queued_requests:
    /// a waiting request holds its body, as a queued one does).
    waiting: AtomicUsize,
    max_waiting: usize,
    next_ticket: AtomicU64,
    /// Requests that had to wait for their address's earlier ones.
    waited: AtomicU64,
    sink: Box<dyn ShareSink>,
}

/// Whose share a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ShareKey {
    Address(AddressKey),
    /// An HTTP/2 connection, by a number no other connection has.
    Connection(u64),
}

#[derive(Default)]
struct Line {
    admitted: usize,
    waiting: VecDeque<(ConnectionId, u64)>,
}

/// What a request gets when it asks to go to the upstreams.
pub enum ShareAdmission {
    /// Its address has no share to count (see the module's note).
    Uncounted,
    Admitted(ShareSlot),
    /// Its address has its share out: the ticket holds its place in line,
    /// and a slot will be delivered.
    Wait(ShareTicket),
    /// So many requests wait in the lines already (max_queued_requests).
    Full,
}

impl RequestShares {
    /// `limit` requests per address (`None`: as many as `workers`, at least
    /// two, for public addresses only; 0: no limit); at most `max_waiting`
    /// requests wait in the lines.
    pub fn new(
        limit: Option<usize>,
        workers: usize,
        max_waiting: usize,
        sink: Box<dyn ShareSink>,
    ) -> Arc<RequestShares> {
        Arc::new(RequestShares {
            limit: AtomicUsize::new(limit.unwrap_or(workers.max(2))),
            follows_workers: limit.is_none(),
            counts_private: limit.is_some(),
            lines: Mutex::default(),
            waiting: AtomicUsize::new(0),
            max_waiting,
            next_ticket: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            sink,
        })
    }

    /// The master runs `workers` now: an automatic share follows, at once
    /// for addresses that have requests waiting (a smaller one as their
    /// requests end).
    pub fn set_worker_count(self: &Arc<Self>, workers: usize) {
        if !self.follows_workers {
            return;
        }
        let limit = workers.max(2);
        self.limit.store(limit, Ordering::Relaxed);
        let mut turns = Vec::new();
        {
            let mut lines = self.lock();
            for (key, line) in lines.iter_mut() {
                while line.admitted < limit
                    && let Some((waiter, _)) = line.waiting.pop_front()
                {
                    line.admitted += 1;
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    turns.push((waiter, *key));
                }
            }
        }
        for (waiter, key) in turns {
            self.sink.deliver(waiter, ShareSlot { shares: Arc::clone(self), key });
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Requests that waited behind their own address's.
    pub fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }

    /// Requests waiting in the addresses' lines now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A request of connection `id` from `peer` asks to go to the upstreams.
    pub fn admit(self: &Arc<Self>, peer: &ClientAddress, id: ConnectionId) -> ShareAdmission {
        self.admit_stream(peer, id, None)
    }

    /// The same for a stream of HTTP/2 connection `connection` (a number
    /// no other connection has): its address's share if that is counted,
    /// else the connection's own.
    pub fn admit_stream(
        self: &Arc<Self>,
        peer: &ClientAddress,
        id: ConnectionId,
        connection: Option<u64>,
    ) -> ShareAdmission {
        let limit = self.limit();
        let address = AddressKey::of(peer, self.counts_private).map(ShareKey::Address);
        let Some(key) = address.or(connection.map(ShareKey::Connection)).filter(|_| limit > 0) else {
            return ShareAdmission::Uncounted;
        };
        let mut lines = self.lock();
        let line = lines.entry(key).or_default();
        if line.admitted < limit && line.waiting.is_empty() {
            line.admitted += 1;
            return ShareAdmission::Admitted(ShareSlot { shares: Arc::clone(self), key });
        }
        if self.waiting.load(Ordering::Relaxed) >= self.max_waiting {
            if line.admitted == 0 && line.waiting.is_empty() {
                lines.remove(&key);
            }
            return ShareAdmission::Full;
        }
        let number = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        line.waiting.push_back((id, number));
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.waited.fetch_add(1, Ordering::Relaxed);
        ShareAdmission::Wait(ShareTicket { shares: Arc::clone(self), key, number })
    }

    /// A slot of `key` is free: to the next in its line, or given back.
    fn pass_on(self: &Arc<Self>, key: ShareKey) {
        let next = {
            let mut lines = self.lock();
            let Some(line) = lines.get_mut(&key) else { return };
            // Past a smaller share (fewer workers now), a slot is not handed on.
            let handed_on = if line.admitted > self.limit() { None } else { line.waiting.pop_front() };
            match handed_on {
                Some((waiter, _)) => {
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    Some(waiter)
                }
                None => {
                    line.admitted -= 1;
                    if line.admitted == 0 {
                        lines.remove(&key);
                    }
                    None
                }
            }
        };
        // Outside the lock: a slot that cannot be delivered is dropped, and
        // passes on again.
        if let Some(waiter) = next {
            self.sink.deliver(waiter, ShareSlot { shares: Arc::clone(self), key });
        }
    }

    fn leave_line(&self, key: ShareKey, number: u64) {
        let mut lines = self.lock();
        if let Some(line) = lines.get_mut(&key) {
            let before = line.waiting.len();
            line.waiting.retain(|&(_, ticket)| ticket != number);
            self.waiting.fetch_sub(before - line.waiting.len(), Ordering::Relaxed);
            if line.admitted == 0 && line.waiting.is_empty() {
                lines.remove(&key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShareKey, Line>> {
        self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One of an address's requests with the upstreams; when dropped (its
/// worker is done with it, or its client left), the next of that address
/// may go.
pub struct ShareSlot {
    shares: Arc<RequestShares>,
    key: ShareKey,
}

impl std::fmt::Debug for ShareSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShareSlot({:?})", self.key)
    }
}

impl Drop for ShareSlot {
    fn drop(&mut self) {
        self.shares.pass_on(self.key);
    }
}

/// A place in an address's line; dropped before its turn (the client left,
/// or waited too long), it leaves the line.
pub struct ShareTicket {
    shares: Arc<RequestShares>,
    key: ShareKey,
    number: u64,
}

impl std::fmt::Debug for ShareTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShareTicket({:?}, {})", self.key, self.number)
    }
}

impl Drop for ShareTicket {
    fn drop(&mut self) {
        self.shares.leave_line(self.key, self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Channel(Mutex<mpsc::Sender<(ConnectionId, ShareSlot)>>);

    impl ShareSink for Channel {
        fn deliver(&self, waiter: ConnectionId, slot: ShareSlot) {
            let _ = self.0.lock().unwrap().send((waiter, slot));
        }
    }

    fn shares(limit: Option<usize>) -> (Arc<RequestShares>, mpsc::Receiver<(ConnectionId, ShareSlot)>) {
        let (tell, heard) = mpsc::channel();
        (RequestShares::new(limit, 2, 100, Box::new(Channel(Mutex::new(tell)))), heard)
    }

    fn id(slot: usize) -> ConnectionId {
        ConnectionId { loop_index: 0, slot, serial: slot as u64 }
    }

    fn peer(text: &str) -> ClientAddress {
        ClientAddress::Ip(text.parse().unwrap())
    }

    #[test]
    fn an_http2_connection_from_an_uncounted_address_has_a_share_of_its_own() {
        let (shares, _heard) = shares(Some(2));
        let local = peer("127.0.0.1:5000");
        let streams: Vec<_> = (1..=3).map(|n| shares.admit_stream(&local, id(n), Some(7))).collect();
        assert!(matches!(
            streams[..],
            [ShareAdmission::Admitted(_), ShareAdmission::Admitted(_), ShareAdmission::Wait(_)]
        ));
        assert!(
            matches!(shares.admit_stream(&local, id(4), Some(8)), ShareAdmission::Admitted(_)),
            "another connection"
        );
        assert!(matches!(shares.admit(&local, id(5)), ShareAdmission::Uncounted), "HTTP/1.1 from 127.0.0.1");
        let public = peer("198.51.100.7:1");
        let _two: Vec<_> = (6..=7).map(|n| shares.admit_stream(&public, id(n), Some(9))).collect();
        let across = shares.admit_stream(&public, id(8), Some(10));
        assert!(matches!(across, ShareAdmission::Wait(_)), "a counted address's share spans its connections");
    }

    #[test]
    fn an_address_past_its_share_waits_behind_its_own_and_others_pass() {
        let (shares, heard) = shares(Some(2));
        let busy = peer("198.51.100.7:1000");
        let first = shares.admit(&busy, id(1));
        let second = shares.admit(&busy, id(2));
        assert!(matches!(first, ShareAdmission::Admitted(_)) && matches!(second, ShareAdmission::Admitted(_)));
        let ShareAdmission::Wait(third) = shares.admit(&busy, id(3)) else { panic!("the third waits") };
        let ShareAdmission::Wait(_fourth) = shares.admit(&busy, id(4)) else { panic!("the fourth waits") };
        assert!(matches!(shares.admit(&peer("203.0.113.9:1"), id(5)), ShareAdmission::Admitted(_)), "another address");
        assert_eq!(shares.waiting(), 2);

        drop(first);
        let (next, slot) = heard.try_recv().expect("the next in line gets the slot");
        assert_eq!(next, id(3));
        drop(third);
        drop(slot);
        assert_eq!(heard.try_recv().expect("then the fourth").0, id(4));
        assert_eq!(shares.waited(), 2);
    }

    #[test]
    fn one_that_leaves_its_line_is_skipped_and_the_last_slot_clears_the_address() {
        let (shares, heard) = shares(Some(1));
        let busy = peer("198.51.100.7:1000");
        let ShareAdmission::Admitted(only) = shares.admit(&busy, id(1)) else { panic!("admitted") };
        let ShareAdmission::Wait(gone) = shares.admit(&busy, id(2)) else { panic!("waits") };
        drop(gone);
        drop(only);
        assert!(heard.try_recv().is_err(), "nobody waits any more");
        assert!(shares.lock().is_empty());
        assert!(matches!(shares.admit(&busy, id(3)), ShareAdmission::Admitted(_)));
    }

    #[test]
    fn local_and_by_default_private_addresses_are_not_counted() {
        let (automatic, _) = shares(None);
        assert_eq!(automatic.limit(), 2, "as many as the workers, at least two");
        for address in ["127.0.0.1:1", "10.0.0.1:1", "192.168.1.1:1"] {
            for _ in 0..5 {
                assert!(matches!(automatic.admit(&peer(address), id(1)), ShareAdmission::Uncounted), "{address}");
            }
        }
        automatic.set_worker_count(6);
        assert_eq!(automatic.limit(), 6);
        let (numbered, _) = shares(Some(1));
        assert!(
            matches!(numbered.admit(&peer("10.0.0.1:1"), id(1)), ShareAdmission::Admitted(_)),
            "a number counts private ones"
        );
        assert!(
            matches!(numbered.admit(&peer("127.0.0.1:1"), id(2)), ShareAdmission::Uncounted),
            "but never 127.0.0.1"
        );
        let (unlimited, _) = shares(Some(0));
        assert!(matches!(unlimited.admit(&peer("198.51.100.7:1"), id(1)), ShareAdmission::Uncounted));
    }

    #[test]
    fn more_workers_let_waiting_requests_in_at_once_and_fewer_as_requests_end() {
        let (shares, heard) = shares(None);
        let busy = peer("198.51.100.7:1000");
        let admitted: Vec<_> = (1..=2).map(|n| shares.admit(&busy, id(n))).collect();
        let _waiting: Vec<_> = (3..=5).map(|n| shares.admit(&busy, id(n))).collect();
        assert_eq!(shares.waiting(), 3);
        shares.set_worker_count(4);
        let let_in: Vec<_> = heard.try_iter().collect();
        assert_eq!(let_in.iter().map(|(waiter, _)| *waiter).collect::<Vec<_>>(), vec![id(3), id(4)]);
        assert_eq!(shares.waiting(), 1);
        shares.set_worker_count(2);
        drop(admitted);
        assert!(heard.try_recv().is_err(), "four out, the share two: the fifth waits until two end");
        drop(let_in);
        assert_eq!(heard.try_recv().expect("its turn").0, id(5));
    }

    #[test]
    fn the_lines_hold_no_more_than_max_queued_requests() {
        let (tell, _heard) = mpsc::channel();
        let shares = RequestShares::new(Some(1), 2, 2, Box::new(Channel(Mutex::new(tell))));
        let busy = peer("198.51.100.7:1000");
        let _first = shares.admit(&busy, id(1));
        let _second = shares.admit(&busy, id(2));
        let third = shares.admit(&busy, id(3));
        assert!(matches!(shares.admit(&busy, id(4)), ShareAdmission::Full));
        assert!(matches!(shares.admit(&peer("203.0.113.1:1"), id(5)), ShareAdmission::Admitted(_)), "others pass");
        drop(third);
        assert_eq!(shares.waiting(), 1, "leaving the line makes room");
    }

    #[test]
    fn a_slot_its_waiter_cannot_take_passes_on() {
        struct Refusing(Mutex<Vec<ConnectionId>>);
        impl ShareSink for Refusing {
            fn deliver(&self, waiter: ConnectionId, slot: ShareSlot) {
                self.0.lock().unwrap().push(waiter);
                if waiter == id(2) {
                    drop(slot); // its connection is gone
                } else {
                    std::mem::forget(slot);
                }
            }
        }
        let sink = Arc::new(Refusing(Mutex::new(Vec::new())));
        struct Shared(Arc<Refusing>);
        impl ShareSink for Shared {
            fn deliver(&self, waiter: ConnectionId, slot: ShareSlot) {
                self.0.deliver(waiter, slot);
            }
        }
        let shares = RequestShares::new(Some(1), 2, 100, Box::new(Shared(Arc::clone(&sink))));
        let busy = peer("198.51.100.7:1000");
        let ShareAdmission::Admitted(first) = shares.admit(&busy, id(1)) else { panic!() };
        let ShareAdmission::Wait(_second) = shares.admit(&busy, id(2)) else { panic!() };
        let ShareAdmission::Wait(_third) = shares.admit(&busy, id(3)) else { panic!() };
        drop(first);
        assert_eq!(*sink.0.lock().unwrap(), vec![id(2), id(3)]);
    }
}
