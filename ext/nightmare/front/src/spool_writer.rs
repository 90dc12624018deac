//! Writes temp files (request bodies, responses for slow clients) on a
//! thread beside each event loop. A disk the kernel throttles (dirty-page
//! writeback under heavy spooling) then slows only the spooling, not every
//! client of the loop: measured here, 500 slow readers of 8 MiB each left
//! 2.2k fast req/s with the loop writing, where a tmpfs (no throttling)
//! left 6.6k.
//!
//! Each write is a copy of the bytes, held until the disk has them. A
//! spool keeps at most `MAX_UNCONFIRMED` in flight, and the loop at most
//! `LOOP_MAX_UNCONFIRMED` for all its spools together: past it a spool
//! takes nothing more (its worker, or its client, waits) until the writer
//! catches up and tells it, so a stalled disk cannot grow the front's
//! memory with the number of connections. Both limits count each job's
//! bookkeeping (`JOB_OVERHEAD`) beside its bytes: a client that makes
//! tiny writes (1-byte chunks) must not hold a hundred times what the
//! limits say. Spools gather small writes before they come here.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::connection_id::ConnectionId;
use crate::mailbox::Mailboxes;

/// Bytes one spool may have handed to the writer and not yet written.
pub const MAX_UNCONFIRMED: u64 = 256 * 1024;
/// Bytes all of one loop's spools may have in flight together: 16 spools
/// at their own limit.
pub const LOOP_MAX_UNCONFIRMED: u64 = 16 * MAX_UNCONFIRMED;
/// What a job costs beyond its bytes, as the limits count it: the job in
/// the channel (about 72 bytes), its copy's allocation header and rounding
/// (16 to 32) and a response spool's record of the copy (24).
pub const JOB_OVERHEAD: u64 = 128;

/// How far a spool file's writes have got, shared with the writer.
#[derive(Debug, Default)]
pub struct WriteProgress {
    written: AtomicU64,
    /// Bytes handed to the writer and not yet processed, with each job's
    /// `JOB_OVERHEAD`: what the spool holds in the writer's queue.
    held: AtomicU64,
    failed: AtomicBool,
    /// The spool is gone (its client left): its queued writes are skipped.
    cancelled: AtomicBool,
    error: Mutex<Option<io::Error>>,
}

impl WriteProgress {
    /// Bytes from offset 0 known to be in the file.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// What this spool's queued jobs hold, their overhead included.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub fn take_error(&self) -> Option<io::Error> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Starts over at offset 0 (the spool truncated a drained file).
    pub fn reset(&self) {
        self.written.store(0, Ordering::Release);
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Records bytes written in place, without the writer thread.
    pub fn advance_to(&self, end: u64) {
        self.written.fetch_max(end, Ordering::AcqRel);
    }
}

pub(crate) struct Job {
    file: Arc<File>,
    offset: u64,
    data: Arc<[u8]>,
    progress: Arc<WriteProgress>,
    owner: ConnectionId,
}

/// Where a finished write is reported: the loop that owns the connection.
pub trait WrittenSink: Send + 'static {
    fn written(&self, owner: ConnectionId);
}

impl WrittenSink for Arc<Mailboxes> {
    fn written(&self, owner: ConnectionId) {
        self.post_written(owner);
    }
}

/// What one loop's spools have in flight, and who waits for room.
#[derive(Default)]
struct InFlight {
    /// Bytes with each job's `JOB_OVERHEAD`.
    bytes: AtomicU64,
    jobs: AtomicU64,
    waiting: Mutex<Vec<ConnectionId>>,
}

#[derive(Clone)]
pub struct SpoolWriter {
    jobs: mpsc::Sender<Job>,
    in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpoolWriter")
    }
}

impl SpoolWriter {
    /// The writer thread runs until every SpoolWriter is dropped.
    pub fn start(name: String, sink: impl WrittenSink) -> io::Result<SpoolWriter> {
        let (writer, queue) = SpoolWriter::unstarted();
        let in_flight = Arc::clone(&writer.in_flight);
        crate::threads::spawn_without_signals(name, move || {
            for job in queue {
                process(job, &sink, &in_flight);
            }
        })?;
        Ok(writer)
    }

