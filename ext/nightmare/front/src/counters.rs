//! What the loops count as things happen, for the front's figures
//! (`stats` gathers and names them): counters every loop adds to, and each
//! loop's connections by phase as its last tick saw them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters every loop adds to as things happen.
#[derive(Default)]
pub struct Counters {
    /// Client connections accepted (stub_status's "accepts" and "handled":
    /// a connection refused for its address is accepted and closed).
    pub accepted: AtomicU64,
    /// Request heads read whole (stub_status's "requests").
    pub requests: AtomicU64,
    pub requests_handed_off: AtomicU64,
    /// Requests a backup server took (the overflow, or a primary's failure).
    pub backup_requests: AtomicU64,
    /// Requests passed to the next server after one could not take them.
    pub upstream_retries: AtomicU64,
    /// Clients closed for taking their response too slowly (send_timeout,
    /// send_min_rate).
    pub slow_readers_closed: AtomicU64,
    /// Clients that chose HTTP/2, their streams, the streams they reset
    /// and those refused past SETTINGS_MAX_CONCURRENT_STREAMS, and the
    /// GOAWAYs sent (for errors, abuse, idle time or a stop).
    pub http2_connections: AtomicU64,
    pub http2_streams: AtomicU64,
    pub http2_streams_reset_by_client: AtomicU64,
    pub http2_streams_refused: AtomicU64,
    pub http2_goaways_sent: AtomicU64,
    /// Responses begun, by status class: 1xx to 5xx.
    responses_by_class: [AtomicU64; 5],
}

impl Counters {
    /// Counts a response of `status` as it begins.
    pub fn count_response(&self, status: u16) {
        if let Some(class) = self.responses_by_class.get(usize::from(status / 100).wrapping_sub(1)) {
            class.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses begun so far, 1xx to 5xx.
    pub fn responses_by_class(&self) -> [u64; 5] {
        self.responses_by_class.each_ref().map(|class| class.load(Ordering::Relaxed))
    }
}

/// What one loop's connections are doing, as its last tick counted them,
/// and what its temp files' writer still has to write.
#[derive(Default)]
pub struct LoopPhases {
    reading: AtomicUsize,
    writing: AtomicUsize,
    waiting: AtomicUsize,
    /// Bytes handed to the loop's spool writer and not yet written, each
    /// write's bookkeeping counted (at most 4 MiB: see spool_writer).
    unwritten: AtomicU64,
}

/// stub_status's three kinds of connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A request (head or body) is arriving.
    Reading,
    /// The request is whole: with a worker, in the queue, or its response
    /// on its way out.
    Writing,
    /// Between requests: a new connection that has sent nothing yet, or an
    /// idle keep-alive one.
    Waiting,
}

/// A tick's count of a loop's connections, by phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseCount {
    pub reading: usize,
    pub writing: usize,
    pub waiting: usize,
}

impl PhaseCount {
    pub fn add(&mut self, phase: Phase) {
        match phase {
            Phase::Reading => self.reading += 1,
            Phase::Writing => self.writing += 1,
            Phase::Waiting => self.waiting += 1,
        }
    }
}

impl LoopPhases {
    pub fn publish(&self, count: PhaseCount, unwritten: u64) {
        self.reading.store(count.reading, Ordering::Relaxed);
        self.writing.store(count.writing, Ordering::Relaxed);
        self.waiting.store(count.waiting, Ordering::Relaxed);
        self.unwritten.store(unwritten, Ordering::Relaxed);
    }

    /// The loop's connections by phase, as its last tick counted them.
    pub fn count(&self) -> PhaseCount {
        PhaseCount {
            reading: self.reading.load(Ordering::Relaxed),
            writing: self.writing.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// Bytes its spool writer still has to write.
    pub fn unwritten(&self) -> u64 {
        self.unwritten.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_class_and_odd_statuses_not_at_all() {
        let counters = Counters::default();
        for status in [101, 200, 204, 404, 503, 99, 600, 0] {
            counters.count_response(status);
        }
        assert_eq!(counters.responses_by_class(), [1, 2, 0, 1, 1]);
    }

    #[test]
    fn a_loop_publishes_its_count_and_the_figures_read_it_back() {
        let phases = LoopPhases::default();
        let mut count = PhaseCount::default();
        [Phase::Reading, Phase::Writing, Phase::Writing, Phase::Waiting].into_iter().for_each(|phase| count.add(phase));
        phases.publish(count, 4096);
        assert_eq!(phases.count(), PhaseCount { reading: 1, writing: 2, waiting: 1 });
        assert_eq!(phases.unwritten(), 4096);
    }
}
