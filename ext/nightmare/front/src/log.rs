//! Log lines from the front's threads. They go, one line per write, into a
//! pipe that the front process's Ruby thread reads and hands to Unicorn's
//! logger, so the front logs wherever the user pointed `logger` and
//! `stderr_path`. A loop thread never blocks on logging: when the pipe is
//! full the line is dropped and counted.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn tag(self) -> u8 {
        match self {
            Level::Info => b'I',
            Level::Warn => b'W',
            Level::Error => b'E',
        }
    }
}

/// A pipe write up to PIPE_BUF bytes is atomic, so threads need no lock.
const MAX_LINE: usize = 4000;

#[derive(Debug)]
pub struct Log {
    sink: File,
    dropped: AtomicU64,
}

impl Log {
    /// `sink` must be non-blocking (the write end of a pipe).
    pub fn new(sink: OwnedFd) -> Self {
        Log { sink: File::from(sink), dropped: AtomicU64::new(0) }
    }

    pub fn info(&self, message: impl AsRef<str>) {
        self.line(Level::Info, message.as_ref());
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        self.line(Level::Warn, message.as_ref());
    }

    pub fn error(&self, message: impl AsRef<str>) {
        self.line(Level::Error, message.as_ref());
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn line(&self, level: Level, message: &str) {
        let mut line = Vec::with_capacity(message.len().min(MAX_LINE) + 2);
        line.push(level.tag());
        for &byte in message.as_bytes().iter().take(MAX_LINE) {
            // One message, one line: a newline inside would split it.
            line.push(if byte == b'\n' || byte == b'\r' { b' ' } else { byte });
        }
        line.push(b'\n');
        if !matches!((&self.sink).write(&line), Ok(n) if n == line.len()) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Lets one message through per `interval`, for a failure that hits every
/// request alike (no workers listening): one line a second says as much as
/// thousands, and cannot flood the log.
#[derive(Debug)]
pub struct Throttle {
    started: Instant,
    interval: Duration,
    /// Milliseconds since `started` of the last message let through, plus one.
    last: AtomicU64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Throttle { started: Instant::now(), interval, last: AtomicU64::new(0) }
    }

    /// True if a message may go out now; at most one caller per interval gets true.
    pub fn allows(&self, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(self.started).as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < self.interval.as_millis() as u64 {
            return false;
        }
        self.last.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    /// A log whose lines can be read back.
    pub(crate) fn readable_log() -> (Log, File) {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }, 0);
        let (read, write) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        (Log::new(write), read)
    }

    #[test]
    fn lines_carry_their_level_and_stay_one_line() {
        let (log, mut read) = readable_log();
        log.info("client 10.0.0.1 timed out");
        log.error("temp_path full:\nENOSPC");
        let mut text = String::new();
        read.read_to_string(&mut text).unwrap_or_default();
        assert_eq!(text, "Iclient 10.0.0.1 timed out\nEtemp_path full: ENOSPC\n");
    }

    #[test]
    fn a_throttle_lets_one_message_through_per_interval() {
        let throttle = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert!(throttle.allows(start));
        assert!(!throttle.allows(start + Duration::from_millis(500)));
        assert!(throttle.allows(start + Duration::from_millis(1100)));
        assert!(!throttle.allows(start + Duration::from_millis(1200)));
    }

    #[test]
    fn a_full_pipe_drops_lines_instead_of_blocking() {
        let (log, _read) = readable_log();
        for _ in 0..100_000 {
            log.info("x".repeat(100));
        }
        assert!(log.dropped() > 0);
    }
}
