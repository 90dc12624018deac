//! Writes access log lines on a thread of their own, so a slow disk holds
//! up the log, never a client. Lines queue in memory up to a limit; past
//! it they are dropped and counted (`access_log_lines_dropped`), as the
//! error log drops lines when its pipe is full.

use std::fs::File;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

/// Lines waiting for the disk, at most (a few MiB of text).
const MAX_PENDING: usize = 32_768;

#[derive(Default)]
struct Counts {
    pending: AtomicUsize,
    dropped: AtomicU64,
    failed_writes: AtomicU64,
}

pub struct LineWriter {
    lines: mpsc::Sender<String>,
    counts: Arc<Counts>,
}

impl LineWriter {
    /// Writes to `fd`, which stays the caller's: the front process keeps it
    /// open, and Unicorn's log reopening (USR1) points that same descriptor
    /// at the new file.
    pub fn start(fd: RawFd) -> std::io::Result<LineWriter> {
        let (lines, queue) = mpsc::channel::<String>();
        let counts = Arc::new(Counts::default());
        let writer_counts = Arc::clone(&counts);
        crate::threads::spawn_without_signals("nightmare-access-log".into(), move || {
            // SAFETY: the caller keeps `fd` open for the front's life; the
            // File is never dropped, so it never closes it.
            let file = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
            run(queue, &file, &writer_counts);
        })?;
        Ok(LineWriter { lines, counts })
    }

    pub fn write(&self, line: String) {
        if self.counts.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            self.counts.pending.fetch_sub(1, Ordering::AcqRel);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.lines.send(line).is_err() {
            self.counts.pending.fetch_sub(1, Ordering::AcqRel);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped (the disk could not keep up) or lost to failed writes.
    pub fn lost(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed) + self.counts.failed_writes.load(Ordering::Relaxed)
    }
}

/// Takes what has queued up, whole lines, and writes it in one go.
fn run(queue: mpsc::Receiver<String>, mut file: &File, counts: &Counts) {
    let mut batch = String::new();
    while let Ok(line) = queue.recv() {
        batch.clear();
        batch.push_str(&line);
        let mut lines = 1;
        while let Ok(line) = queue.try_recv() {
            batch.push_str(&line);
            lines += 1;
            if batch.len() >= 64 * 1024 {
                break;
            }
        }
        if file.write_all(batch.as_bytes()).is_err() {
            counts.failed_writes.fetch_add(lines as u64, Ordering::Relaxed);
        }
        counts.pending.fetch_sub(lines, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    #[test]
    fn lines_reach_the_file_in_order() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let writer = LineWriter::start(file.as_file().as_raw_fd()).unwrap();
        for i in 0..1000 {
            writer.write(format!("line {i}\n"));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        while std::fs::read_to_string(file.path()).unwrap() != expected {
            assert!(Instant::now() < deadline, "all lines written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(writer.lost(), 0);
    }
}
