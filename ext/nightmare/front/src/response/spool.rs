//! Where a response waits for a slow client: a small memory buffer, then an
//! unlinked temp file, so the worker is read as fast as it writes whatever
//! the client's speed (lazy buffering: only what the client cannot take now
//! is kept, and the file only once the client has not taken everything). The file is written by the loop's spool writer thread and
//! drains to the client with sendfile, as far as the writer has written.
//!
//! Bytes leave in the order they came: the memory holds the oldest, the
//! file the newer ones, and nothing goes to memory while the file still has
//! bytes to send. Until the writer confirms a range, the spool keeps a copy
//! of it: if the disk fails, those bytes move to a tail buffer behind the
//! file's written part, nothing is lost, and the worker simply waits for the
//! client from then on.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::byte_queue::{ByteQueue, ResponseSink};
use crate::connection_id::ConnectionId;
use crate::net::client_stream::ClientStream;
use crate::net::socket_io::{WriteOutcome, write_some};
use crate::spool_writer::{MAX_UNCONFIRMED, SpoolWriter, WriteProgress};
use crate::temp_budget::TempShare;

#[derive(Debug)]
struct SpoolFile {
    file: Arc<File>,
    /// Bytes handed to the writer (or written, without one).
    queued: u64,
    sent: u64,
    progress: Arc<WriteProgress>,
    /// Copies of what the writer has not confirmed, by offset.
    unconfirmed: VecDeque<(u64, Arc<[u8]>)>,
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        self.progress.cancel();
    }
}

impl SpoolFile {
    fn forget_confirmed(&mut self) {
        let written = self.progress.written();
        while self.unconfirmed.front().is_some_and(|(offset, data)| offset + data.len() as u64 <= written) {
            self.unconfirmed.pop_front();
        }
    }
}

#[derive(Debug)]
pub struct ResponseSpool {
    memory: ByteQueue,
    file: Option<SpoolFile>,
    /// Bytes that came after the file's written part once the file failed.
    tail: ByteQueue,
    temp_path: Arc<Path>,
    /// Bytes the file may hold (nginx's proxy_max_temp_file_size); 0 means
    /// no file: the worker waits for the client instead.
    max_file: u64,
    /// The file's part of the temp budget: it grows only as the budget
    /// allows, and when it cannot the worker waits, as at max_file.
    share: TempShare,
    file_error: Option<io::Error>,
    file_failed: bool,
    /// The last `room` was 0 for want of temp budget.
    budget_bound: bool,
    /// The last `room` allowed the file: without, what was read goes to
    /// memory even past its size (a chunk-size line pushed before the data).
    spill: bool,
    /// The loop's writer and this connection's identity; without a writer
    /// the file is written in place (tests).
    writer: Option<(SpoolWriter, ConnectionId)>,
}

impl ResponseSpool {
    pub fn new(
        memory: usize,
        temp_path: Arc<Path>,
        max_file: u64,
        share: TempShare,
        writer: Option<(SpoolWriter, ConnectionId)>,
    ) -> Self {
        ResponseSpool {
            memory: ByteQueue::new(memory),
            file: None,
            tail: ByteQueue::new(memory),
            temp_path,
            max_file,
            share,
            file_error: None,
            file_failed: false,
            budget_bound: false,
            spill: true,
            writer,
        }
    }

    /// Drops everything held (the client left): the temp file goes now.
    pub fn discard_all(&mut self) {
        self.memory = ByteQueue::new(0);
        self.tail = ByteQueue::new(0);
        self.file = None;
        self.share.release();
        self.max_file = 0;
    }

    /// This response is passed without a file (`X-Accel-Buffering: no`):
    /// the worker is read only as fast as the client reads.
    pub fn disable_file(&mut self) {
        self.max_file = 0;
    }