    /// A writer whose jobs wait in the returned queue for `process`: a
    /// stalled disk, for tests.
    pub(crate) fn unstarted() -> (SpoolWriter, mpsc::Receiver<Job>) {
        let (jobs, queue) = mpsc::channel::<Job>();
        (SpoolWriter { jobs, in_flight: Arc::new(InFlight::default()) }, queue)
    }

    /// Whether the loop's spools may hand over more now. When not, `owner`
    /// is told (as for a finished write) once there is room again.
    pub fn has_room(&self, owner: ConnectionId) -> bool {
        let mut waiting = self.in_flight.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if self.in_flight.bytes.load(Ordering::Acquire) < LOOP_MAX_UNCONFIRMED {
            return true;
        }
        if !waiting.contains(&owner) {
            waiting.push(owner);
        }
        false
    }

    /// Bytes handed over and not yet written, for all of the loop's spools,
    /// each job's overhead included.
    pub fn unconfirmed(&self) -> u64 {
        self.in_flight.bytes.load(Ordering::Acquire)
    }

    /// Jobs handed over and not yet written.
    pub fn jobs(&self) -> u64 {
        self.in_flight.jobs.load(Ordering::Acquire)
    }

    /// Writes every job waiting in `queue` (from `unstarted`), telling no
    /// one; returns how many there were.
    #[cfg(test)]
    pub(crate) fn run_queued(&self, queue: &mpsc::Receiver<Job>) -> usize {
        struct Nobody;
        impl WrittenSink for Nobody {
            fn written(&self, _: ConnectionId) {}
        }
        queue.try_iter().map(|job| process(job, &Nobody, &self.in_flight)).count()
    }

    /// Queues `data` for `file` at `offset`; `owner` hears when it is done.
    pub fn write(
        &self,
        file: Arc<File>,
        offset: u64,
        data: Arc<[u8]>,
        progress: Arc<WriteProgress>,
        owner: ConnectionId,
    ) {
        let cost = data.len() as u64 + JOB_OVERHEAD;
        self.in_flight.bytes.fetch_add(cost, Ordering::AcqRel);
        self.in_flight.jobs.fetch_add(1, Ordering::AcqRel);
        progress.held.fetch_add(cost, Ordering::AcqRel);
        let job = Job { file, offset, data, progress, owner };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            self.in_flight.bytes.fetch_sub(cost, Ordering::AcqRel);
            self.in_flight.jobs.fetch_sub(1, Ordering::AcqRel);
            job.progress.held.fetch_sub(cost, Ordering::AcqRel);
            fail(&job.progress, io::Error::other("spool writer stopped"));
        }
    }
}

