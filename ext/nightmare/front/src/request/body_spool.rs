//! Where a request body waits for a worker: memory up to a small threshold,
//! then an unlinked temp file, so a 100 MiB upload costs disk (or tmpfs),
//! not the front's memory.
//!
//! The client chooses how small the pieces are (a chunked body of 1-byte
//! chunks decodes to one piece per byte), so bytes bound for the file are
//! gathered and handed to the writer once per read (`flush`) or per
//! `GATHER_LIMIT`: one job and one `pwrite` for a read's worth of chunks,
//! not one per chunk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::connection_id::ConnectionId;
use crate::spool_writer::{MAX_UNCONFIRMED, SpoolWriter, WriteProgress};
use crate::temp_budget::{TempBudget, TempShare};

/// Gathered bytes go to the writer once they reach this, within a read:
/// a read is at most the loop's 64 KiB scratch, so usually once per read.
const GATHER_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
pub struct BodySpool {
    memory: Vec<u8>,
    file: Option<BodyFile>,
    length: u64,
    memory_limit: usize,
    temp_path: Arc<Path>,
    share: TempShare,
    /// The loop's writer and this connection's identity: the file is
    /// written off the loop. Without one it is written in place (tests).
    writer: Option<(SpoolWriter, ConnectionId)>,
}

/// The temp file and how far its writes have got.
#[derive(Debug)]
struct BodyFile {
    file: Arc<File>,
    /// Bytes handed to the writer (or written, without one).
    queued: u64,
    /// Bytes after `queued`, gathered for the next write.
    gathered: Vec<u8>,
    progress: Arc<WriteProgress>,
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        // Writes still queued for a body that went (its client left) are skipped.
        self.progress.cancel();
    }
}

impl BodyFile {
    fn unconfirmed(&self) -> u64 {
        self.queued - self.progress.written().min(self.queued) + self.gathered.len() as u64
    }
}

/// Why a body could not be stored.
#[derive(Debug)]
pub enum SpoolError {
    /// temp_path_max_size is reached: a passing state, worth a retry.
    BudgetSpent,
    /// The file could not be made or written (a full temp_path, most likely).
    Io(io::Error),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::BudgetSpent => f.write_str("temp_path_max_size reached"),
            SpoolError::Io(error) => error.fmt(f),
        }
    }
}

impl From<io::Error> for SpoolError {
    fn from(error: io::Error) -> Self {
        SpoolError::Io(error)
    }
}

/// A finished body, ready to be sent to a worker.
#[derive(Debug)]
pub enum SpooledBody {
    Memory(Vec<u8>),
    /// The file holds `length` bytes from offset 0; `share` is its part of
    /// the temp budget, given back when the file goes.
    File {
        file: Arc<File>,
        length: u64,
        share: TempShare,
    },
}

