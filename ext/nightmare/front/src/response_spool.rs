//! Where a response waits for a slow client: a small memory buffer, then an
//! unlinked temp file, so the worker is read as fast as it writes whatever
//! the client's speed (lazy buffering: only what the client cannot take now
//! is kept). The file drains to the client with sendfile.
//!
//! Bytes leave in the order they came: the memory holds the oldest, the
//! file the newer ones, and nothing goes to memory while the file still has
//! bytes to send.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use crate::listener::ClientStream;
use crate::relay::{RelayBuffer, ResponseSink};
use crate::socket_io::{WriteOutcome, send_file, write_some};

#[derive(Debug)]
struct SpoolFile {
    file: File,
    written: u64,
    sent: u64,
}

#[derive(Debug)]
pub struct ResponseSpool {
    memory: RelayBuffer,
    file: Option<SpoolFile>,
    temp_path: PathBuf,
    /// Bytes the file may hold (nginx's proxy_max_temp_file_size); 0 means
    /// no file: the worker waits for the client instead.
    max_file: u64,
    /// The first error writing the file; from then on, memory only.
    file_error: Option<io::Error>,
}

impl ResponseSpool {
    pub fn new(memory: usize, temp_path: PathBuf, max_file: u64) -> Self {
        ResponseSpool { memory: RelayBuffer::new(memory), file: None, temp_path, max_file, file_error: None }
    }

    /// This response is passed without a file (`X-Accel-Buffering: no`):
    /// the worker is read only as fast as the client reads.
    pub fn disable_file(&mut self) {
        self.max_file = 0;
    }

    /// How many bytes may be read from the worker now; 0 means the worker
    /// must wait for the client.
    pub fn room(&self) -> usize {
        let file_room = match (&self.file_error, &self.file) {
            (Some(_), _) => 0,
            (None, Some(spool)) => self.max_file.saturating_sub(spool.written),
            (None, None) => self.max_file,
        };
        let file_room = usize::try_from(file_room).unwrap_or(usize::MAX);
        if self.file_pending() { file_room } else { self.memory.room().saturating_add(file_room) }
    }

    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && !self.file_pending()
    }

    /// Bytes waiting in the file (for the tests and the logs).
    pub fn file_bytes(&self) -> u64 {
        self.file.as_ref().map_or(0, |spool| spool.written - spool.sent)
    }

    /// The error that stopped the file being used, once.
    pub fn take_file_error(&mut self) -> Option<io::Error> {
        self.file_error.take().inspect(|_| self.max_file = 0)
    }

    /// Writes what the client takes now: memory first, then the file.
    pub fn write_to(&mut self, client: &mut ClientStream) -> WriteOutcome {
        if !self.memory.is_empty() {
            let outcome = write_some(client, self.memory.pending());
            if let WriteOutcome::Wrote(n) = outcome {
                self.memory.consumed(n);
            }
            return outcome;
        }
        let Some(spool) = &mut self.file else { return WriteOutcome::Wrote(0) };
        let before = spool.sent;
        let remaining = spool.written - spool.sent;
        let outcome = send_file(client.as_fd(), spool.file.as_fd(), &mut spool.sent, remaining);
        if let WriteOutcome::Wrote(_) = outcome {
            let sent = spool.sent - before;
            if spool.sent == spool.written {
                // Drained: start over at the beginning of the same file, so a
                // long stream does not grow it without end.
                let _ = spool.file.set_len(0);
                spool.written = 0;
                spool.sent = 0;
            }
            return WriteOutcome::Wrote(sent as usize);
        }
        outcome
    }

    fn file_pending(&self) -> bool {
        self.file.as_ref().is_some_and(|spool| spool.written > spool.sent)
    }

    fn append_to_file(&mut self, data: &[u8]) -> io::Result<()> {
        let spool = match &mut self.file {
            Some(spool) => spool,
            None => self.file.insert(SpoolFile { file: tempfile::tempfile_in(&self.temp_path)?, written: 0, sent: 0 }),
        };
        spool.file.write_all(data)?;
        spool.written += data.len() as u64;
        Ok(())
    }
}

impl ResponseSink for ResponseSpool {
    /// Appends response bytes. Never fails: if the file cannot take them,
    /// they stay in memory (beyond its budget by this once) and the file is
    /// not used again, so the worker simply waits for the client.
    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if !self.file_pending() && (self.memory.room() >= data.len() || self.max_file == 0) {
            self.memory.push(data);
            return;
        }
        if let Err(error) = self.append_to_file(data) {
            self.file_error.get_or_insert(error);
            self.max_file = 0;
            self.memory.push(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn pair() -> (ClientStream, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (ClientStream::Unix(mio::net::UnixStream::from_std(ours)), theirs)
    }

    fn drain(spool: &mut ResponseSpool, client: &mut ClientStream, peer: &mut UnixStream) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = [0; 4096];
        while !spool.is_empty() {
            assert!(matches!(spool.write_to(client), WriteOutcome::Wrote(_)));
            peer.set_nonblocking(true).unwrap();
            while let Ok(n) = peer.read(&mut buf) {
                received.extend_from_slice(&buf[..n]);
            }
        }
        received
    }

    #[test]
    fn overflow_goes_to_a_file_and_comes_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = ResponseSpool::new(8, dir.path().into(), 1 << 20);
        let mut expected = Vec::new();
        for i in 0..50u8 {
            let piece = [i; 5];
            assert!(spool.room() >= piece.len());
            spool.push(&piece);
            expected.extend_from_slice(&piece);
        }
        assert!(spool.file_bytes() > 0, "what did not fit in memory waits in the file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the file has no name");
        let (mut client, mut peer) = pair();
        assert_eq!(drain(&mut spool, &mut client, &mut peer), expected);
        assert_eq!(spool.file_bytes(), 0);
    }

    #[test]
    fn bytes_arriving_while_the_file_drains_stay_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = ResponseSpool::new(4, dir.path().into(), 1 << 20);
        spool.push(b"abcd");
        spool.push(b"efgh");
        let (mut client, mut peer) = pair();
        assert!(matches!(spool.write_to(&mut client), WriteOutcome::Wrote(4)), "memory first");
        spool.push(b"ij");
        assert_eq!(drain(&mut spool, &mut client, &mut peer), b"abcdefghij", "ij waits behind the file's efgh");
    }

    #[test]
    fn file_limit_and_disabled_file_make_the_worker_wait() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = ResponseSpool::new(4, dir.path().into(), 10);
        assert_eq!(spool.room(), 14);
        spool.push(b"abcd");
        spool.push(&[b'x'; 10]);
        assert_eq!(spool.room(), 0, "max_temp_file_size reached");

        let mut unbuffered = ResponseSpool::new(4, dir.path().into(), 10);
        unbuffered.disable_file();
        assert_eq!(unbuffered.room(), 4);
        unbuffered.push(b"abcd");
        assert_eq!(unbuffered.room(), 0);
    }

    #[test]
    fn a_file_that_cannot_be_made_turns_into_back_pressure() {
        let mut spool = ResponseSpool::new(4, "/nonexistent/nightmare".into(), 1 << 20);
        spool.push(b"abcd");
        spool.push(b"efgh");
        assert!(spool.take_file_error().is_some());
        assert_eq!(spool.room(), 0, "nothing more is read until the client drains");
        let (mut client, mut peer) = pair();
        assert_eq!(drain(&mut spool, &mut client, &mut peer), b"abcdefgh", "nothing is lost");
    }
}
