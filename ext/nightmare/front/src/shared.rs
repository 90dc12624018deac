//! What every loop thread of one front shares: settings, the dispatcher, the
//! workers' private listener, the log, and a mailbox per loop for work
//! another thread hands it (a worker slot granted to one of its queued
//! connections).

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mio::Waker;

use crate::config::FrontConfig;
use crate::dispatch::{DispatchLimits, Dispatcher, GrantSink, Waiter};
use crate::log::{Log, Throttle};
use crate::proxy_header::ClientAddress;
use crate::spool_writer::WrittenSink;
use crate::static_files::StaticFiles;
use crate::temp_budget::TempBudget;
use crate::upstream::WorkerListener;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    Running,
    /// Stop accepting, finish what was accepted (up to shutdown_timeout).
    Graceful,
    /// Close everything now.
    Immediate,
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
    grants: Mutex<Vec<Waiter>>,
    /// Connections whose spool writer finished a write.
    written: Mutex<Vec<Waiter>>,
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

    pub fn take_grants(&self) -> Vec<Waiter> {
        std::mem::take(&mut *self.grants.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn take_written(&self) -> Vec<Waiter> {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn wake(&self) {
        // A failed wake (eventfd full) still leaves the loop with a pending
        // wakeup, so there is nothing to do about it.
        let _ = self.waker.wake();
    }
}

pub struct Mailboxes(pub Vec<Mailbox>);

impl GrantSink for Arc<Mailboxes> {
    fn deliver(&self, waiter: Waiter) {
        if let Some(mailbox) = self.0.get(waiter.loop_index) {
            let mut grants = mailbox.grants.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = grants.is_empty();
            grants.push(waiter);
            drop(grants);
            if was_empty && !mailbox.is_drained_by_this_thread() {
                mailbox.wake();
            }
        }
    }
}

impl WrittenSink for Arc<Mailboxes> {
    fn written(&self, owner: Waiter) {
        if let Some(mailbox) = self.0.get(owner.loop_index) {
            let mut written = mailbox.written.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = written.is_empty();
            if written.last() != Some(&owner) {
                written.push(owner);
            }
            drop(written);
            if was_empty {
                mailbox.wake();
            }
        }
    }
}

pub struct Shared {
    pub config: FrontConfig,
    pub dispatcher: Arc<Dispatcher>,
    pub workers: WorkerListener,
    pub log: Log,
    /// For "the workers cannot be reached", which every request would say.
    pub unreachable_workers: Throttle,
    /// For "the workers' accept queue is full", likewise.
    pub full_accept_queue: Throttle,
    /// For requests refused because the workers cannot keep up.
    pub overload: Throttle,
    pub mailboxes: Arc<Mailboxes>,
    /// try_files, when configured.
    pub static_files: Option<StaticFiles>,
    /// What all temp files together may hold (temp_path_max_size).
    pub temp_budget: Arc<TempBudget>,
    /// For "the temp budget is spent", which every upload would say.
    pub temp_budget_spent: Throttle,
    /// For "idle keep-alive connections closed for room", and for
    /// "an address over its share", both possibly on every accept.
    pub idle_closed_for_room: Throttle,
    pub address_over_share: Throttle,
    pub open_connections: AtomicUsize,
    /// Responses begun, by status class: 1xx to 5xx.
    responses_by_class: [AtomicU64; 5],
    /// Open connections per client address, for max_connections_per_address.
    connections_by_address: Mutex<HashMap<AddressKey, usize>>,
    pub requests_handed_off: AtomicU64,
    stop: AtomicU8,
}

impl Shared {
    pub fn new(
        config: FrontConfig,
        worker_count: usize,
        workers: WorkerListener,
        log: Log,
        mailboxes: Arc<Mailboxes>,
        static_files: Option<StaticFiles>,
    ) -> Self {
        let limits = DispatchLimits { per_worker: config.in_flight_per_worker, max_queued: config.max_queued_requests };
        let dispatcher = Dispatcher::new(worker_count, limits, Box::new(Arc::clone(&mailboxes)));
        // Unset, it is half of what temp_path has free at start.
        let temp_budget = TempBudget::new(
            config.temp_path_max_size.or_else(|| TempBudget::half_of_free_space(&config.temp_path)).unwrap_or(0),
        );
        Shared {
            config,
            dispatcher,
            workers,
            log,
            unreachable_workers: Throttle::new(std::time::Duration::from_secs(1)),
            full_accept_queue: Throttle::new(std::time::Duration::from_secs(1)),
            overload: Throttle::new(std::time::Duration::from_secs(1)),
            mailboxes,
            static_files,
            temp_budget,
            temp_budget_spent: Throttle::new(std::time::Duration::from_secs(60)),
            idle_closed_for_room: Throttle::new(std::time::Duration::from_secs(10)),
            address_over_share: Throttle::new(std::time::Duration::from_secs(10)),
            open_connections: AtomicUsize::new(0),
            responses_by_class: Default::default(),
            connections_by_address: Mutex::new(HashMap::new()),
            requests_handed_off: AtomicU64::new(0),
            stop: AtomicU8::new(0),
        }
    }

    /// Counts a response of `status` as it begins.
    pub fn count_response(&self, status: u16) {
        if let Some(class) = self.responses_by_class.get(usize::from(status / 100).wrapping_sub(1)) {
            class.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Responses begun so far, 1xx to 5xx.
    pub fn responses_by_class(&self) -> [u64; 5] {
        self.responses_by_class.each_ref().map(|class| class.load(Ordering::Relaxed))
    }

    pub fn stop_mode(&self) -> StopMode {
        match self.stop.load(Ordering::Acquire) {
            0 => StopMode::Running,
            1 => StopMode::Graceful,
            _ => StopMode::Immediate,
        }
    }

    /// Stopping only ever escalates: a graceful stop can become immediate.
    pub fn request_stop(&self, mode: StopMode) {
        let value = match mode {
            StopMode::Running => return,
            StopMode::Graceful => 1,
            StopMode::Immediate => 2,
        };
        self.stop.fetch_max(value, Ordering::AcqRel);
        self.mailboxes.0.iter().for_each(Mailbox::wake);
    }
}

/// Counts a client connection against max_connections and, once its
/// address is known, against that address's share
/// (max_connections_per_address) while it lives.
pub struct ConnectionPermit {
    shared: Arc<Shared>,
    address: Option<AddressKey>,
}

impl ConnectionPermit {
    /// `None` when the front is at max_connections.
    pub fn try_acquire(shared: &Arc<Shared>) -> Option<ConnectionPermit> {
        let limit = shared.config.max_connections;
        shared
            .open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < limit).then_some(open + 1))
            .ok()
            .map(|_| ConnectionPermit { shared: Arc::clone(shared), address: None })
    }

    /// Counts the connection against `peer`'s address; false (and nothing
    /// counted) when that address has its share open already.
    pub fn claim_address(&mut self, peer: &ClientAddress) -> bool {
        let config = &self.shared.config;
        // By default only public addresses have a share: private, loopback
        // and link-local ones are where proxies, load balancers and NAT
        // gateways connect from, every client behind one address.
        let counts_private = config.connections_per_address.is_some();
        let Some(key) = AddressKey::of(peer, counts_private) else { return true };
        let limit = config.max_connections_per_address();
        let mut counts = self.shared.connections_by_address.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The limit is at least 1, so an address at it has an entry already.
        if counts.get(&key).is_some_and(|&count| count >= limit) {
            return false;
        }
        *counts.entry(key).or_insert(0) += 1;
        self.address = Some(key);
        true
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(key) = self.address {
            let mut counts = self.shared.connections_by_address.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(count) = counts.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&key);
                }
            }
        }
        self.shared.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whose share a connection counts against: an IPv4 address, or an IPv6
/// /64 (one host's whole allocation, which it can hop through at will).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    V6Prefix(u64),
}

