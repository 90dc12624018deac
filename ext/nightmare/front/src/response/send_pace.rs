//! `send_min_rate`: a client must take its response at a minimum average
//! pace, or it is closed before it can hold a temp file (and a socket's
//! kernel buffers) for hours a byte at a time. Only the time the client
//! has bytes waiting for it counts: a stream the app writes slowly (SSE)
//! is not the client's fault.

use std::time::{Duration, Instant};

use crate::config::MAX_TIMEOUT;

#[derive(Debug, Default)]
pub struct SendPace {
    /// Time the client had bytes waiting for it, before `waiting_since`.
    busy: Duration,
    /// Since when the client has had bytes waiting, if it has now.
    waiting_since: Option<Instant>,
}

impl SendPace {
    /// Whether the client has bytes waiting for it, as of `now`.
    pub fn note(&mut self, waiting: bool, now: Instant) {
        match (waiting, self.waiting_since) {
            (true, None) => self.waiting_since = Some(now),
            (false, Some(since)) => {
                self.busy += now.saturating_duration_since(since);
                self.waiting_since = None;
            }
            _ => {}
        }
    }

    /// When the client falls below `min_rate` bytes a second, having taken
    /// `sent`: once it has had bytes waiting for `grace` plus the time
    /// those bytes buy. `None` while nothing waits, or without a minimum.
    pub fn deadline(&self, sent: u64, min_rate: u64, grace: Duration) -> Option<Instant> {
        let since = self.waiting_since?;
        if min_rate == 0 {
            return None;
        }
        let bought = Duration::try_from_secs_f64(sent as f64 / min_rate as f64).unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT);
        Some(since + (grace + bought).saturating_sub(self.busy))
    }

    /// The time the client has had bytes waiting, up to `now`.
    pub fn busy(&self, now: Instant) -> Duration {
        self.busy + self.waiting_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn a_reader_gets_the_grace_plus_what_its_bytes_buy() {
        let start = Instant::now();
        let mut pace = SendPace::default();
        assert_eq!(pace.deadline(0, 1024, GRACE), None, "nothing waits for it");
        pace.note(true, start);
        assert_eq!(pace.deadline(0, 1024, GRACE), Some(start + GRACE));
        assert_eq!(pace.deadline(10 * 1024, 1024, GRACE), Some(start + GRACE + Duration::from_secs(10)));
        assert_eq!(pace.deadline(10 * 1024, 0, GRACE), None, "no minimum");
    }

    #[test]
    fn only_time_with_bytes_waiting_counts() {
        let start = Instant::now();
        let mut pace = SendPace::default();
        // A slow stream: the client takes each event at once, then waits
        // ten minutes for the app.
        for minute in 0..30 {
            let at = start + Duration::from_secs(600 * minute);
            pace.note(true, at);
            pace.note(false, at + Duration::from_millis(1));
        }
        let later = start + Duration::from_secs(600 * 30);
        pace.note(true, later);
        assert_eq!(pace.busy(later), Duration::from_millis(30));
        let deadline = pace.deadline(30 * 100, 1024, GRACE).unwrap();
        assert!(deadline > later + Duration::from_secs(59), "the stream's pauses are not the client's");
    }

    #[test]
    fn a_client_that_stops_reading_runs_out_after_the_grace() {
        let start = Instant::now();
        let mut pace = SendPace::default();
        pace.note(true, start);
        pace.note(true, start + Duration::from_secs(30));
        assert_eq!(pace.deadline(1024, 1024, GRACE), Some(start + GRACE + Duration::from_secs(1)));
    }
}
