//! The front's settings: `FrontConfig` as the front uses it, made from the
//! values of the `nightmare` directive (each read by its entry in
//! `settings`) or from every setting's default.

pub mod given;
pub mod settings;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::access_log::Format;
use crate::request::head::HeadLimits;
use crate::static_files::StaticSettings;
use crate::status_page::StatusPage;
use crate::upstream::spec::UpstreamSpec;
use given::{Given, GivenValue};
use settings::{Normal, SETTINGS};

/// Each setting's value as it was read, by name, in the table's order.
pub type ReadSettings = Vec<(&'static str, Normal)>;

/// Deadlines are `Instant`s: a timeout this long at most can never overflow one.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(given::MAX_SECONDS as u64);

#[derive(Clone, Debug)]
pub struct FrontConfig {
    /// Event loop threads.
    pub threads: usize,
    pub head_limits: HeadLimits,
    /// Request bodies up to this size stay in memory; larger ones go to a temp file.
    pub client_body_buffer_size: usize,
    /// 0 means no limit, as in nginx.
    pub client_max_body_size: u64,
    /// Total time allowed for a request head, from the connection's first byte.
    pub client_header_timeout: Duration,
    /// Longest pause allowed between two reads of a request body.
    pub client_body_timeout: Duration,
    /// Bytes a second a request body must average once client_body_timeout
    /// has passed since it began; 0: no minimum. A byte now and then
    /// resets client_body_timeout, not this.
    pub client_body_min_rate: u64,
    /// Longest pause allowed between two writes to a client.
    /// Bytes a second a client must average while its response waits for
    /// it, once send_timeout has passed; 0: no minimum.
    pub send_min_rate: u64,
    /// Bytes a client's socket may hold unsent (TCP_NOTSENT_LOWAT); 0: no
    /// limit but the kernel's.
    pub tcp_notsent_lowat: usize,
    pub send_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive_timeout: Duration,
    /// HTTP/2 with prior knowledge on plain listeners.
    pub http2_cleartext: bool,
    /// Plain listeners answer 308 to the first HTTPS listener.
    pub ssl_redirect: bool,
    /// The HTTPS port plain listeners redirect to (308), worked out at
    /// start from `ssl_redirect` and the ssl blocks' own `ssl_redirect`.
    pub https_redirect_port: Option<u16>,
    /// `Strict-Transport-Security` for HTTPS responses that have none.
    pub hsts: Option<Arc<str>>,
    /// The site's pages for the front's own 502, 503 and 504.
    pub error_pages: crate::http::error_pages::ErrorPages,
    /// Directories the app may hand files from (`X-Accel-Redirect`), each
    /// with the URI prefix that names it (`sendfile_root`).
    pub sendfile_roots: Vec<crate::static_files::accel::SendfileRoot>,
    /// Requests served on one connection before it is closed.
    pub keepalive_requests: usize,
    /// How long a switched-protocols tunnel may carry nothing either way.
    pub tunnel_timeout: Duration,
    /// Shared, since every spool names it.
    pub temp_path: Arc<Path>,
    /// Open client connections across all threads; beyond it idle
    /// keep-alive connections are closed to make room, and failing that new
    /// clients wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections one client address (an IPv6 /64) may hold; beyond
    /// it its new ones are refused (nginx's limit_conn). `None`: a tenth of
    /// max_connections.
    pub connections_per_address: Option<usize>,
    /// How long a graceful stop waits for connections in progress.
    pub shutdown_timeout: Duration,
    /// Bytes of a worker's response held in memory per connection; more goes
    /// to a temp file.
    pub proxy_buffer_size: usize,
    /// Bytes of one response a temp file may hold before the worker is made
    /// to wait for the client (nginx's proxy_max_temp_file_size); 0: no file.
    pub max_temp_file_size: u64,
    /// Bytes all temp files together may hold; `None`: half of what
    /// temp_path has free when the front starts; 0: no limit.
    pub temp_path_max_size: Option<u64>,
    /// Requests handed to the workers' accept queue per worker before the
    /// rest wait in the front (HAProxy's per-server maxconn).
    /// Requests one client address may have with the upstreams at once
    /// (in flight or queued); `None`: as many as the workers, public
    /// addresses only; 0: no limit.
    pub requests_per_address: Option<usize>,
    pub in_flight_per_worker: usize,
    /// Requests waiting in the front for a worker, at most; more get 503.
    pub max_queued_requests: usize,
    /// How long a request may wait in the front for a worker (HAProxy's
    /// `timeout queue`); 503 after.
    pub queue_timeout: Duration,
    /// try_files: static files the front serves itself.
    pub static_files: Option<StaticSettings>,
    /// status_path: the front's own figures, to the addresses it allows.
    pub status_page: Option<StatusPage>,
    /// Servers other than the master's own workers (backups in embedded
    /// mode; every server in standalone), and routes by Host.
    pub upstreams: UpstreamSpec,
    /// How long a TCP connect to an upstream may take; past it the host
    /// counts as gone and the request goes to the next server.
    pub upstream_connect_timeout: Duration,
    /// How long an upstream may take to begin its response; 504 after.
    pub upstream_read_timeout: Duration,
    /// Where the access log goes (the front process opens it); `None`: off.
    pub access_log: Option<std::path::PathBuf>,
    pub access_log_format: Format,
    /// Bytes of access log lines that may wait for the disk; more are dropped.
    pub access_log_buffer: usize,
}

impl Default for FrontConfig {
    /// Every setting at its default (the tests' starting point; the gem
    /// always goes through `from_given`).
    fn default() -> Self {
        match FrontConfig::from_given(&[]) {
            Ok((config, _)) => config,
            // Checked by `every_default_reads`: a default that does not
            // read is a bug in the table, not a user's mistake.
            Err(message) => panic!("a default setting does not read: {message}"),
        }
    }
}

/// The setting a misspelt name most likely meant, as Ruby's DidYouMean
/// would suggest a method: the fewest edits (a swap of two neighbours
/// counting as one), and no more than a third of the name's length.
fn nearest_setting(given: &str) -> Option<&'static str> {
    let given = given.to_ascii_lowercase();
    let allowed = (given.chars().count() / 3).max(1);
    SETTINGS
        .iter()
        .map(|setting| (edit_distance(&given, setting.name), setting.name))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of adjacent characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

impl FrontConfig {
    /// A config from the directive's settings (`(name, value)` pairs, the
    /// name as a `Given` so a message shows it as the user wrote it), every
    /// other setting at its default; with every setting's value as read.
    pub fn from_given(pairs: &[(Given, Given)]) -> Result<(FrontConfig, ReadSettings), String> {
        let mut config = FrontConfig::blank();
        for (name, _) in pairs {
            let known = matches!(&name.value, GivenValue::Text(text) if settings::find(text).is_some());
            if !known {
                let names = SETTINGS.iter().map(|setting| setting.name).collect::<Vec<_>>().join(", ");
                let suggestion = match &name.value {
                    GivenValue::Text(text) => nearest_setting(text).map(|near| format!("; did you mean {near}?")),
                    _ => None,
                };
                return Err(format!(
                    "nightmare: unknown setting {}{} (known: {names})",
                    name.shown,
                    suggestion.unwrap_or_default()
                ));
            }
        }
        let mut read = Vec::with_capacity(SETTINGS.len());
        for setting in SETTINGS {
            let given = pairs.iter().rev().find_map(|(name, value)| {
                matches!(&name.value, GivenValue::Text(text) if text == setting.name).then_some(value)
            });
            let value = match given {
                Some(value) => setting.apply(&mut config, value)?,
                None => setting.apply(&mut config, &setting.default_value())?,
            };
            read.push((setting.name, value));
        }
        Ok((config, read))
    }

    /// Placeholders that every setting overwrites in `from_given`.
    fn blank() -> FrontConfig {
        FrontConfig {
            threads: 1,
            head_limits: HeadLimits { line_size: 1, head_size: 1, max_headers: 1 },
            client_body_buffer_size: 0,
            client_max_body_size: 0,
            client_header_timeout: Duration::ZERO,
            client_body_timeout: Duration::ZERO,
            client_body_min_rate: 0,
            send_timeout: Duration::ZERO,
            send_min_rate: 0,
            tcp_notsent_lowat: 0,
            keepalive_timeout: Duration::ZERO,
            http2_cleartext: false,
            ssl_redirect: false,
            https_redirect_port: None,
            hsts: None,
            error_pages: Default::default(),
            sendfile_roots: Vec::new(),
            keepalive_requests: 1,
            tunnel_timeout: Duration::ZERO,
            temp_path: Arc::from(Path::new("/")),
            max_connections: 1,
            connections_per_address: None,
            shutdown_timeout: Duration::ZERO,
            proxy_buffer_size: 0,
            max_temp_file_size: 0,
            temp_path_max_size: None,
            in_flight_per_worker: 1,
            requests_per_address: None,
            max_queued_requests: 1,
            queue_timeout: Duration::ZERO,
            static_files: None,
            status_page: None,
            upstreams: UpstreamSpec::default(),
            upstream_connect_timeout: Duration::ZERO,
            upstream_read_timeout: Duration::ZERO,
            access_log: None,
            access_log_format: Format::parse(crate::access_log::COMBINED).unwrap_or_else(|_| unreachable!()),
            access_log_buffer: 0,
        }
    }

    /// What one address may hold: so many that a whole office behind one
    /// NAT address fits, too few for one address to hold every connection.
    pub fn max_connections_per_address(&self) -> usize {
        self.connections_per_address.unwrap_or(self.max_connections / 10).max(1)
    }

    /// Rejects settings the front cannot run with, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("threads", self.threads),
            ("large_client_header_buffers size", self.head_limits.line_size),
            ("large_client_header_buffers number", self.head_limits.head_size),
            ("client_max_headers", self.head_limits.max_headers),
            ("max_connections", self.max_connections),
            ("proxy_buffer_size", self.proxy_buffer_size),
            ("keepalive_requests", self.keepalive_requests),
            ("in_flight_per_worker", self.in_flight_per_worker),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{name} must be positive"));
        }
        if self.head_limits.head_size < self.head_limits.line_size {
            return Err("the whole head limit is smaller than one line".into());
        }
        let timeouts = [
            ("client_header_timeout", self.client_header_timeout),
            ("client_body_timeout", self.client_body_timeout),
            ("send_timeout", self.send_timeout),
            ("keepalive_timeout", self.keepalive_timeout),
            ("tunnel_timeout", self.tunnel_timeout),
            ("queue_timeout", self.queue_timeout),
            ("upstream_connect_timeout", self.upstream_connect_timeout),
            ("upstream_read_timeout", self.upstream_read_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, value)| value.is_zero()) {
            return Err(format!("{name} must be positive"));
        }
        let longest = [("shutdown_timeout", self.shutdown_timeout)].into_iter().chain(timeouts);
        if let Some((name, _)) = longest.into_iter().find(|(_, value)| *value > MAX_TIMEOUT) {
            return Err(format!("{name} must be at most a day"));
        }
        if !self.temp_path.is_dir() {
            return Err(format!("temp_path {} is not a directory", self.temp_path.display()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_reads_and_passes_the_check() {
        let (config, read) = FrontConfig::from_given(&[]).expect("defaults read");
        assert_eq!(config.check(), Ok(()));
        assert_eq!(read.len(), SETTINGS.len());
        assert_eq!(config.client_header_timeout, Duration::from_secs(60));
        assert_eq!(config.head_limits, HeadLimits { line_size: 8192, head_size: 4 * 8192, max_headers: 100 });
        assert_eq!(config.client_max_body_size, 1 << 30);
        assert!(config.threads >= 1);
        assert_eq!(config.connections_per_address, None);
    }

    #[test]
    fn given_settings_override_defaults_and_come_back_as_read() {
        let pairs = [
            (Given::text("send_timeout"), Given::text("1.5m")),
            (Given::text("client_max_body_size"), Given::text("10m")),
            (Given::text("max_connections_per_address"), Given::integer(3)),
        ];
        let (config, read) = FrontConfig::from_given(&pairs).expect("they read");
        assert_eq!(config.send_timeout, Duration::from_secs(90));
        assert_eq!(config.client_max_body_size, 10 << 20);
        assert_eq!(config.connections_per_address, Some(3));
        let value_of = |name| read.iter().find(|(n, _)| *n == name).map(|(_, value)| value.clone());
        assert_eq!(value_of("send_timeout"), Some(Normal::Seconds(90.0)));
        assert_eq!(value_of("temp_path_max_size"), Some(Normal::Auto));
        assert_eq!(value_of("large_client_header_buffers"), Some(Normal::Pair(4, 8192)));
    }

    #[test]
    fn an_unknown_setting_or_a_bad_value_is_named() {
        let unknown = Given { value: GivenValue::Text("bogus".into()), shown: ":bogus".into() };
        let message = FrontConfig::from_given(&[(unknown, Given::integer(1))]).unwrap_err();
        assert!(message.starts_with("nightmare: unknown setting :bogus (known: threads, client_header_timeout,"));
        let misspelt =
            Given { value: GivenValue::Text("cleint_max_body_size".into()), shown: ":cleint_max_body_size".into() };
        let message = FrontConfig::from_given(&[(misspelt, Given::integer(1))]).unwrap_err();
        assert!(
            message.starts_with(
                "nightmare: unknown setting :cleint_max_body_size; did you mean client_max_body_size? (known:"
            ),
            "{message}"
        );
        assert_eq!(nearest_setting("Threads"), Some("threads"));
        assert_eq!(nearest_setting("keepalive_timeuot"), Some("keepalive_timeout"));
        assert_eq!(nearest_setting("worker_processes"), None, "too far from any setting to guess");
        let bad = FrontConfig::from_given(&[(Given::text("threads"), Given::integer(0))]).unwrap_err();
        assert_eq!(bad, "too low (< 1): nightmare threads=0");
    }

    #[test]
    fn what_reads_back_reads_the_same_again() {
        let (_, read) = FrontConfig::from_given(&[]).expect("defaults read");
        let again: Vec<(Given, Given)> = read
            .iter()
            .map(|(name, value)| {
                let given = match value {
                    Normal::Integer(n) => Given::integer(*n as i64),
                    Normal::Seconds(s) => Given { value: GivenValue::Float(*s), shown: s.to_string() },
                    Normal::Path(p) => Given::text(p),
                    Normal::Pair(a, b) => Given::list(vec![Given::integer(*a as i64), Given::integer(*b as i64)]),
                    Normal::Text(text) => Given::text(text),
                    Normal::Auto => Given::text("auto"),
                    Normal::Off => Given::text("off"),
                };
                (Given::text(name), given)
            })
            .collect();
        assert_eq!(FrontConfig::from_given(&again).expect("reads").1, read);
    }

    #[test]
    fn zero_threads_is_named() {
        let config = FrontConfig { threads: 0, ..FrontConfig::default() };
        assert_eq!(config.check(), Err("threads must be positive".into()));
    }

    #[test]
    fn a_timeout_past_a_day_is_named() {
        let config = FrontConfig { queue_timeout: Duration::from_secs(86_401), ..FrontConfig::default() };
        assert_eq!(config.check(), Err("queue_timeout must be at most a day".into()));
    }

    #[test]
    fn missing_temp_path_is_named() {
        let config =
            FrontConfig { temp_path: Arc::from(Path::new("/nonexistent/nightmare")), ..FrontConfig::default() };
        assert!(config.check().unwrap_err().contains("temp_path /nonexistent/nightmare"));
    }
}
