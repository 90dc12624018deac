//! Where a request body waits for a worker: memory up to a small threshold,
//! then an unlinked temp file, so a 100 MiB upload costs disk (or tmpfs),
//! not the front's memory.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use crate::temp_budget::{TempBudget, TempShare};

#[derive(Debug)]
pub struct BodySpool {
    memory: Vec<u8>,
    file: Option<File>,
    length: u64,
    memory_limit: usize,
    temp_path: Arc<Path>,
    share: TempShare,
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
        file: File,
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
    pub fn new(memory_limit: usize, temp_path: &Arc<Path>, expected: Option<u64>, budget: &Arc<TempBudget>) -> Self {
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
        }
    }

    /// A spool that writes to `file` from the start; tests use it to reach
    /// a real ENOSPC (`/dev/full`).
    pub fn with_file(file: File) -> Self {
        BodySpool {
            memory: Vec::new(),
            file: Some(file),
            length: 0,
            memory_limit: 0,
            temp_path: Arc::from(Path::new("")),
            share: TempShare::new(&TempBudget::new(0)),
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

    /// Appends body bytes. An error leaves the spool unusable; the request
    /// it belongs to must be answered 5xx.
    pub fn write(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        if data.is_empty() {
            return Ok(());
        }
        let to_file = self.file.is_some() || self.memory.len() + data.len() > self.memory_limit;
        let length = self.length + data.len() as u64;
        if to_file && self.share.cover(length) < length {
            return Err(SpoolError::BudgetSpent);
        }
        if self.file.is_none() && to_file {
            let mut file = tempfile::tempfile_in(&self.temp_path)?;
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(data)?,
            None => self.memory.extend_from_slice(data),
        }
        self.length += data.len() as u64;
        Ok(())
    }

    pub fn finish(self) -> SpooledBody {
        match self.file {
            Some(file) => SpooledBody::File { file, length: self.length, share: self.share },
            None => SpooledBody::Memory(self.memory),
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
            SpooledBody::File { mut file, length, .. } => {
                let mut bytes = Vec::new();
                file.seek(SeekFrom::Start(0)).unwrap();
                file.read_to_end(&mut bytes).unwrap();
                assert_eq!(bytes.len() as u64, length);
                bytes
            }
        }
    }

    #[test]
    fn small_body_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = BodySpool::new(16, &Arc::from(dir.path()), None, &TempBudget::new(0));
        spool.write(b"hello ").unwrap();
        spool.write(b"world").unwrap();
        assert!(!spool.is_on_disk());
        assert_eq!(read_back(spool.finish()), b"hello world");
    }

    #[test]
    fn growing_body_moves_to_an_unlinked_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = BodySpool::new(16, &Arc::from(dir.path()), None, &TempBudget::new(0));
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
        let mut spool = BodySpool::new(16, &Arc::from(dir.path()), Some(1000), &TempBudget::new(0));
        spool.write(&[1; 17]).unwrap();
        assert!(spool.is_on_disk());
        let mut spool = BodySpool::new(16, &Arc::from(dir.path()), Some(10), &TempBudget::new(0));
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
        let mut small = BodySpool::new(16, &Arc::from(dir.path()), None, &budget);
        small.write(&[1; 16]).unwrap();
        let mut large = BodySpool::new(16, &Arc::from(dir.path()), None, &budget);
        large.write(&[2; 90]).unwrap();
        assert_eq!(budget.taken(), 90);
        assert!(matches!(large.write(&[2; 20]), Err(SpoolError::BudgetSpent)));
        let SpooledBody::Memory(bytes) = small.finish() else { panic!("memory expected") };
        assert_eq!(bytes, [1; 16]);
        drop(large);
        assert_eq!(budget.taken(), 0, "the share goes with the file");
    }

    #[test]
    fn missing_temp_path_is_an_error() {
        let mut spool = BodySpool::new(4, &Arc::from(Path::new("/nonexistent/nightmare")), None, &TempBudget::new(0));
        assert!(spool.write(b"more than four").is_err());
    }
}
