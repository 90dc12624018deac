//! The front's settings, already validated by the Ruby configurator; the
//! checks here only guard against values that would break the front itself.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::request::head::HeadLimits;
use crate::static_files::StaticSettings;

/// Deadlines are `Instant`s: a timeout this long at most can never overflow one.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

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
    pub send_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive_timeout: Duration,
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
    pub in_flight_per_worker: usize,
    /// Requests waiting in the front for a worker, at most; more get 503.
    pub max_queued_requests: usize,
    /// How long a request may wait in the front for a worker (HAProxy's
    /// `timeout queue`); 503 after.
    pub queue_timeout: Duration,
    /// try_files: static files the front serves itself.
    pub static_files: Option<StaticSettings>,
}

impl Default for FrontConfig {
    fn default() -> Self {
        FrontConfig {
            threads: default_threads(),
            head_limits: HeadLimits::default(),
            client_body_buffer_size: 16 * 1024,
            client_max_body_size: 1024 * 1024 * 1024,
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            client_body_min_rate: 1024,
            send_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            keepalive_requests: 1000,
            tunnel_timeout: Duration::from_secs(60),
            temp_path: Arc::from(std::env::temp_dir()),
            max_connections: 10_000,
            connections_per_address: None,
            shutdown_timeout: Duration::from_secs(30),
            proxy_buffer_size: 32 * 1024,
            max_temp_file_size: 1024 * 1024 * 1024,
            temp_path_max_size: None,
            in_flight_per_worker: 16,
            max_queued_requests: 1024,
            queue_timeout: Duration::from_secs(60),
            static_files: None,
        }
    }
}

/// One loop thread per core: a single loop serves its events one after
/// another, and while it does the workers' accept queue runs dry.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl FrontConfig {
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
    fn defaults_pass_their_own_check() {
        assert_eq!(FrontConfig::default().check(), Ok(()));
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