    /// How many bytes may be read from the worker now; 0 means the worker
    /// must wait (for the client, or for the disk). Without `spill`, only
    /// what memory takes: while the client takes everything it is given,
    /// bytes go to it through memory, and a copy to the disk and back
    /// would only cost (it measured a quarter of the front's CPU on 1 MiB
    /// HTTP/2 downloads); the file is for what a client cannot take.
    pub fn room(&mut self, spill: bool) -> usize {
        self.catch_up_with_writer();
        self.budget_bound = false;
        self.spill = spill;
        if self.file_failed {
            return if self.file_unsent() > 0 { 0 } else { self.tail.room() };
        }
        if !spill {
            return if self.file_unsent() > 0 { 0 } else { self.memory.room() };
        }
        let (queued, wanted) = match &self.file {
            Some(spool) => (
                spool.queued,
                // What the writer holds for this spool, each job's overhead counted.
                self.max_file.saturating_sub(spool.queued).min(MAX_UNCONFIRMED.saturating_sub(spool.progress.held())),
            ),
            None => (0, self.max_file.min(MAX_UNCONFIRMED)),
        };
        let file_room = self.share.could_cover(queued + wanted).saturating_sub(queued).min(wanted);
        self.budget_bound = wanted > 0 && file_room == 0;
        // The loop's spools together hold their limit of copies: this one
        // takes nothing for its file until the writer says there is room.
        let loop_full = file_room > 0 && self.writer.as_ref().is_some_and(|(writer, owner)| !writer.has_room(*owner));
        let file_room = if loop_full { 0 } else { usize::try_from(file_room).unwrap_or(usize::MAX) };
        if self.file_unsent() > 0 { file_room } else { self.memory.room().saturating_add(file_room) }
    }

    /// The last `room` was held down by the spent temp budget alone: the
    /// file could grow, were it not for the other files.
    pub fn waits_for_budget(&self) -> bool {
        self.budget_bound
    }

    /// The client took `count` bytes at `now`: its pace, for shedding (0:
    /// what it waits for waits on the disk, not on it).
    pub fn note_taken(&mut self, count: usize, now: std::time::Instant) {
        self.share.note_taken(count as u64, now);
        self.share.note_unsent(self.file_unsent());
    }

    /// The front chose to shed this response's client (see `shedding`).
    pub fn is_shed(&self) -> bool {
        self.share.is_shed()
    }

    pub fn is_empty(&mut self) -> bool {
        self.catch_up_with_writer();
        self.memory.is_empty() && self.file_unsent() == 0 && self.tail.is_empty()
    }

    /// Bytes waiting in the file.
    #[cfg(test)]
    fn file_bytes(&self) -> u64 {
        self.file_unsent()
    }

    /// The error that stopped the file being used, once.
    pub fn take_file_error(&mut self) -> Option<io::Error> {
        self.catch_up_with_writer();
        self.file_error.take()
    }

    /// Writes what the client takes now: memory, then the file as far as
    /// it is written, then the tail. `Wrote(0)` means waiting for the disk.
    pub fn write_to(&mut self, client: &mut ClientStream) -> WriteOutcome {
        self.catch_up_with_writer();
        if !self.memory.is_empty() {
            let outcome = write_some(client, self.memory.pending());
            if let WriteOutcome::Wrote(n) = outcome {
                self.memory.consumed(n);
            }
            return outcome;
        }
        if self.file_unsent() > 0 {
            return self.send_from_file(client);
        }
        if !self.tail.is_empty() {
            let outcome = write_some(client, self.tail.pending());
            if let WriteOutcome::Wrote(n) = outcome {
                self.tail.consumed(n);
            }
            return outcome;
        }
        WriteOutcome::Wrote(0)
    }

    fn send_from_file(&mut self, client: &mut ClientStream) -> WriteOutcome {
        let Some(spool) = &mut self.file else { return WriteOutcome::Wrote(0) };
        let written = spool.progress.written().min(spool.queued);
        if spool.sent >= written {
            return WriteOutcome::Wrote(0); // the writer has not got this far yet
        }
        let before = spool.sent;
        let outcome = client.send_file(&spool.file, &mut spool.sent, written - before);
        let WriteOutcome::Wrote(_) = outcome else { return outcome };
        let sent = spool.sent - before;
        spool.forget_confirmed();
        if spool.sent == spool.queued && spool.unconfirmed.is_empty() && !self.file_failed {
            // Drained: start over at the beginning of the same file, so a
            // long stream does not grow it without end.
            let _ = spool.file.set_len(0);
            spool.progress.reset();
            spool.queued = 0;
            spool.sent = 0;
            self.share.release();
        }
        WriteOutcome::Wrote(sent as usize)
    }

