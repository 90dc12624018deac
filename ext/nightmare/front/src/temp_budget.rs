//! The total the front's temp files may hold at once (`temp_path_max_size`),
//! shared by every loop. Past it a response spools no more (its worker waits
//! for the client, briefly: see `shedding`) and a request body that needs a
//! file gets 503: slow readers of large responses cannot fill temp_path
//! (RAM, with /dev/shm) and leave uploads failing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::connection_id::ConnectionId;
use crate::net::client_address::ClientAddress;
use crate::shedding::{Holders, Registration};

/// Files take their share in steps this big, so a file that grows by small
/// writes touches the shared counter once per step, not on every write;
/// small, so a body trickling into a fresh file holds little it does not use.
const STEP: u64 = 64 * 1024;

#[derive(Debug)]
pub struct TempBudget {
    /// Bytes all temp files together may hold; 0 means no limit.
    limit: u64,
    taken: AtomicU64,
    /// The responses whose files hold part of it, for shedding.
    pub holders: Holders,
}

impl TempBudget {
    pub fn new(limit: u64) -> Arc<TempBudget> {
        Arc::new(TempBudget { limit, taken: AtomicU64::new(0), holders: Holders::default() })
    }

    /// What a round of shedding should bring back: an eighth of the
    /// budget, so a waiting worker gets going and one round is not
    /// followed by another at once.
    pub fn shed_wanted(&self) -> u64 {
        (self.limit / 8).max(1024 * 1024)
    }

    /// Half the space free for unprivileged users on the file system of
    /// `temp_path`, now: the default, leaving the other half to whatever
    /// else lives there. `None` if the file system cannot say.
    pub fn half_of_free_space(temp_path: &Path) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(temp_path.as_os_str().as_bytes()).ok()?;
        let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: a NUL-terminated path and a buffer the size of statvfs.
        if unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: statvfs succeeded, so it filled the buffer.
        let stats = unsafe { stats.assume_init() };
        // A full disk gives a budget of one byte (no temp file at all), not
        // 0, which would mean no limit.
        Some((stats.f_bavail.saturating_mul(stats.f_frsize) / 2).max(1))
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes the temp files hold now (rounded up to the steps they take).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// Whether a file of `size` bytes would fit now (nothing is taken).
    pub fn could_hold(&self, size: u64) -> bool {
        size <= self.available()
    }

    fn available(&self) -> u64 {
        if self.limit == 0 { u64::MAX } else { self.limit.saturating_sub(self.taken()) }
    }

