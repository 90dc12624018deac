//! The front's figures, gathered from the shared counters (`counters`) and
//! every loop: what `Nightmare.stats` returns, what the status page shows,
//! and nginx's stub_status figures among them. Each figure is named once,
//! here.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::counters::PhaseCount;
use crate::shared::Shared;

/// Every figure, by name, in a fixed order.
pub type Figures = Vec<(&'static str, u64)>;

pub fn snapshot(shared: &Shared) -> Figures {
    let counters = &shared.counters;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let phases =
        shared.phases.iter().map(|phases| phases.count()).fold(PhaseCount::default(), |sum, count| PhaseCount {
            reading: sum.reading + count.reading,
            writing: sum.writing + count.writing,
            waiting: sum.waiting + count.waiting,
        });
    let pool = shared.pool.stats();
    let [c1, c2, c3, c4, c5] = counters.responses_by_class();
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
        ("temp_file_bytes_unwritten", shared.phases.iter().map(|phases| phases.unwritten()).sum()),
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
}