    /// Bytes handed to the writer that the client cannot have yet: while
    /// they are all that is left, any wait is the disk's, not the client's.
    pub fn waiting_for_disk(&self) -> bool {
        self.memory.is_empty()
            && self.file.as_ref().is_some_and(|spool| spool.sent >= spool.progress.written().min(spool.queued))
            && self.file_unsent() > 0
    }

    /// Bytes of the file not yet sent to the client (written or not).
    fn file_unsent(&self) -> u64 {
        self.file.as_ref().map_or(0, |spool| spool.queued - spool.sent.min(spool.queued))
    }

    /// Drops the copies the writer has confirmed; and if the writer failed,
    /// its unconfirmed copies become the tail (they follow what the file did
    /// get), and the file takes nothing more. Runs wherever the spool is
    /// looked at: a slow reader may not drain the file for a long time, and
    /// its copies must not pile up meanwhile.
    fn catch_up_with_writer(&mut self) {
        let Some(spool) = &mut self.file else { return };
        if !self.file_failed {
            spool.forget_confirmed();
        }
        if self.file_failed || !spool.progress.failed() {
            return;
        }
        self.file_failed = true;
        self.max_file = 0;
        self.file_error = spool.progress.take_error();
        let written = spool.progress.written().min(spool.queued);
        for (offset, data) in spool.unconfirmed.drain(..) {
            let skip = written.saturating_sub(offset).min(data.len() as u64) as usize;
            self.tail.push(&data[skip..]);
        }
        spool.queued = written;
    }

    fn append_to_file(&mut self, data: &[u8]) -> io::Result<()> {
        let spool = match &mut self.file {
            Some(spool) => spool,
            None => self.file.insert(SpoolFile {
                file: Arc::new(tempfile::tempfile_in(&self.temp_path)?),
                queued: 0,
                sent: 0,
                progress: Arc::new(WriteProgress::default()),
                unconfirmed: VecDeque::new(),
            }),
        };
        let offset = spool.queued;
        self.share.cover_anyway(offset + data.len() as u64);
        match &self.writer {
            Some((writer, owner)) => {
                let copy: Arc<[u8]> = Arc::from(data);
                spool.unconfirmed.push_back((offset, Arc::clone(&copy)));
                writer.write(Arc::clone(&spool.file), offset, copy, Arc::clone(&spool.progress), *owner);
            }
            None => {
                spool.file.write_all_at(data, offset)?;
                spool.progress.advance_to(offset + data.len() as u64);
            }
        }
        spool.queued += data.len() as u64;
        self.share.note_unsent(self.file_unsent());
        Ok(())
    }
}