    fn try_take(&self, bytes: u64) -> bool {
        let limit = if self.limit == 0 { u64::MAX } else { self.limit };
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                taken.checked_add(bytes).filter(|&total| total <= limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.taken.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What one temp file has taken of the budget; given back when dropped,
/// which is when the file goes.
#[derive(Debug)]
pub struct TempShare {
    budget: Arc<TempBudget>,
    bytes: u64,
    /// A response's client, which may be shed while its file holds bytes.
    reader: Option<Reader>,
}

/// The client a response's file waits for, and its pace so far.
#[derive(Debug)]
struct Reader {
    owner: ConnectionId,
    peer: ClientAddress,
    began: Instant,
    taken: u64,
    last_taken: Instant,
    /// Among the budget's holders while the file holds bytes.
    registration: Option<Registration>,
}

impl TempShare {
    /// A request body's share: its client is judged by its sending pace
    /// (`client_body_min_rate`), never shed.
    pub fn new(budget: &Arc<TempBudget>) -> TempShare {
        TempShare { budget: Arc::clone(budget), bytes: 0, reader: None }
    }

    /// A response's share, for the client `owner` at `peer`; the response
    /// began at `began`.
    pub fn for_reader(budget: &Arc<TempBudget>, owner: ConnectionId, peer: ClientAddress, began: Instant) -> TempShare {
        let reader = Reader { owner, peer, began, taken: 0, last_taken: began, registration: None };
        TempShare { budget: Arc::clone(budget), bytes: 0, reader: Some(reader) }
    }

    /// The client took `count` more bytes of the response at `now` (0: what
    /// it waits for waits on the front, not on it).
    pub fn note_taken(&mut self, count: u64, now: Instant) {
        let Some(reader) = &mut self.reader else { return };
        reader.taken += count;
        reader.last_taken = now;
        if let Some(registration) = &reader.registration {
            self.budget.holders.note_taken(&registration.holding, count, now);
        }
    }

    /// The front chose to shed this share's client.
    pub fn is_shed(&self) -> bool {
        self.reader.as_ref().and_then(|reader| reader.registration.as_ref()).is_some_and(|r| r.holding.is_shed())
    }

    /// The share now holds `bytes`: the holders hear of it (a response
    /// joins them with its file's first bytes).
    fn set_bytes(&mut self, bytes: u64) {
        self.bytes = bytes;
        let Some(reader) = &mut self.reader else { return };
        let holders = &self.budget.holders;
        let registration = reader.registration.get_or_insert_with(|| {
            holders.register(reader.owner, reader.peer, reader.began, (reader.taken, reader.last_taken))
        });
        holders.set_bytes(&registration.holding, bytes);
    }

    /// What the file has still to send to the client, for judging its pace.
    pub fn note_unsent(&self, unsent: u64) {
        if let Some(registration) = self.reader.as_ref().and_then(|reader| reader.registration.as_ref()) {
            registration.holding.set_unsent(unsent);
        }
    }

    /// Makes the share cover a file of `size` bytes if the budget allows;
    /// returns the size it covers now, less than `size` when it does not.
    pub fn cover(&mut self, size: u64) -> u64 {
        if size > self.bytes {
            let stepped = size.div_ceil(STEP).saturating_mul(STEP);
            // Near the limit a whole step may not fit where the exact size does.
            for target in [stepped, size] {
                if self.budget.try_take(target - self.bytes) {
                    self.set_bytes(target);
                    break;
                }
            }
        }
        self.bytes
    }

    /// How much of a file of `size` bytes the share could cover now, without
    /// taking anything: a reader asks before it reads.
    pub fn could_cover(&self, size: u64) -> u64 {
        if size <= self.bytes { size } else { size.min(self.bytes.saturating_add(self.budget.available())) }
    }

    /// Covers `size` even past the limit, for bytes `could_cover` let in
    /// when another file took the room in between: the total then exceeds
    /// the limit by at most one read per file that raced.
    pub fn cover_anyway(&mut self, size: u64) {
        if self.cover(size) < size {
            self.budget.taken.fetch_add(size - self.bytes, Ordering::AcqRel);
            self.set_bytes(size);
        }
    }

    /// The file is gone early: its share returns now.
    pub fn release(&mut self) {
        self.budget.give_back(self.bytes);
        if self.bytes > 0 {
            self.set_bytes(0);
        }
    }
}

impl Drop for TempShare {
    fn drop(&mut self) {
        self.release();
        if let Some(registration) = self.reader.as_ref().and_then(|reader| reader.registration.as_ref()) {
            self.budget.holders.unregister(registration);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_grow_in_steps_until_the_total_and_return_when_dropped() {
        let budget = TempBudget::new(3 * STEP);
        let mut first = TempShare::new(&budget);
        assert_eq!(first.cover(10), STEP, "a whole step at once");
        assert_eq!(first.cover(STEP), STEP, "covered already: no new take");
        assert_eq!(budget.taken(), STEP);
        let mut second = TempShare::new(&budget);
        assert_eq!(second.cover(STEP + 5), 2 * STEP);
        assert_eq!(first.cover(2 * STEP), STEP, "the total is reached");
        drop(second);
        assert_eq!(budget.taken(), STEP);
        assert_eq!(first.cover(2 * STEP), 2 * STEP, "room again once a file went");
        first.release();
        assert_eq!(budget.taken(), 0);
    }

    #[test]
    fn near_the_limit_the_exact_size_is_taken_when_a_step_is_not() {
        let budget = TempBudget::new(STEP + 100);
        let mut share = TempShare::new(&budget);
        assert_eq!(share.cover(STEP + 50), STEP + 50);
        assert_eq!(share.cover(STEP + 200), STEP + 50);
    }

    #[test]
    fn asking_takes_nothing_and_a_race_may_overshoot_by_what_was_let_in() {
        let budget = TempBudget::new(2 * STEP);
        let mut reader = TempShare::new(&budget);
        assert_eq!(reader.could_cover(3 * STEP), 2 * STEP);
        assert_eq!(budget.taken(), 0);
        let mut other = TempShare::new(&budget);
        other.cover(2 * STEP);
        reader.cover_anyway(100);
        assert_eq!(budget.taken(), 2 * STEP + 100);
        assert_eq!(reader.could_cover(200), 100, "nothing more while over");
    }

    #[test]
    fn zero_means_no_limit() {
        let budget = TempBudget::new(0);
        let mut share = TempShare::new(&budget);
        assert!(share.cover(u64::MAX / 2) >= u64::MAX / 2);
    }

    #[test]
    fn the_default_is_half_of_what_is_free() {
        let half = TempBudget::half_of_free_space(&std::env::temp_dir()).expect("statvfs of the temp dir");
        assert!(half > 0);
        assert_eq!(TempBudget::half_of_free_space(Path::new("/nonexistent/nightmare")), None);
    }
}
