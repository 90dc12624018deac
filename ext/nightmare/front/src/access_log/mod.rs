//! The front's access log (`access_log`, `access_log_format`): one line per
//! request, in nginx's log_format language, written off the event loop.
//! Each request's facts are gathered in a `LogEntry` from its first byte
//! to its last, and written when it ends, however it ends: a client that
//! goes away before its response shows as nginx shows it, 499.

mod format;
mod writer;

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use format::{COMBINED, Format};
use format::{Facts, Variable};
use writer::LineWriter;

use crate::log::Log;
use crate::net::client_address::ClientAddress;
use crate::net::listener::Scheme;
use crate::request::head::RequestHead;

/// nginx's status for a client that closed the connection before its
/// response was complete.
pub const CLIENT_CLOSED: u16 = 499;

pub struct AccessLog {
    format: Format,
    wants_host: bool,
    writer: LineWriter,
}

impl AccessLog {
    /// Logs in `format` to `fd`, which stays open for the front's life,
    /// with at most `buffer` bytes of lines waiting for it; says in `log`
    /// when lines are dropped.
    pub fn start(format: Format, fd: RawFd, buffer: usize, log: Arc<Log>) -> std::io::Result<Arc<AccessLog>> {
        let wants_host = format.wants(&Variable::Host);
        Ok(Arc::new(AccessLog { format, wants_host, writer: LineWriter::start(fd, buffer, log)? }))
    }

    /// Bytes of lines waiting for the disk.
    pub fn bytes_waiting(&self) -> u64 {
        self.writer.pending() as u64
    }

    /// Lines lost: the disk could not keep up, or writes failed.
    pub fn lines_lost(&self) -> u64 {
        self.writer.lost()
    }
}

/// One request's facts, from its first byte on.
pub struct LogEntry {
    log: Arc<AccessLog>,
    started: Instant,
    remote_addr: String,
    scheme: Scheme,
    connection: u64,
    connection_requests: usize,
    request: Option<RequestFacts>,
    queue_time: Option<Duration>,
    upstream_started: Option<Instant>,
    upstream_time: Option<Duration>,
}

struct RequestFacts {
    method: String,
    uri: String,
    protocol: &'static str,
    host: Option<Vec<u8>>,
    headers: Vec<Option<Vec<u8>>>,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub status: u16,
    pub bytes_sent: u64,
    pub body_bytes_sent: u64,
}

impl LogEntry {
    pub fn begin(
        log: &Arc<AccessLog>,
        started: Instant,
        peer: &ClientAddress,
        scheme: Scheme,
        connection: u64,
        connection_requests: usize,
    ) -> Box<LogEntry> {
        Box::new(LogEntry {
            log: Arc::clone(log),
            started,
            remote_addr: peer.to_string(),
            scheme,
            connection,
            connection_requests,
            request: None,
            queue_time: None,
            upstream_started: None,
            upstream_time: None,
        })
    }

    /// The head is read: what the line says of the request.
    pub fn request(&mut self, head: &RequestHead) {
        let header = |name: &str| head.header(name).map(<[u8]>::to_vec);
        self.request = Some(RequestFacts {
            method: head.method.clone(),
            uri: head.target.clone(),
            protocol: head.version.as_str(),
            host: if self.log.wants_host { header("host") } else { None },
            headers: self.log.format.headers().iter().map(|name| header(name)).collect(),
        });
    }

    /// The request came as a stream of an HTTP/2 connection, which reads
    /// to its connection as HTTP/1.1: $server_protocol says HTTP/2.0.
    pub fn over_http2(&mut self) {
        if let Some(request) = &mut self.request {
            request.protocol = "HTTP/2.0";
        }
    }

    /// Whether the head was read.
    pub fn has_request(&self) -> bool {
        self.request.is_some()
    }

    /// The request left the front's queue for a worker after `waited`.
    pub fn handed_off(&mut self, waited: Option<Duration>, now: Instant) {
        self.queue_time = waited;
        self.upstream_started = Some(now);
    }

    /// The worker's last byte arrived.
    pub fn upstream_done(&mut self, now: Instant) {
        if let Some(started) = self.upstream_started {
            self.upstream_time.get_or_insert(now.saturating_duration_since(started));
        }
    }

    /// Writes the line.
    pub fn finish(mut self: Box<Self>, ending: Ending, now: Instant) {
        self.upstream_done(now);
        let request_line = self.request.as_ref().map(|r| format!("{} {} {}", r.method, r.uri, r.protocol));
        let facts = Facts {
            remote_addr: &self.remote_addr,
            now: SystemTime::now(),
            request_line: request_line.as_deref(),
            method: self.request.as_ref().map_or("-", |r| &r.method),
            uri: self.request.as_ref().map_or("-", |r| &r.uri),
            protocol: self.request.as_ref().map_or("-", |r| r.protocol),
            scheme: self.scheme.as_str(),
            host: self.request.as_ref().and_then(|r| r.host.as_deref()),
            status: ending.status,
            bytes_sent: ending.bytes_sent,
            body_bytes_sent: ending.body_bytes_sent,
            request_time: now.saturating_duration_since(self.started),
            queue_time: self.queue_time,
            upstream_time: self.upstream_time,
            connection: self.connection,
            connection_requests: self.connection_requests,
            headers: self.request.as_ref().map_or(&[], |r| &r.headers),
        };
        let line = self.log.format.render(&facts);
        self.log.writer.write(line);
    }
}
