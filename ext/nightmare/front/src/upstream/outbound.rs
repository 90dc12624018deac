//! A request read whole, on its way to an upstream, and the bytes one
//! server gets for it: the preamble that server takes (PROXY v2 with the
//! master's secret for its own workers, plain PROXY v2, or none and an
//! X-Forwarded-For header), the head rebuilt for it, and the body from
//! memory in the same write, or from its temp file by sendfile. The request
//! stays whole until a response begins, so another server can be sent the
//! same bytes when the first could not take them.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::net::client_address::ClientAddress;
use crate::net::socket_io::{WriteOutcome, send_file, write_some};
use crate::request::body_spool::SpooledBody;
use crate::request::head::{BodyFraming, ForwardingFacts, RequestHead};
use crate::upstream::connect::UpstreamStream;
use crate::upstream::pool::{GroupId, Preamble, ServerId};
use crate::upstream::proxy_header;

/// A request read whole, on its way to a server.
#[derive(Debug)]
pub struct BufferedRequest {
    pub head: RequestHead,
    pub body: SpooledBody,
    /// When it was complete, for the worker's X-Request-Start.
    arrived_usec: u64,
    /// The rest of a half-sent `100 Continue`, owed before the response.
    pub interim: &'static [u8],
    /// What the client sent after this request (pipelining).
    pub leftover: Vec<u8>,
    /// When it first joined the front's queue: its queue_timeout runs from
    /// then, however often it comes back to the queue.
    pub queued_since: Option<Instant>,
    /// Servers it went to that could not take it: a retry goes elsewhere.
    pub tried: Vec<ServerId>,
    /// The group of servers its Host goes to.
    pub group: GroupId,
    /// Why the last server it went to could not take it.
    pub last_failure: Option<LastFailure>,
}

/// What went wrong with the last server a request went to.
#[derive(Debug)]
pub struct LastFailure {
    pub server: ServerId,
    pub problem: String,
    /// The request reached the server, which closed without an answer (a
    /// connect that failed reached nothing).
    pub reached: bool,
}

impl BufferedRequest {
    pub fn new(head: RequestHead, body: SpooledBody, interim: &'static [u8], leftover: Vec<u8>) -> Self {
        let arrived_usec = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        BufferedRequest {
            head,
            body,
            arrived_usec,
            interim,
            leftover,
            queued_since: None,
            tried: Vec::new(),
            group: 0,
            last_failure: None,
        }
    }

    /// RFC 9110 §9.2.2: sending it twice does what sending it once does,
    /// so it may go to another server after one failed mid-request.
    pub fn is_idempotent(&self) -> bool {
        matches!(self.head.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
    }

    /// What a server with `preamble` reads for this request from `client`.
    pub fn outbound(
        &self,
        preamble: &Preamble,
        client: &ClientAddress,
        https: bool,
        accel_mapping: Option<&str>,
    ) -> Outbound {
        let mut bytes = Vec::with_capacity(512);
        let forwarded_for = match preamble {
            Preamble::Workers(secret) => {
                bytes.extend_from_slice(&proxy_header::encode(client, Some(secret)));
                None
            }
            Preamble::ProxyV2 => {
                bytes.extend_from_slice(&proxy_header::encode(client, None));
                None
            }
            Preamble::Forwarded => Some(*client),
        };
        let body_length = (self.head.framing != BodyFraming::None).then(|| self.body.len());
        let facts = ForwardingFacts { https, accel_mapping, request_start_usec: self.arrived_usec, forwarded_for };
        self.head.write_upstream_head(&mut bytes, body_length, &facts);
        let file = match &self.body {
            SpooledBody::Memory(body) => {
                bytes.extend_from_slice(body);
                None
            }
            SpooledBody::File { file, length, .. } => Some((Arc::clone(file), *length)),
        };
        Outbound { bytes, sent: 0, file, file_sent: 0 }
    }
}

/// The bytes of one request for one server, and how far they went.
#[derive(Debug)]
pub struct Outbound {
    /// The preamble and the head, followed by the body when it is in
    /// memory: one write for most requests.
    bytes: Vec<u8>,
    sent: usize,
    file: Option<(Arc<File>, u64)>,
    file_sent: u64,
}

pub enum SendResult {
    Done,
    Blocked,
    /// The server stopped reading: it answered early, or died.
    ServerGone,
    Failed(std::io::Error),
}

impl Outbound {
    /// Whether any byte of it went out: the server may have begun on it.
    pub fn started(&self) -> bool {
        self.sent > 0
    }

    /// What is left of the head and in-memory body, if the body is not in a file.
    pub fn unsent_bytes(&self) -> Option<&[u8]> {
        self.file.is_none().then(|| &self.bytes[self.sent..])
    }

    pub fn send(&mut self, upstream: &mut UpstreamStream) -> SendResult {
        loop {
            let outcome = if self.sent < self.bytes.len() {
                write_some(upstream, &self.bytes[self.sent..])
            } else if let Some((file, length)) = &self.file
                && self.file_sent < *length
            {
                let remaining = length - self.file_sent;
                match send_file(upstream.as_fd(), file.as_fd(), &mut self.file_sent, remaining) {
                    // send_file advanced file_sent itself.
                    WriteOutcome::Wrote(_) => continue,
                    other => other,
                }
            } else {
                return SendResult::Done;
            };
            match outcome {
                WriteOutcome::Wrote(n) => self.sent += n,
                WriteOutcome::WouldBlock => return SendResult::Blocked,
                WriteOutcome::Gone => return SendResult::ServerGone,
                WriteOutcome::Failed(error) => return SendResult::Failed(error),
            }
        }
    }
}