impl AddressKey {
    /// `None` for clients with no share to count: those of a UNIX-socket
    /// listener; 127.0.0.1 and ::1, where a proxy or a load test on the same
    /// machine connects from; and, unless `counts_private`, every private,
    /// loopback or link-local address.
    fn of(peer: &ClientAddress, counts_private: bool) -> Option<AddressKey> {
        let ClientAddress::Ip(address) = peer else { return None };
        let ip = match address.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let local = match ip {
            IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST,
            IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST,
        };
        if local || (!counts_private && is_private(ip)) {
            return None;
        }
        Some(match ip {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
        })
    }
}

/// RFC 1918, shared (RFC 6598), loopback, link-local and unique-local
/// addresses: not the internet's.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_loopback() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    fn woken(poll: &mut Poll) -> bool {
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).expect("poll");
        !events.is_empty()
    }

    #[test]
    fn addresses_share_by_ipv4_address_and_ipv6_64_and_local_ones_not_at_all() {
        let key = |text: &str| AddressKey::of(&ClientAddress::Ip(text.parse().expect("socket address")), true);
        assert_eq!(key("192.0.2.1:1"), key("192.0.2.1:2"), "ports do not matter");
        assert_ne!(key("192.0.2.1:1"), key("192.0.2.2:1"));
        assert_eq!(key("[2001:db8:1:2::1]:1"), key("[2001:db8:1:2:ffff::9]:1"), "one /64");
        assert_ne!(key("[2001:db8:1:2::1]:1"), key("[2001:db8:1:3::1]:1"));
        assert_eq!(key("[::ffff:192.0.2.1]:1"), key("192.0.2.1:1"), "IPv4-mapped is IPv4");
        assert_eq!(key("127.0.0.1:1"), None);
        assert_eq!(key("[::1]:1"), None);
        assert_eq!(key("[::ffff:127.0.0.1]:1"), None);
        assert!(key("127.0.0.2:1").is_some(), "only the usual local proxy address is exempt");
        assert_eq!(AddressKey::of(&ClientAddress::Local, true), None);
    }

    #[test]
    fn by_default_private_addresses_have_no_share() {
        let key = |text: &str| AddressKey::of(&ClientAddress::Ip(text.parse().expect("socket address")), false);
        for private in ["10.1.2.3:1", "172.17.0.1:1", "192.168.1.1:1", "100.64.0.1:1", "169.254.1.1:1", "127.0.0.2:1"] {
            assert_eq!(key(private), None, "{private}");
        }
        for private in ["[fd00::1]:1", "[fe80::1]:1", "[::ffff:10.0.0.1]:1"] {
            assert_eq!(key(private), None, "{private}");
        }
        for public in ["192.0.2.1:1", "100.128.0.1:1", "172.32.0.1:1", "[2001:db8::1]:1"] {
            assert!(key(public).is_some(), "{public}");
        }
    }

    #[test]
    fn a_grant_from_the_loops_own_thread_skips_the_wakeup_and_others_wake_it() {
        let mut poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(0)).expect("waker");
        let mailboxes = Arc::new(Mailboxes(vec![Mailbox::new(waker)]));
        let waiter = |slot| Waiter { loop_index: 0, slot, serial: 1 };

        mailboxes.0[0].claim_for_this_thread();
        mailboxes.deliver(waiter(1));
        assert!(!woken(&mut poll), "the loop's own grant must not wake it");
        assert_eq!(mailboxes.0[0].take_grants(), vec![waiter(1)], "the loop drains it before polling");

        let from_elsewhere = Arc::clone(&mailboxes);
        std::thread::spawn(move || from_elsewhere.deliver(waiter(2))).join().expect("thread");
        assert!(woken(&mut poll), "another thread's grant must wake the loop");
        assert_eq!(mailboxes.0[0].take_grants(), vec![waiter(2)]);
    }
}