impl ResponseSink for ResponseSpool {
    /// Appends response bytes. Never fails: bytes the file cannot take stay
    /// in memory (beyond its budget by this once) and the file is not used
    /// again, so the worker simply waits for the client.
    fn push(&mut self, data: &[u8]) {
        self.catch_up_with_writer();
        if data.is_empty() {
            return;
        }
        if self.file_failed {
            self.tail.push(data);
            return;
        }
        // Memory, beyond its size by this once, rather than a new file the
        // temp budget cannot cover: room() let this read in for memory (a
        // chunk-size line pushed first can leave the data just short of it).
        let budget_spent = || {
            let wanted = self.file.as_ref().map_or(0, |spool| spool.queued) + data.len() as u64;
            self.share.could_cover(wanted) < wanted
        };
        let memory_fits = self.memory.room() >= data.len() || !self.spill;
        if self.file_unsent() == 0 && (memory_fits || self.max_file == 0 || budget_spent()) {
            self.memory.push(data);
            return;
        }
        if let Err(error) = self.append_to_file(data) {
            self.file_error.get_or_insert(error);
            self.file_failed = true;
            self.max_file = 0;
            self.tail.push(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::spool_writer::WrittenSink;

    fn unlimited() -> TempShare {
        TempShare::new(&crate::temp_budget::TempBudget::new(0))
    }

    fn pair() -> (ClientStream, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (ClientStream::Unix(mio::net::UnixStream::from_std(ours)), theirs)
    }

    /// Sends everything to the peer, waiting for the writer when needed.
    fn drain(spool: &mut ResponseSpool, client: &mut ClientStream, peer: &mut UnixStream) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = [0; 4096];
        peer.set_nonblocking(true).unwrap();
        for _ in 0..100_000 {
            if spool.is_empty() {
                break;
            }
            match spool.write_to(client) {
                WriteOutcome::Wrote(0) => std::thread::sleep(Duration::from_millis(1)),
                WriteOutcome::Wrote(_) | WriteOutcome::WouldBlock => {}
                other => panic!("unexpected {other:?}"),
            }
            while let Ok(n) = peer.read(&mut buf) {
                received.extend_from_slice(&buf[..n]);
            }
        }
        assert!(spool.is_empty(), "drained");
        received
    }

    struct Channel(Mutex<mpsc::Sender<ConnectionId>>);

    impl WrittenSink for Channel {
        fn written(&self, owner: ConnectionId) {
            let _ = self.0.lock().unwrap().send(owner);
        }
    }

    fn threaded(dir: &std::path::Path, memory: usize) -> ResponseSpool {
        let (tell, _heard) = mpsc::channel();
        let writer = SpoolWriter::start("test-writer".into(), Channel(Mutex::new(tell))).unwrap();
        let owner = ConnectionId { loop_index: 0, slot: 0, serial: 1 };
        ResponseSpool::new(memory, Arc::from(dir), 1 << 20, unlimited(), Some((writer, owner)))
    }

    #[test]
    fn overflow_goes_to_a_file_and_comes_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for mut spool in
            [ResponseSpool::new(8, Arc::from(dir.path()), 1 << 20, unlimited(), None), threaded(dir.path(), 8)]
        {
            let mut expected = Vec::new();
            for i in 0..50u8 {
                let piece = [i; 5];
                assert!(spool.room(true) >= piece.len());
                spool.push(&piece);
                expected.extend_from_slice(&piece);
            }
            assert!(spool.file_bytes() > 0, "what did not fit in memory waits in the file");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the file has no name");
            let (mut client, mut peer) = pair();
            assert_eq!(drain(&mut spool, &mut client, &mut peer), expected);
            assert_eq!(spool.file_bytes(), 0);
        }
    }

    #[test]
    fn bytes_arriving_while_the_file_drains_stay_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = ResponseSpool::new(4, Arc::from(dir.path()), 1 << 20, unlimited(), None);
        spool.push(b"abcd");
        spool.push(b"efgh");
        let (mut client, mut peer) = pair();
        assert!(matches!(spool.write_to(&mut client), WriteOutcome::Wrote(4)), "memory first");
        spool.push(b"ij");
        assert_eq!(drain(&mut spool, &mut client, &mut peer), b"abcdefghij", "ij waits behind the file's efgh");
    }

