//! Who holds the temp budget, and whom to shed when it runs out.
//!
//! A spent `temp_path_max_size` must not make a worker wait on clients
//! that read nothing: a worker then writes into a full spool until
//! Unicorn's timeout kills it, and three clients that never read can hold
//! every worker (the 2026-12 review: a small GET waited 29 s). So every
//! response whose temp file holds part of the budget is a `Holding`, and
//! once a worker has waited on the spent budget a while, the front sheds
//! the clients that would hold their files longest: those that have taken
//! nothing for `STALLED`, biggest first, then those whose pace is under
//! `SLOW_PACE` and would take longer than `SLOW_DRAIN` to drain what
//! their file still has to send. The pace is measured over the time the
//! file has had bytes waiting for the client (since it last drained), so
//! the app's think time and a fast reader's big download count for
//! nothing: a client reading at a fair pace is never shed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::connection_id::ConnectionId;
use crate::net::client_address::ClientAddress;

/// A client that has taken nothing for this long is stalled.
pub const STALLED: Duration = Duration::from_secs(2);
/// A client whose pace would take longer than this to drain what its file
/// still has to send is slow enough to shed...
const SLOW_DRAIN: Duration = Duration::from_secs(5);
/// ...if its pace (bytes a second) is under this too: a client taking a
/// large download at this pace or faster gives budget back at that rate.
const SLOW_PACE: u64 = 256 * 1024;
/// Rounds of shedding are this far apart at least: what one round frees
/// reaches the waiting workers before the next is judged.
const ROUND_INTERVAL: Duration = Duration::from_millis(500);
/// At most this many clients go in one round.
const MOST_PER_ROUND: usize = 64;

/// One response's temp file, as the shedder sees it. Times are
/// milliseconds since the holders' start.
#[derive(Debug)]
pub struct Holding {
    owner: ConnectionId,
    peer: ClientAddress,
    /// When the response began (for the log).
    began_ms: u64,
    /// When the file last began to hold bytes (it drains to empty and
    /// starts over), and what the client had taken by then: the pace is
    /// measured from there.
    backlog_began_ms: AtomicU64,
    taken_before_backlog: AtomicU64,
    /// When its client last took bytes (or the wait was the front's own).
    last_taken_ms: AtomicU64,
    /// Bytes of the budget its file holds now, and of those the bytes its
    /// client has still to take.
    bytes: AtomicU64,
    unsent: AtomicU64,
    /// Bytes its client has taken.
    taken: AtomicU64,
    shed: AtomicBool,
}

impl Holding {
    /// The front chose to shed this client: its connection ends.
    pub fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// The file's bytes still to be taken by the client.
    pub fn set_unsent(&self, unsent: u64) {
        self.unsent.store(unsent, Ordering::Relaxed);
    }
}

/// A client the front sheds, and what it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shed {
    pub owner: ConnectionId,
    pub peer: ClientAddress,
    pub bytes: u64,
    pub taken: u64,
    pub age: Duration,
}

#[derive(Debug)]
pub struct Holders {
    started: Instant,
    list: Mutex<Slab<Arc<Holding>>>,
    last_round: Mutex<Option<Instant>>,
    shed_total: AtomicU64,
}

impl Default for Holders {
    fn default() -> Self {
        Holders {
            started: Instant::now(),
            list: Mutex::default(),
            last_round: Mutex::default(),
            shed_total: AtomicU64::new(0),
        }
    }
}

/// A holding's place in the list, until `unregister`.
#[derive(Debug)]
pub struct Registration {
    key: usize,
    pub holding: Arc<Holding>,
}

impl Holders {
    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// A response of `owner`'s begins to hold part of the budget: it began
    /// at `began`, and its client has taken `taken` bytes of it, the last
    /// at `last_taken`.
    pub fn register(
        &self,
        owner: ConnectionId,
        peer: ClientAddress,
        began: Instant,
        taken: (u64, Instant),
    ) -> Registration {
        let now = self.ms(Instant::now());
        let holding = Arc::new(Holding {
            owner,
            peer,
            began_ms: self.ms(began),
            backlog_began_ms: AtomicU64::new(now),
            taken_before_backlog: AtomicU64::new(taken.0),
            last_taken_ms: AtomicU64::new(self.ms(taken.1.max(began))),
            bytes: AtomicU64::new(0),
            unsent: AtomicU64::new(0),
            taken: AtomicU64::new(taken.0),
            shed: AtomicBool::new(false),
        });
        let key = self.lock().insert(Arc::clone(&holding));
        Registration { key, holding }
    }

    pub fn unregister(&self, registration: &Registration) {
        let mut list = self.lock();
        if list.get(registration.key).is_some_and(|held| Arc::ptr_eq(held, &registration.holding)) {
            list.remove(registration.key);
        }
    }