impl SpooledBody {
    pub fn len(&self) -> u64 {
        match self {
            SpooledBody::Memory(bytes) => bytes.len() as u64,
            SpooledBody::File { length, .. } => *length,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BodySpool {
    /// `expected` is the Content-Length when known: a body that will not fit
    /// in memory goes straight to a file instead of being copied there later.
    pub fn new(
        memory_limit: usize,
        temp_path: &Arc<Path>,
        expected: Option<u64>,
        budget: &Arc<TempBudget>,
        writer: Option<(SpoolWriter, ConnectionId)>,
    ) -> Self {
        let initial = match expected {
            Some(length) if length <= memory_limit as u64 => length as usize,
            _ => 0,
        };
        BodySpool {
            memory: Vec::with_capacity(initial),
            file: None,
            length: 0,
            memory_limit,
            temp_path: Arc::clone(temp_path),
            share: TempShare::new(budget),
            writer,
        }
    }

    /// A spool that writes to `file` from the start, in place; tests use it
    /// to reach a real ENOSPC (`/dev/full`).
    pub fn with_file(file: File) -> Self {
        BodySpool {
            memory: Vec::new(),
            file: Some(BodyFile { file: Arc::new(file), queued: 0, gathered: Vec::new(), progress: Arc::default() }),
            length: 0,
            memory_limit: 0,
            temp_path: Arc::from(Path::new("")),
            share: TempShare::new(&TempBudget::new(0)),
            writer: None,
        }
    }

    pub fn len(&self) -> u64 {
        self.length
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    #[cfg(test)]
    fn is_on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// How many more body bytes may be read from the client now: while the
    /// body goes to a file, no more than the writer can take (per body, and
    /// for the loop's spools together, each job's overhead counted); 0
    /// means wait for the writer, which tells the connection when it has
    /// written.
    pub fn room(&self) -> usize {
        let Some(body_file) = &self.file else { return usize::MAX };
        let Some((writer, owner)) = &self.writer else { return usize::MAX };
        let held = body_file.progress.held() + body_file.gathered.len() as u64;
        let room = MAX_UNCONFIRMED.saturating_sub(held);
        if room == 0 || !writer.has_room(*owner) {
            return 0;
        }
        usize::try_from(room).unwrap_or(usize::MAX)
    }

    /// Every byte is in memory or written to the file.
    pub fn is_stored(&self) -> bool {
        self.file.as_ref().is_none_or(|body_file| body_file.unconfirmed() == 0)
    }

    /// A write the writer could not make: the body cannot be stored.
    pub fn failure(&self) -> Option<SpoolError> {
        let body_file = self.file.as_ref()?;
        body_file.progress.failed().then(|| {
            SpoolError::Io(
                body_file.progress.take_error().unwrap_or_else(|| io::Error::other("temp file write failed")),
            )
        })
    }

    /// Appends body bytes. An error leaves the spool unusable; the request
    /// it belongs to must be answered 5xx.
    pub fn write(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        if data.is_empty() {
            return Ok(());
        }
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        let to_file = self.file.is_some() || self.memory.len() + data.len() > self.memory_limit;
        let length = self.length + data.len() as u64;
        if to_file && self.share.cover(length) < length {
            return Err(SpoolError::BudgetSpent);
        }
        if to_file {
            if self.file.is_none() {
                let file = tempfile::tempfile_in(&self.temp_path)?;
                let gathered = std::mem::take(&mut self.memory);
                self.file = Some(BodyFile { file: Arc::new(file), queued: 0, gathered, progress: Arc::default() });
            }
            self.gather(data)?;
        } else {
            self.memory.extend_from_slice(data);
        }
        self.length += data.len() as u64;
        Ok(())
    }

    /// Adds `data` to what waits for the file; a large piece with nothing
    /// gathered before it goes as it is, without the extra copy. Without a
    /// writer everything is written at once, in place.
    fn gather(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(body_file) = &mut self.file else { return Ok(()) };
        if body_file.gathered.is_empty() && data.len() >= GATHER_LIMIT {
            return self.append_to_file(data);
        }
        body_file.gathered.extend_from_slice(data);
        if self.writer.is_none() || body_file.gathered.len() >= GATHER_LIMIT { self.flush() } else { Ok(()) }
    }

    /// Hands what was gathered to the writer: the end of a read's bytes.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(body_file) = &mut self.file else { return Ok(()) };
        if body_file.gathered.is_empty() {
            return Ok(());
        }
        let gathered = std::mem::take(&mut body_file.gathered);
        self.append_to_file(&gathered)
    }

    fn append_to_file(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(body_file) = &mut self.file else { return Ok(()) };
        if data.is_empty() {
            return Ok(());
        }
        let offset = body_file.queued;
        match &self.writer {
            Some((writer, owner)) => {
                let copy = Arc::from(data);
                writer.write(Arc::clone(&body_file.file), offset, copy, Arc::clone(&body_file.progress), *owner);
            }
            None => {
                body_file.file.write_all_at(data, offset)?;
                body_file.progress.advance_to(offset + data.len() as u64);
            }
        }
        body_file.queued += data.len() as u64;
        Ok(())
    }

    /// The body as a worker will get it; call once it `is_stored`.
    pub fn finish(self) -> SpooledBody {
        let BodySpool { memory, file, length, share, .. } = self;
        match file {
            Some(body_file) => SpooledBody::File { file: Arc::clone(&body_file.file), length, share },
            None => SpooledBody::Memory(memory),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    fn read_back(body: SpooledBody) -> Vec<u8> {
        match body {
            SpooledBody::Memory(bytes) => bytes,
            SpooledBody::File { file, length, .. } => {
                let mut bytes = Vec::new();
                (&*file).seek(SeekFrom::Start(0)).unwrap();
                (&*file).read_to_end(&mut bytes).unwrap();
                assert_eq!(bytes.len() as u64, length);
                bytes
            }
        }
    }

    #[test]
    fn small_body_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = BodySpool::new(16, &Arc::from(dir.path()), None, &TempBudget::new(0), None);
        spool.write(b"hello ").unwrap();
        spool.write(b"world").unwrap();
        assert!(!spool.is_on_disk());
        assert_eq!(read_back(spool.finish()), b"hello world");
    }

    #[test]
    fn growing_body_moves_to_an_unlinked_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = BodySpool::new(16, &Arc::from(dir.path()), None, &TempBudget::new(0), None);
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let piece = [i; 7];
            spool.write(&piece).unwrap();
            expected.extend_from_slice(&piece);
        }
        assert!(spool.is_on_disk());
        assert_eq!(spool.len(), 700);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temp file must have no name");
        assert_eq!(read_back(spool.finish()), expected);
    }

    #[test]
    fn known_large_body_goes_straight_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = BodySpool::new(16, &Arc::from(dir.path()), Some(1000), &TempBudget::new(0), None);
        spool.write(&[1; 17]).unwrap();
        assert!(spool.is_on_disk());
        let mut spool = BodySpool::new(16, &Arc::from(dir.path()), Some(10), &TempBudget::new(0), None);
        spool.write(&[1; 10]).unwrap();
        assert!(!spool.is_on_disk());
    }

    #[test]
    fn full_disk_is_an_error_not_a_panic() {
        let full = File::options().write(true).open("/dev/full").unwrap();
        let mut spool = BodySpool::with_file(full);
        let Err(SpoolError::Io(error)) = spool.write(&[0; 4096]) else { panic!("ENOSPC expected") };
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn a_spent_budget_refuses_a_file_but_not_memory() {
        let dir = tempfile::tempdir().unwrap();
        let budget = TempBudget::new(100);
        let mut small = BodySpool::new(16, &Arc::from(dir.path()), None, &budget, None);
        small.write(&[1; 16]).unwrap();
        let mut large = BodySpool::new(16, &Arc::from(dir.path()), None, &budget, None);
        large.write(&[2; 90]).unwrap();
        assert_eq!(budget.taken(), 90);
        assert!(matches!(large.write(&[2; 20]), Err(SpoolError::BudgetSpent)));
        let SpooledBody::Memory(bytes) = small.finish() else { panic!("memory expected") };
        assert_eq!(bytes, [1; 16]);
        drop(large);
        assert_eq!(budget.taken(), 0, "the share goes with the file");
    }

    #[test]
    fn with_a_writer_the_file_is_written_off_the_loop_and_reads_wait_for_it() {
        use std::sync::mpsc;
        struct Channel(std::sync::Mutex<mpsc::Sender<ConnectionId>>);
        impl crate::spool_writer::WrittenSink for Channel {
            fn written(&self, owner: ConnectionId) {
                let _ = self.0.lock().unwrap().send(owner);
            }
        }
        let (tell, heard) = mpsc::channel();
        let writer = SpoolWriter::start("test-body-writer".into(), Channel(std::sync::Mutex::new(tell))).unwrap();
        let owner = ConnectionId { loop_index: 0, slot: 1, serial: 1 };
        let dir = tempfile::tempdir().unwrap();
        let mut spool = BodySpool::new(16, &Arc::from(dir.path()), None, &TempBudget::new(0), Some((writer, owner)));
        assert_eq!(spool.room(), usize::MAX, "memory takes anything up to its size");
        let mut expected = Vec::new();
        for i in 0..64u8 {
            let piece = vec![i; 10_000];
            spool.write(&piece).unwrap();
            spool.flush().unwrap();
            expected.extend_from_slice(&piece);
            assert!(spool.room() <= MAX_UNCONFIRMED as usize, "no more than the writer may hold");
            while spool.room() == 0 {
                heard.recv_timeout(std::time::Duration::from_secs(5)).expect("the writer reports");
            }
        }
        while !spool.is_stored() {
            heard.recv_timeout(std::time::Duration::from_secs(5)).expect("the writer reports");
        }
        assert!(spool.failure().is_none());
        assert_eq!(read_back(spool.finish()), expected);
    }

    #[test]
    fn a_failed_write_off_the_loop_is_the_bodys_failure() {
        let mut spool = BodySpool::with_file(File::options().write(true).open("/dev/full").unwrap());
        assert!(spool.write(&[0; 10]).is_err(), "in place, at once");
        let dir = tempfile::tempdir().unwrap();
        let (writer, _heard) = {
            let (tell, heard) = std::sync::mpsc::channel::<ConnectionId>();
            struct Quiet(std::sync::Mutex<std::sync::mpsc::Sender<ConnectionId>>);
            impl crate::spool_writer::WrittenSink for Quiet {
                fn written(&self, owner: ConnectionId) {
                    let _ = self.0.lock().unwrap().send(owner);
                }
            }
            (SpoolWriter::start("test-body-writer".into(), Quiet(std::sync::Mutex::new(tell))).unwrap(), heard)
        };
        let owner = ConnectionId { loop_index: 0, slot: 2, serial: 1 };
        let mut spool = BodySpool::new(0, &Arc::from(dir.path()), None, &TempBudget::new(0), Some((writer, owner)));
        spool.write(b"fine").unwrap();
        spool.flush().unwrap();
        // The file under the spool fails from now on: a closed descriptor
        // stands in for a disk that breaks.
        let body_file = spool.file.as_mut().unwrap();
        body_file.file = Arc::new(File::open("/dev/null").unwrap());
        spool.write(b"this write fails: /dev/null is open for reading only").unwrap();
        spool.flush().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while spool.failure().is_none() {
            assert!(std::time::Instant::now() < deadline, "the failure is seen");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(matches!(spool.write(b"more"), Err(SpoolError::Io(_))));
    }

    #[test]
    fn missing_temp_path_is_an_error() {
        let mut spool =
            BodySpool::new(4, &Arc::from(Path::new("/nonexistent/nightmare")), None, &TempBudget::new(0), None);
        assert!(spool.write(b"more than four").is_err());
    }
}