    #[test]
    fn a_client_taking_everything_gets_it_through_memory_and_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = ResponseSpool::new(4, Arc::from(dir.path()), 1 << 20, unlimited(), None);
        assert_eq!(spool.room(false), 4, "memory only while the client takes everything");
        spool.push(b"ab");
        assert_eq!(spool.room(false), 2);
        spool.push(b"cdef");
        assert_eq!(spool.file_bytes(), 0, "past memory's size by a chunk line, still no file");
        assert_eq!(spool.room(false), 0);
        assert!(spool.room(true) > 0, "once the client blocks, the file takes the rest");
        spool.push(b"gh");
        assert_eq!(spool.file_bytes(), 2);
        assert_eq!(spool.room(false), 0, "the file drains before memory takes more");
    }

    #[test]
    fn file_limit_and_disabled_file_make_the_worker_wait() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = ResponseSpool::new(4, Arc::from(dir.path()), 10, unlimited(), None);
        assert_eq!(spool.room(true), 14);
        spool.push(b"abcd");
        spool.push(&[b'x'; 10]);
        assert_eq!(spool.room(true), 0, "max_temp_file_size reached");

        let mut unbuffered = ResponseSpool::new(4, Arc::from(dir.path()), 10, unlimited(), None);
        unbuffered.disable_file();
        assert_eq!(unbuffered.room(true), 4);
        unbuffered.push(b"abcd");
        assert_eq!(unbuffered.room(true), 0);
    }

    #[test]
    fn a_spent_temp_budget_makes_the_worker_wait_until_a_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let budget = crate::temp_budget::TempBudget::new(100);
        let mut first = ResponseSpool::new(4, Arc::from(dir.path()), 1 << 20, TempShare::new(&budget), None);
        assert_eq!(first.room(true), 104, "memory and what the budget allows");
        first.push(b"abcd");
        first.push(&[b'x'; 100]);
        assert_eq!(first.room(true), 0);
        let mut second = ResponseSpool::new(4, Arc::from(dir.path()), 1 << 20, TempShare::new(&budget), None);
        assert_eq!(second.room(true), 4, "memory only: the budget is spent");
        assert_eq!(budget.taken(), 100, "asking for room takes none");
        drop(first);
        assert_eq!(second.room(true), 104, "the first file gave its share back");
    }

    #[test]
    fn with_the_budget_spent_a_push_past_memory_stays_in_memory_and_a_drained_file_gives_its_share_back() {
        let dir = tempfile::tempdir().unwrap();
        let budget = crate::temp_budget::TempBudget::new(100);
        let mut other = TempShare::new(&budget);
        other.cover(100);
        let mut spool = ResponseSpool::new(4, Arc::from(dir.path()), 1 << 20, TempShare::new(&budget), None);
        assert_eq!(spool.room(true), 4);
        spool.push(b"3\r\n");
        spool.push(b"abc"); // a chunk's data after its size line: past memory by this once
        assert_eq!(spool.file_bytes(), 0, "no file the budget cannot cover");
        assert_eq!(budget.taken(), 100);
        drop(other);

        let mut spool = ResponseSpool::new(4, Arc::from(dir.path()), 1 << 20, TempShare::new(&budget), None);
        spool.push(b"abcd");
        spool.push(&[b'x'; 50]);
        assert_eq!(budget.taken(), 50);
        let (mut client, mut peer) = pair();
        assert_eq!(drain(&mut spool, &mut client, &mut peer).len(), 54);
        assert_eq!(budget.taken(), 0, "the drained file is truncated and its share returned");
    }

    #[test]
    fn a_file_that_cannot_be_made_turns_into_back_pressure() {
        let mut spool =
            ResponseSpool::new(4, Arc::from(Path::new("/nonexistent/nightmare")), 1 << 20, unlimited(), None);
        spool.push(b"abcd");
        spool.push(b"efgh");
        assert!(spool.take_file_error().is_some());
        let (mut client, mut peer) = pair();
        assert_eq!(drain(&mut spool, &mut client, &mut peer), b"abcdefgh", "nothing is lost");
    }

    #[test]
    fn confirmed_copies_are_dropped_even_if_the_client_takes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = threaded(dir.path(), 4);
        spool.push(b"abcd");
        for _ in 0..200 {
            for _ in 0..1000 {
                if spool.room(true) >= 4096 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            spool.push(&[7; 4096]);
        }
        let held: usize = spool.file.as_ref().unwrap().unconfirmed.iter().map(|(_, data)| data.len()).sum();
        assert!(held as u64 <= MAX_UNCONFIRMED + 4096, "{held} bytes of copies held");
    }

    #[test]
    fn a_disk_that_fails_under_the_writer_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = threaded(dir.path(), 4);
        spool.push(b"abcd");
        // The spool's file is one that cannot be written, as a full disk.
        spool.file = Some(SpoolFile {
            file: Arc::new(File::options().write(true).open("/dev/full").unwrap()),
            queued: 0,
            sent: 0,
            progress: Arc::new(WriteProgress::default()),
            unconfirmed: VecDeque::new(),
        });
        spool.push(b"efgh");
        spool.push(b"ijkl");
        let (mut client, mut peer) = pair();
        assert_eq!(drain(&mut spool, &mut client, &mut peer), b"abcdefghijkl");
        assert_eq!(spool.take_file_error().and_then(|e| e.raw_os_error()), Some(libc::ENOSPC));
        assert!(spool.take_file_error().is_none(), "reported once");
    }
}