    /// The file holds `bytes` of the budget now; from empty, a new backlog
    /// begins, and the client's pace is measured from here.
    pub fn set_bytes(&self, holding: &Holding, bytes: u64) {
        if holding.bytes.swap(bytes, Ordering::AcqRel) == 0 && bytes > 0 {
            holding.backlog_began_ms.store(self.ms(Instant::now()), Ordering::Relaxed);
            holding.taken_before_backlog.store(holding.taken.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// The client took `count` more bytes at `now` (0: its bytes wait on
    /// the front, not on it).
    pub fn note_taken(&self, holding: &Holding, count: u64, now: Instant) {
        holding.taken.fetch_add(count, Ordering::Relaxed);
        holding.last_taken_ms.store(self.ms(now), Ordering::Relaxed);
    }

    /// Clients shed so far.
    pub fn shed_total(&self) -> u64 {
        self.shed_total.load(Ordering::Relaxed)
    }

    /// A worker has waited on the spent budget: marks the clients to shed
    /// until `wanted` bytes would come back (those that have taken nothing
    /// for `STALLED`, biggest first, then the slowest to drain), and
    /// returns them; their loops must be told. Nothing within
    /// `ROUND_INTERVAL` of the last round, nor while no client qualifies.
    pub fn shed_round(&self, wanted: u64, now: Instant) -> Vec<Shed> {
        {
            let mut last = self.last_round.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|last| now.saturating_duration_since(last) < ROUND_INTERVAL) {
                return Vec::new();
            }
            *last = Some(now);
        }
        let now_ms = self.ms(now);
        let mut candidates: Vec<(Arc<Holding>, Judgement)> = self
            .lock()
            .iter()
            .filter_map(|(_, holding)| judge(holding, now_ms).map(|judgement| (Arc::clone(holding), judgement)))
            .collect();
        candidates.sort_by(|(_, a), (_, b)| b.cmp(a));
        let mut freed = 0;
        let mut shed = Vec::new();
        for (holding, _) in candidates.into_iter().take(MOST_PER_ROUND) {
            if freed >= wanted {
                break;
            }
            if holding.shed.swap(true, Ordering::AcqRel) {
                continue;
            }
            let bytes = holding.bytes.load(Ordering::Acquire);
            freed += bytes;
            shed.push(Shed {
                owner: holding.owner,
                peer: holding.peer,
                bytes,
                taken: holding.taken.load(Ordering::Relaxed),
                age: Duration::from_millis(now_ms.saturating_sub(holding.began_ms)),
            });
        }
        self.shed_total.fetch_add(shed.len() as u64, Ordering::Relaxed);
        shed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Arc<Holding>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How badly a client holds its share: stalled ones first (the bigger the
/// worse), then by how long its pace would take to drain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Judgement {
    Slow { drain_ms: u64 },
    Stalled { bytes: u64 },
}

/// `None` for a client that is not worth shedding: it holds nothing, its
/// backlog is new, it was shed already, or it reads at a pace that frees
/// its share soon.
fn judge(holding: &Holding, now_ms: u64) -> Option<Judgement> {
    let bytes = holding.bytes.load(Ordering::Acquire);
    let backlog_ms = now_ms.saturating_sub(holding.backlog_began_ms.load(Ordering::Relaxed));
    let stalled_ms = now_ms.saturating_sub(holding.last_taken_ms.load(Ordering::Relaxed));
    if bytes == 0 || holding.is_shed() || backlog_ms < STALLED.as_millis() as u64 {
        return None;
    }
    if stalled_ms >= STALLED.as_millis() as u64 {
        return Some(Judgement::Stalled { bytes });
    }
    let taken =
        holding.taken.load(Ordering::Relaxed).saturating_sub(holding.taken_before_backlog.load(Ordering::Relaxed));
    // Bytes a second over the backlog so far.
    let pace = taken.saturating_mul(1000) / backlog_ms.max(1);
    if pace >= SLOW_PACE {
        return None;
    }
    let unsent = holding.unsent.load(Ordering::Relaxed);
    let drain_ms = unsent.saturating_mul(1000).checked_div(pace).unwrap_or(u64::MAX);
    (drain_ms > SLOW_DRAIN.as_millis() as u64).then_some(Judgement::Slow { drain_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn peer() -> ClientAddress {
        ClientAddress::Ip("192.0.2.7:5000".parse().unwrap())
    }

    fn owner(slot: usize) -> ConnectionId {
        ConnectionId { loop_index: 0, slot, serial: slot as u64 }
    }

    /// A response of `bytes` (all unsent) whose backlog began at `began`.
    fn holder(holders: &Holders, slot: usize, bytes: u64, began: Instant) -> Registration {
        let registration = holders.register(owner(slot), peer(), began, (0, began));
        holders.set_bytes(&registration.holding, bytes);
        registration.holding.set_unsent(bytes);
        registration.holding.backlog_began_ms.store(holders.ms(began), Ordering::Relaxed);
        registration
    }

    #[test]
    fn stalled_clients_go_biggest_first_until_enough_would_come_back() {
        let holders = Holders::default();
        let start = holders.started;
        let _small = holder(&holders, 1, MIB, start);
        let _big = holder(&holders, 2, 50 * MIB, start);
        let _middle = holder(&holders, 3, 10 * MIB, start);
        let now = start + Duration::from_secs(3);
        let shed = holders.shed_round(40 * MIB, now);
        assert_eq!(shed.iter().map(|shed| shed.owner.slot).collect::<Vec<_>>(), vec![2], "50 MiB are enough");
        assert_eq!((shed[0].bytes, shed[0].taken, shed[0].age), (50 * MIB, 0, Duration::from_secs(3)));
        assert!(holders.shed_round(40 * MIB, now + Duration::from_millis(100)).is_empty(), "one round at a time");
        let shed = holders.shed_round(40 * MIB, now + ROUND_INTERVAL);
        assert_eq!(
            shed.iter().map(|shed| shed.owner.slot).collect::<Vec<_>>(),
            vec![3, 1],
            "the shed one is not again"
        );
        assert_eq!(holders.shed_total(), 3);
    }

    #[test]
    fn a_client_reading_at_a_fair_pace_or_a_new_one_is_never_shed() {
        let holders = Holders::default();
        let start = holders.started;
        let reader = holder(&holders, 1, 8 * MIB, start);
        let _new = holder(&holders, 2, 8 * MIB, start + Duration::from_secs(9));
        // 4 MiB a second for ten seconds: its 8 MiB drain in two.
        for second in 1..=10 {
            holders.note_taken(&reader.holding, 4 * MIB, start + Duration::from_secs(second));
        }
        assert!(holders.shed_round(MIB, start + Duration::from_secs(10)).is_empty());
        // Then it stops: stalled, it goes.
        let later = start + Duration::from_secs(10) + STALLED + ROUND_INTERVAL;
        assert_eq!(holders.shed_round(MIB, later).len(), 1);
    }

    /// A big download taken at 20 MiB/s holds 400 MiB for 20 s: it gives
    /// the budget back at that pace, and is not shed for the size.
    #[test]
    fn a_fast_reader_of_a_big_file_is_not_shed_however_long_it_drains() {
        let holders = Holders::default();
        let start = holders.started;
        let reader = holder(&holders, 1, 400 * MIB, start);
        for second in 1..=5 {
            holders.note_taken(&reader.holding, 20 * MIB, start + Duration::from_secs(second));
            reader.holding.set_unsent((400 - 20 * second) * MIB);
        }
        assert!(holders.shed_round(MIB, start + Duration::from_secs(5)).is_empty());
    }

    /// Bytes taken before the file's backlog began (while the app thought,
    /// or from memory) do not make a slow reader look fast, nor the app's
    /// time a fast one look slow.
    #[test]
    fn the_pace_counts_from_the_backlog_only() {
        let holders = Holders::default();
        let start = holders.started;
        let registration = holders.register(owner(1), peer(), start, (100 * MIB, start));
        holders.set_bytes(&registration.holding, 0);
        holders.set_bytes(&registration.holding, 30 * MIB);
        registration.holding.set_unsent(30 * MIB);
        let backlog = holders.ms(start);
        registration.holding.backlog_began_ms.store(backlog, Ordering::Relaxed);
        for second in 1..=10 {
            holders.note_taken(&registration.holding, 1000, start + Duration::from_secs(second));
        }
        let shed = holders.shed_round(u64::MAX, start + Duration::from_secs(10));
        assert_eq!(shed.len(), 1, "1 kB/s since its backlog began, whatever it took before");
    }

    #[test]
    fn bytes_waiting_on_the_front_do_not_make_a_client_stalled() {
        let holders = Holders::default();
        let start = holders.started;
        let reader = holder(&holders, 1, 8 * MIB, start);
        holders.note_taken(&reader.holding, 8 * MIB, start + Duration::from_secs(1));
        // Its next bytes wait on the disk, not on it: the front says so.
        holders.note_taken(&reader.holding, 0, start + Duration::from_secs(4));
        assert!(holders.shed_round(MIB, start + Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn a_trickling_reader_is_shed_as_too_slow_after_the_stalled() {
        let holders = Holders::default();
        let start = holders.started;
        let trickler = holder(&holders, 1, 30 * MIB, start);
        let _stalled = holder(&holders, 2, MIB, start);
        for second in 1..=10 {
            holders.note_taken(&trickler.holding, 1000, start + Duration::from_secs(second));
        }
        let shed = holders.shed_round(u64::MAX, start + Duration::from_secs(10));
        assert_eq!(shed.iter().map(|shed| shed.owner.slot).collect::<Vec<_>>(), vec![2, 1]);
    }

    #[test]
    fn an_unregistered_holding_is_gone_from_the_list() {
        let holders = Holders::default();
        let start = holders.started;
        let gone = holder(&holders, 1, MIB, start);
        holders.unregister(&gone);
        assert!(holders.shed_round(MIB, start + Duration::from_secs(5)).is_empty());
    }
}
