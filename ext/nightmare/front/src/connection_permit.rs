//! Who may hold a client connection: at most max_connections in all, and
//! at most max_connections_per_address from one address (an IPv6 /64), as
//! nginx's worker_connections and limit_conn. A connection's
//! `ConnectionPermit` counts it while it lives.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::FrontConfig;
use crate::net::client_address::ClientAddress;

/// Open client connections, in all and by address.
pub struct ClientCounts {
    max_connections: usize,
    per_address: usize,
    /// An explicit per-address limit counts private addresses too.
    counts_private: bool,
    open: AtomicUsize,
    by_address: Mutex<HashMap<AddressKey, usize>>,
}

impl ClientCounts {
    pub fn new(config: &FrontConfig) -> Arc<ClientCounts> {
        Arc::new(ClientCounts {
            max_connections: config.max_connections,
            per_address: config.max_connections_per_address(),
            counts_private: config.connections_per_address.is_some(),
            open: AtomicUsize::new(0),
            by_address: Mutex::new(HashMap::new()),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn per_address(&self) -> usize {
        self.per_address
    }

    fn by_address(&self) -> std::sync::MutexGuard<'_, HashMap<AddressKey, usize>> {
        self.by_address.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts one client connection against max_connections and, once its
/// address is known, against that address's share while it lives.
pub struct ConnectionPermit {
    counts: Arc<ClientCounts>,
    address: Option<AddressKey>,
}

impl ConnectionPermit {
    /// `None` when the front is at max_connections.
    pub fn try_acquire(counts: &Arc<ClientCounts>) -> Option<ConnectionPermit> {
        let limit = counts.max_connections;
        counts
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < limit).then_some(open + 1))
            .ok()
            .map(|_| ConnectionPermit { counts: Arc::clone(counts), address: None })
    }

    /// Counts the connection against `peer`'s address; false (and nothing
    /// counted) when that address has its share open already.
    pub fn claim_address(&mut self, peer: &ClientAddress) -> bool {
        // By default only public addresses have a share: private, loopback
        // and link-local ones are where proxies, load balancers and NAT
        // gateways connect from, every client behind one address.
        let Some(key) = AddressKey::of(peer, self.counts.counts_private) else { return true };
        let limit = self.counts.per_address;
        let mut counts = self.counts.by_address();
        // The limit is at least 1, so an address at it has an entry already.
        if counts.get(&key).is_some_and(|&count| count >= limit) {
            return false;
        }
        *counts.entry(key).or_insert(0) += 1;
        self.address = Some(key);
        true
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(key) = self.address {
            let mut counts = self.counts.by_address();
            if let Some(count) = counts.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&key);
                }
            }
        }
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
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
    pub(crate) fn of(peer: &ClientAddress, counts_private: bool) -> Option<AddressKey> {
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
    fn a_full_address_is_refused_and_its_share_returns_with_the_permit() {
        let config = FrontConfig { max_connections: 3, connections_per_address: Some(2), ..FrontConfig::default() };
        let counts = ClientCounts::new(&config);
        let peer = ClientAddress::Ip("192.0.2.7:1".parse().expect("address"));
        let mut first = ConnectionPermit::try_acquire(&counts).expect("room");
        let mut second = ConnectionPermit::try_acquire(&counts).expect("room");
        let mut third = ConnectionPermit::try_acquire(&counts).expect("room");
        assert!(ConnectionPermit::try_acquire(&counts).is_none(), "max_connections reached");
        assert!(first.claim_address(&peer) && second.claim_address(&peer));
        assert!(!third.claim_address(&peer), "the address holds its share");
        drop(first);
        assert!(third.claim_address(&peer), "a closed connection gives its share back");
        drop((second, third));
        assert_eq!(counts.open(), 0);
        assert!(counts.by_address().is_empty());
    }
}
