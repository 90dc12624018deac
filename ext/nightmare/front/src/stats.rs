//! The front's figures, gathered from the shared counters and every loop:
//! what `Nightmare.stats` returns, what the status page shows, and nginx's
//! stub_status figures among them. Each figure is named once, here.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::shared::Shared;

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
}

/// Every figure, by name, in a fixed order.
pub type Figures = Vec<(&'static str, u64)>;

pub fn snapshot(shared: &Shared) -> Figures {
    let counters = &shared.counters;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let phases = shared.phases.iter().fold(PhaseCount::default(), |sum, phases| PhaseCount {
        reading: sum.reading + phases.reading.load(Ordering::Relaxed),
        writing: sum.writing + phases.writing.load(Ordering::Relaxed),
        waiting: sum.waiting + phases.waiting.load(Ordering::Relaxed),
    });
    let pool = shared.pool.stats();
    let [c1, c2, c3, c4, c5] = counters.responses_by_class.each_ref().map(load);
    vec![
        ("open_connections", shared.clients.open() as u64),
        ("accepted", load(&counters.accepted)),
        ("requests", load(&counters.requests)),
        ("reading", phases.reading as u64),
        ("writing", phases.writing as u64),
        ("waiting", phases.waiting as u64),
        ("requests_handed_off", load(&counters.requests_handed_off)),
        ("workers", pool.workers as u64),
        ("in_flight_limit", pool.local_limit as u64),
        ("in_flight", pool.local_in_flight as u64),
        ("queued", pool.queued as u64),
        ("requests_per_address", shared.shares.limit() as u64),
        ("waiting_for_own_address", shared.shares.waiting() as u64),
        ("requests_waited_for_own_address", shared.shares.waited()),
        ("upstream_in_flight", pool.remote_in_flight as u64),
        ("backup_requests", load(&counters.backup_requests)),
        ("upstream_retries", load(&counters.upstream_retries)),
        ("upstreams_out_of_use", pool.servers_out_of_use as u64),
        ("temp_file_bytes", shared.temp_budget.taken()),
        (
            "temp_file_bytes_unwritten",
            shared.phases.iter().map(|phases| phases.unwritten.load(Ordering::Relaxed)).sum(),
        ),
        ("clients_shed", shared.temp_budget.holders.shed_total()),
        ("slow_readers_closed", load(&counters.slow_readers_closed)),
        ("http2_connections", load(&counters.http2_connections)),
        ("http2_streams", load(&counters.http2_streams)),
        ("http2_streams_reset_by_client", load(&counters.http2_streams_reset_by_client)),
        ("http2_streams_refused", load(&counters.http2_streams_refused)),
        ("http2_goaways_sent", load(&counters.http2_goaways_sent)),
        ("temp_path_max_size", shared.temp_budget.limit()),
        ("responses_1xx", c1),
        ("responses_2xx", c2),
        ("responses_3xx", c3),
        ("responses_4xx", c4),
        ("responses_5xx", c5),
        ("log_lines_dropped", shared.log.dropped()),
        ("access_log_lines_lost", shared.access_log.as_ref().map_or(0, |log| log.lines_lost())),
        ("access_log_bytes_waiting", shared.access_log.as_ref().map_or(0, |log| log.bytes_waiting())),
    ]
}

/// The figures as a JSON object (names and numbers only: nothing to escape).
pub fn to_json(figures: &Figures) -> String {
    let fields: Vec<String> = figures.iter().map(|(name, value)| format!("\"{name}\":{value}")).collect();
    format!("{{{}}}\n", fields.join(","))
}

/// nginx's stub_status page, which monitoring agents already parse.
pub fn to_stub_status(figures: &Figures) -> String {
    let get = |wanted: &str| figures.iter().find(|(name, _)| *name == wanted).map_or(0, |(_, value)| *value);
    format!(
        "Active connections: {}\nserver accepts handled requests\n {} {} {}\nReading: {} Writing: {} Waiting: {}\n",
        get("open_connections"),
        get("accepted"),
        get("accepted"),
        get("requests"),
        get("reading"),
        get("writing"),
        get("waiting"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_stub_status_show_the_same_figures() {
        let figures: Figures = vec![
            ("open_connections", 3),
            ("accepted", 10),
            ("requests", 25),
            ("reading", 1),
            ("writing", 1),
            ("waiting", 1),
        ];
        assert_eq!(
            to_json(&figures),
            "{\"open_connections\":3,\"accepted\":10,\"requests\":25,\"reading\":1,\"writing\":1,\"waiting\":1}\n"
        );
        assert_eq!(
            to_stub_status(&figures),
            "Active connections: 3\nserver accepts handled requests\n 10 10 25\nReading: 1 Writing: 1 Waiting: 1\n"
        );
    }

    #[test]
    fn responses_are_counted_by_class_and_odd_statuses_not_at_all() {
        let counters = Counters::default();
        for status in [101, 200, 204, 404, 503, 99, 600, 0] {
            counters.count_response(status);
        }
        let classes = counters.responses_by_class.each_ref().map(|class| class.load(Ordering::Relaxed));
        assert_eq!(classes, [1, 2, 0, 1, 1]);
    }
}
