//! Writes access log lines on a thread of their own, so a slow disk holds
//! up the log, never a client. Lines queue in memory up to a limit in
//! bytes (`access_log_buffer`), each line's bookkeeping counted: a client
//! chooses how long its line is (an 8 KiB User-Agent of quotes escapes to
//! 32 KiB), so a count of lines would bound nothing. Past the limit lines
//! are dropped, counted (`access_log_lines_lost`) and said in the front's
//! log once a minute, as the error log drops lines when its pipe is full.

use std::fs::File;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::log::{Log, Throttle};

/// What a queued line costs beyond its text: its place in the channel and
/// its allocation's header and rounding.
const LINE_OVERHEAD: usize = 64;

#[derive(Default)]
struct Counts {
    /// Bytes of the lines waiting, each with its `LINE_OVERHEAD`.
    pending: AtomicUsize,
    dropped: AtomicU64,
    failed_writes: AtomicU64,
}

pub struct LineWriter {
    lines: mpsc::Sender<String>,
    counts: Arc<Counts>,
    /// Bytes that may wait for the disk (`access_log_buffer`).
    limit: usize,
    log: Arc<Log>,
    dropping: Throttle,
}

impl LineWriter {
    /// Writes to `fd`, which stays the caller's: the front process keeps it
    /// open, and Unicorn's log reopening (USR1) points that same descriptor
    /// at the new file.
    pub fn start(fd: RawFd, limit: usize, log: Arc<Log>) -> std::io::Result<LineWriter> {
        let (lines, queue) = mpsc::channel::<String>();
        let counts = Arc::new(Counts::default());
        let writer_counts = Arc::clone(&counts);
        crate::threads::spawn_without_signals("nightmare-access-log".into(), move || {
            // SAFETY: the caller keeps `fd` open for the front's life; the
            // File is never dropped, so it never closes it.
            let file = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
            run(queue, &file, &writer_counts);
        })?;
        Ok(LineWriter { lines, counts, limit, log, dropping: Throttle::new(Duration::from_secs(60)) })
    }

    pub fn write(&self, line: String) {
        let cost = line.len() + LINE_OVERHEAD;
        let before = self.counts.pending.fetch_add(cost, Ordering::AcqRel);
        if before + cost > self.limit {
            self.counts.pending.fetch_sub(cost, Ordering::AcqRel);
            self.drop_line(before);
            return;
        }
        if self.lines.send(line).is_err() {
            self.counts.pending.fetch_sub(cost, Ordering::AcqRel);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn drop_line(&self, waiting: usize) {
        let dropped = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.dropping.allows(Instant::now()) {
            self.log.warn(format!(
                "access log lines are dropped: {waiting} bytes of them wait for the disk, access_log_buffer is {} \
                 ({dropped} dropped so far); the disk under access_log is slow or stuck",
                self.limit
            ));
        }
    }

    /// Bytes of lines waiting for the disk, bookkeeping included.
    pub fn pending(&self) -> usize {
        self.counts.pending.load(Ordering::Acquire)
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
        counts.pending.fetch_sub(batch.len() + lines * LINE_OVERHEAD, Ordering::AcqRel);
        // A burst of long lines must not leave the batch's memory behind.
        batch.shrink_to(64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    fn quiet_log() -> Arc<Log> {
        Arc::new(crate::log::tests::readable_log().0)
    }

    #[test]
    fn lines_reach_the_file_in_order() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let writer = LineWriter::start(file.as_file().as_raw_fd(), 1 << 20, quiet_log()).unwrap();
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
        assert_eq!(writer.pending(), 0);
    }

    /// A disk that stops taking lines (a pipe nobody reads, blocking): long
    /// lines wait up to the limit in bytes, the rest are dropped, counted,
    /// and said once in the front's log.
    #[test]
    fn a_stuck_disk_holds_no_more_than_the_limit_of_long_lines() {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (log, mut log_lines) = crate::log::tests::readable_log();
        let limit = 1 << 20;
        let writer = LineWriter::start(fds[1], limit, Arc::new(log)).unwrap();
        let line = format!("{}\n", "\\x22".repeat(20_000));
        for _ in 0..1000 {
            writer.write(line.clone());
            assert!(writer.pending() <= limit, "{} bytes wait", writer.pending());
        }
        assert!(writer.lost() >= 1000 - (limit / line.len()) as u64, "{} lost", writer.lost());
        let mut said = String::new();
        std::io::Read::read_to_string(&mut log_lines, &mut said).unwrap_or_default();
        assert_eq!(said.matches("access log lines are dropped").count(), 1, "{said}");
        // The pipe's descriptors stay open: the writer thread is blocked on one.
    }
}