/// Writes one job, tells its spool, and when the loop's spools have room
/// again, tells those that waited for it.
fn process(job: Job, sink: &impl WrittenSink, in_flight: &InFlight) {
    // A spool already dropped (its client left) needs no more writes, and
    // after a failure the spool keeps the rest itself.
    let skipped = job.progress.cancelled.load(Ordering::Acquire) || job.progress.failed();
    if !skipped {
        match job.file.write_all_at(&job.data, job.offset) {
            Ok(()) => {
                job.progress.written.fetch_max(job.offset + job.data.len() as u64, Ordering::AcqRel);
            }
            Err(error) => fail(&job.progress, error),
        }
    }
    let cost = job.data.len() as u64 + JOB_OVERHEAD;
    let owner = job.owner;
    let progress = Arc::clone(&job.progress);
    // The copy goes before the counts say so.
    drop(job);
    progress.held.fetch_sub(cost, Ordering::AcqRel);
    in_flight.jobs.fetch_sub(1, Ordering::AcqRel);
    let before = in_flight.bytes.fetch_sub(cost, Ordering::AcqRel);
    if !skipped {
        sink.written(owner);
    }
    if before - cost < LOOP_MAX_UNCONFIRMED {
        let waiting = std::mem::take(&mut *in_flight.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        // The job's own spool was told already.
        let others = waiting.into_iter().filter(|waiter| skipped || *waiter != owner);
        others.for_each(|waiter| sink.written(waiter));
    }
}

fn fail(progress: &WriteProgress, error: io::Error) {
    progress.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(error);
    progress.failed.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Channel(Mutex<mpsc::Sender<ConnectionId>>);

    impl WrittenSink for Channel {
        fn written(&self, owner: ConnectionId) {
            let _ = self.0.lock().unwrap().send(owner);
        }
    }

    fn owner() -> ConnectionId {
        ConnectionId { loop_index: 0, slot: 3, serial: 9 }
    }

    #[test]
    fn writes_land_in_order_and_are_reported() {
        let (tell, heard) = mpsc::channel();
        let writer = SpoolWriter::start("test-writer".into(), Channel(Mutex::new(tell))).unwrap();
        let file = Arc::new(tempfile::tempfile().unwrap());
        let progress = Arc::new(WriteProgress::default());
        writer.write(Arc::clone(&file), 0, Arc::from(&b"hello "[..]), Arc::clone(&progress), owner());
        writer.write(Arc::clone(&file), 6, Arc::from(&b"world"[..]), Arc::clone(&progress), owner());
        for _ in 0..2 {
            assert_eq!(heard.recv_timeout(Duration::from_secs(5)).unwrap(), owner());
        }
        assert_eq!(progress.written(), 11);
        let mut buf = [0; 11];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello world");
    }

    #[test]
    fn past_the_loops_limit_spools_wait_and_are_told_when_there_is_room() {
        let (tell, heard) = mpsc::channel();
        let sink = Channel(Mutex::new(tell));
        let (writer, queue) = SpoolWriter::unstarted();
        let waiter = ConnectionId { loop_index: 0, slot: 5, serial: 1 };
        assert!(writer.has_room(waiter));
        let file = Arc::new(tempfile::tempfile().unwrap());
        let progress = Arc::new(WriteProgress::default());
        let chunk: Arc<[u8]> = Arc::from(vec![7u8; MAX_UNCONFIRMED as usize]);
        let chunks = LOOP_MAX_UNCONFIRMED / MAX_UNCONFIRMED + 1;
        for index in 0..chunks {
            writer.write(
                Arc::clone(&file),
                index * MAX_UNCONFIRMED,
                Arc::clone(&chunk),
                Arc::clone(&progress),
                owner(),
            );
        }
        assert_eq!(writer.unconfirmed(), chunks * (MAX_UNCONFIRMED + JOB_OVERHEAD), "each job's overhead counts");
        assert_eq!(writer.jobs(), chunks);
        assert_eq!(progress.held(), chunks * (MAX_UNCONFIRMED + JOB_OVERHEAD));
        assert!(!writer.has_room(waiter), "the loop's limit is reached");
        assert!(!writer.has_room(waiter), "asking twice");

        process(queue.recv().unwrap(), &sink, &writer.in_flight);
        assert_eq!(heard.try_recv(), Ok(owner()), "the write's own spool hears of it");
        assert!(heard.try_recv().is_err(), "still at the limit: the waiter keeps waiting");
        process(queue.recv().unwrap(), &sink, &writer.in_flight);
        assert_eq!(heard.try_iter().collect::<Vec<_>>(), vec![owner(), waiter], "below it: told once");
        assert!(writer.has_room(waiter));
        while let Ok(job) = queue.try_recv() {
            process(job, &sink, &writer.in_flight);
        }
        assert_eq!((writer.unconfirmed(), writer.jobs(), progress.held()), (0, 0, 0));
        assert_eq!(progress.written(), chunks * MAX_UNCONFIRMED);
    }

    #[test]
    fn a_failed_write_is_kept_for_the_spool() {
        let (tell, heard) = mpsc::channel();
        let writer = SpoolWriter::start("test-writer".into(), Channel(Mutex::new(tell))).unwrap();
        let full = Arc::new(File::options().write(true).open("/dev/full").unwrap());
        let progress = Arc::new(WriteProgress::default());
        writer.write(full, 0, Arc::from(vec![0; 4096]), Arc::clone(&progress), owner());
        heard.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(progress.failed());
        assert_eq!(progress.take_error().unwrap().raw_os_error(), Some(libc::ENOSPC));
    }
}
