//! One request's time with an upstream server: the connection made (a TCP
//! connect waited for, within upstream_connect_timeout), the request
//! written for that server, the response read as fast as the server writes
//! it and framed for the client, and the server's room given back the
//! moment its last byte has arrived.
//!
//! Until the response begins, the exchange keeps the request whole. When
//! the server could not take it (the connect failed, or the server closed
//! without a byte of answer and the request may safely be sent twice) the
//! exchange hands it back for another server; a POST that may have run is
//! never sent again.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use crate::byte_queue::ResponseSink;
use crate::config::FrontConfig;
use crate::connection_id::ConnectionId;
use crate::net::client_stream::ClientStream;
use crate::net::socket_io::{ReadOutcome, Readiness, WriteOutcome, read_some};
use crate::response::framing::{AccelAnswer, ClientTerms, FramingError, ResponseFramer};
use crate::response::spool::ResponseSpool;
use crate::spool_writer::SpoolWriter;
use crate::static_files::FileFacts;
use crate::temp_budget::TempShare;
use crate::upstream::connect::{ConnectError, UpstreamStream};
use crate::upstream::outbound::{BufferedRequest, LastFailure, Outbound, SendResult};
use crate::upstream::pool::{Failure, InFlight, ServerId};
use crate::upstream::tunnel::Tunnel;

/// Where an exchange stands after being pumped.
#[derive(Debug)]
pub enum Pump {
    /// Still going; `client_kept_up` is false when the client is what holds
    /// the response back (it took nothing, and the disk is not the reason).
    Working { client_kept_up: bool },
    /// The whole response reached the client.
    Finished { keep_alive: bool },
    /// The server's answer cannot be passed on. If the client has had none
    /// of it yet, it can still be told 502. `server_died` when it stopped
    /// short (killed, crashed), not when it wrote something malformed.
    Broken { problem: String, client_got_bytes: bool, server_died: bool },
    /// The server could not take the request; another one may.
    /// The room on the server comes along, to be given back only once the
    /// failure is counted: no waiter is granted a server just found gone.
    Retry { request: Box<BufferedRequest>, room: Option<InFlight>, failure: Failure, problem: String },
    /// No response head within upstream_read_timeout.
    TimedOut,
    /// Writing to the client failed: it went away.
    ClientGone,
    /// The server switched protocols (101): the connection becomes a tunnel.
    Upgraded,
}

/// How long an exchange waits on its server.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// For a TCP connect to complete.
    pub connect: Duration,
    /// For the response head, once the request is sent.
    pub response_head: Duration,
}

#[derive(Debug)]
pub struct Exchange {
    /// What of the request a file needs, should the response name one
    /// (X-Accel-Redirect, with `sendfile_root`).
    file_facts: Option<FileFacts>,
    server: ServerId,
    upstream: Option<UpstreamStream>,
    upstream_ready: Readiness,
    /// A TCP connect in progress, and since when.
    connecting: bool,
    began: Instant,
    in_flight: Option<InFlight>,
    /// The request, while another server could still be sent it.
    request: Option<Box<BufferedRequest>>,
    outbound: Option<Outbound>,
    framer: ResponseFramer,
    response: ResponseSpool,
    to_client: u64,
    /// The client's bytes after this request (pipelining), for the next.
    leftover: Vec<u8>,
    /// When the server has waited on too long: its connect, then its head.
    deadline: Option<Instant>,
    patience: Patience,
    /// Bytes came back from the server: it has begun its answer.
    answered: bool,
    /// When the whole request was sent and the answer began to be awaited.
    sent_at: Option<Instant>,
    /// The rest of a `100 Continue` the client was owed: if another server
    /// takes the request, what of it the client has not had goes along.
    interim: &'static [u8],
    /// Since when the server has had more for us that the spent temp budget
    /// keeps it from writing.
    waiting_on_budget: Option<Instant>,
}

impl Exchange {
    /// Starts the exchange on a connection to `in_flight`'s server: watches
    /// it, then (once connected) writes as much of the request as it takes,
    /// usually all of it, so a worker finds its request waiting. Writes are
    /// watched for only when needed: a worker taking its request would
    /// otherwise wake the loop for nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        (mut upstream, pending): (UpstreamStream, bool),
        in_flight: InFlight,
        mut request: Box<BufferedRequest>,
        outbound: Outbound,
        terms: ClientTerms,
        patience: Patience,
        config: &FrontConfig,
        share: TempShare,
        writer: (SpoolWriter, ConnectionId),
        (registry, token): (&Registry, Token),
        now: Instant,
    ) -> io::Result<Exchange> {
        // Watched before anything is written: if watching fails, no server
        // runs a request whose client is told 503.
        let interest = if pending { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        registry.register(&mut upstream, token, interest)?;
        let mut response = ResponseSpool::new(
            config.proxy_buffer_size,
            Arc::clone(&config.temp_path),
            config.max_temp_file_size,
            share,
            Some(writer),
        );
        let interim = std::mem::take(&mut request.interim);
        response.push(interim);
        let accel = !config.sendfile_roots.is_empty();
        let mut exchange = Exchange {
            file_facts: accel.then(|| FileFacts::of(&request.head)),
            server: in_flight.server(),
            upstream: Some(upstream),
            upstream_ready: Readiness { readable: false, writable: !pending, hung_up: false },
            connecting: pending,
            began: now,
            in_flight: Some(in_flight),
            request: Some(request),
            outbound: Some(outbound),
            framer: ResponseFramer::new(terms, config.proxy_buffer_size)
                .with_hsts(config.hsts.clone())
                .with_accel(accel),
            response,
            to_client: 0,
            leftover: Vec::new(),
            deadline: pending.then(|| now + patience.connect),
            patience,
            answered: false,
            sent_at: None,
            interim,
            waiting_on_budget: None,
        };
        if !pending {
            // A failure shows again, and is handled, when the exchange is pumped.
            let _ = exchange.send_request(now);
            // Failing to watch writes leaves the request unfinished, so the
            // server fails it on the short read rather than running it.
            if exchange.outbound.is_some()
                && let Some(upstream) = &mut exchange.upstream
            {
                registry.reregister(upstream, token, Interest::READABLE | Interest::WRITABLE)?;
            }
        }
        Ok(exchange)
    }

    pub fn server(&self) -> ServerId {
        self.server
    }

    pub fn note_upstream_event(&mut self, event: &mio::event::Event) {
        self.upstream_ready.note(event);
    }

    /// True while the server is still reading the request: abandoning the
    /// exchange then makes the server fail fast on a short read.
    pub fn is_sending_request(&self) -> bool {
        self.outbound.is_some()
    }

    /// Response bytes the client has not taken yet.
    pub fn has_pending_response(&mut self) -> bool {
        !self.response.is_empty()
    }

    pub fn worker_finished(&self) -> bool {
        self.upstream.is_none()
    }

    /// The file the response named instead of carrying it, and what of
    /// the request it answers, once.
    pub fn take_accel(&mut self) -> Option<(AccelAnswer, FileFacts)> {
        let answer = self.framer.take_accel()?;
        Some((answer, self.file_facts.take().unwrap_or_default()))
    }

    pub fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.leftover)
    }

    /// Why the response stopped going to a temp file, once (a full temp_path,
    /// most likely); the server then waits for the client instead.
    pub fn take_spool_error(&mut self) -> Option<io::Error> {
        self.response.take_file_error()
    }

    /// When the server has been waited on too long, if it is being waited on.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How long the server has waited to write more because the temp
    /// budget is spent (see `shedding`).
    pub fn waiting_on_budget(&self, now: Instant) -> Option<Duration> {
        self.waiting_on_budget.map(|since| now.saturating_duration_since(since))
    }

    /// The front chose to shed this exchange's client to free temp budget.
    pub fn is_shed(&self) -> bool {
        self.response.is_shed()
    }

    /// Still waiting for the server to begin its answer.
    pub fn awaits_answer(&self) -> bool {
        !self.answered && self.upstream.is_some()
    }

    /// How long the server has left this exchange without a sign of life:
    /// a connect still pending, or the whole request sent and no answer.
    pub fn waiting_on_server(&self, now: Instant) -> Option<Duration> {
        let since = if self.connecting { Some(self.began) } else { self.sent_at.filter(|_| self.awaits_answer()) };
        since.map(|since| now.saturating_duration_since(since))
    }

    /// The deadline passed: a connect that never completed (the host is gone
    /// from the network: another server may take the request), or a
    /// response head that never came (504).
    pub fn expire(&mut self) -> Pump {
        self.deadline = None;
        if self.connecting {
            return self.retry(Failure::Unreachable, "connect timed out".into());
        }
        self.finish_worker();
        Pump::TimedOut
    }

    /// The server's host was found gone from the network after this
    /// exchange took its room (see `InFlight::host_lost`).
    pub fn host_lost(&self) -> bool {
        self.in_flight.as_ref().is_some_and(InFlight::host_lost)
    }

    /// The server's host is gone (`host_lost`): a request that may safely
    /// run twice goes elsewhere now rather than wait on it; `None` for one
    /// that must wait it out.
    pub fn server_unreachable(&mut self) -> Option<Pump> {
        let idempotent = self.request.as_ref().is_some_and(|request| request.is_idempotent());
        (self.awaits_answer() && (idempotent || self.connecting))
            .then(|| self.retry(Failure::Unreachable, "its host is unreachable".into()))
    }

    /// The server's host was found gone while its response was under way
    /// (`host_lost`): what has not come will not, a body that ends with the
    /// connection included (its last packet may be what was lost), so the
    /// response is cut rather than left waiting with no deadline.
    pub fn host_lost_mid_response(&mut self) -> Option<Pump> {
        (self.answered && !self.worker_finished() && self.host_lost()).then(|| {
            self.finish_worker();
            self.broken("its host is unreachable".into(), true)
        })
    }

    /// Moves every byte that can move now, in both directions.
    pub fn pump(
        &mut self,
        client: &mut ClientStream,
        client_ready: &mut Readiness,
        scratch: &mut [u8],
        now: Instant,
    ) -> Pump {
        if self.connecting {
            match self.finish_connect() {
                Ok(true) => {}
                Ok(false) => return Pump::Working { client_kept_up: true },
                Err(pump) => return pump,
            }
        }
        let mut client_took = false;
        if let Some(broken) = self.send_request(now) {
            return broken;
        }
        // The file takes what the client cannot: while it takes all it is
        // given (or, an HTTP/2 stream, its connection is about to send it
        // on), the worker's bytes go through memory.
        let spill = |client: &ClientStream, ready: &Readiness| !ready.writable && !client.drains_soon();
        if let Some(broken) = self.read_response(scratch, spill(client, client_ready)) {
            return broken;
        }
        while !self.response.is_empty() && client_ready.writable {
            match self.response.write_to(client) {
                // Waiting for the spool writer; it wakes the loop when done.
                WriteOutcome::Wrote(0) => break,
                WriteOutcome::Wrote(n) => {
                    self.to_client += n as u64;
                    self.response.note_taken(n, now);
                    client_took = true;
                }
                WriteOutcome::WouldBlock => client_ready.writable = false,
                WriteOutcome::Gone | WriteOutcome::Failed(_) => return Pump::ClientGone,
            }
            // Room was made: the server may have more for us.
            if let Some(broken) = self.read_response(scratch, spill(client, client_ready)) {
                return broken;
            }
        }
        if self.worker_finished() && self.response.is_empty() {
            return Pump::Finished { keep_alive: self.framer.keep_alive() };
        }
        if self.response.waiting_for_disk() {
            // What the client waits for waits on the front's own disk.
            self.response.note_taken(0, now);
        }
        let on_budget = self.upstream.is_some() && self.upstream_ready.readable && self.response.waits_for_budget();
        self.waiting_on_budget = if on_budget { self.waiting_on_budget.or(Some(now)) } else { None };
        Pump::Working { client_kept_up: client_took || self.response.waiting_for_disk() }
    }

    /// After the client went away: drop whatever the server still writes,
    /// until it closes its end and its room can be given back.
    pub fn discard(&mut self, scratch: &mut [u8]) -> bool {
        self.outbound = None;
        self.request = None;
        // Nobody will read it: the temp file goes now, not when the server ends.
        self.response.discard_all();
        while let Some(upstream) = &mut self.upstream
            && self.upstream_ready.readable
        {
            match read_some(upstream, scratch) {
                ReadOutcome::Data(_) => {}
                ReadOutcome::WouldBlock => self.upstream_ready.readable = false,
                ReadOutcome::Eof | ReadOutcome::Gone | ReadOutcome::Failed(_) => self.finish_worker(),
            }
        }
        self.worker_finished()
    }

    /// A pending TCP connect: `Ok(true)` once connected.
    fn finish_connect(&mut self) -> Result<bool, Pump> {
        if !self.upstream_ready.writable && !self.upstream_ready.hung_up {
            return Ok(false);
        }
        let Some(upstream) = &self.upstream else { return Ok(true) };
        match upstream.finished() {
            Ok(true) => {
                self.connecting = false;
                self.deadline = None;
                Ok(true)
            }
            // A stale event: wait for the real one, or the connect deadline.
            Ok(false) => {
                self.upstream_ready.writable = false;
                self.upstream_ready.hung_up = false;
                Ok(false)
            }
            Err(error) => {
                let failure = match &error {
                    ConnectError::Failed(cause)
                        if matches!(
                            cause.raw_os_error(),
                            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ETIMEDOUT)
                        ) =>
                    {
                        Failure::Unreachable
                    }
                    _ => Failure::Refused,
                };
                Err(self.retry(failure, format!("connect failed: {error}")))
            }
        }
    }

    fn send_request(&mut self, now: Instant) -> Option<Pump> {
        let (Some(outbound), Some(upstream)) = (&mut self.outbound, &mut self.upstream) else {
            return None;
        };
        if !self.upstream_ready.writable {
            return None;
        }
        match outbound.send(upstream) {
            SendResult::Done => {
                self.outbound = None;
                if !self.answered {
                    self.deadline = Some(now + self.patience.response_head);
                    self.sent_at = Some(now);
                }
            }
            // It stopped reading: it answered early, or died; reading tells.
            SendResult::ServerGone => self.outbound = None,
            SendResult::Blocked => self.upstream_ready.writable = false,
            SendResult::Failed(error) => return Some(self.broken(format!("writing the request: {error}"), true)),
        }
        None
    }

    fn read_response(&mut self, scratch: &mut [u8], spill: bool) -> Option<Pump> {
        while let Some(upstream) = &mut self.upstream
            && self.upstream_ready.readable
        {
            let room = self.response.room(spill).min(scratch.len());
            if room == 0 {
                break; // the server waits for the client (or the disk)
            }
            let framed = match read_some(upstream, &mut scratch[..room]) {
                ReadOutcome::Data(n) => {
                    let framed = self.framer.feed(&scratch[..n], &mut self.response);
                    // The answer begins with a head passed on: before that,
                    // the bytes (part of a head whose server then went
                    // silent or vanished) reached no one, and another server
                    // may still take the request.
                    if self.framer.status().is_some() || self.framer.head_bytes() > 0 {
                        self.begin_answer();
                    }
                    if self.framer.unbuffered() {
                        self.response.disable_file();
                    }
                    framed
                }
                ReadOutcome::WouldBlock => {
                    self.upstream_ready.readable = false;
                    continue;
                }
                ReadOutcome::Eof | ReadOutcome::Gone if !self.answered => return Some(self.closed_without_answer()),
                ReadOutcome::Eof | ReadOutcome::Gone => {
                    self.finish_worker();
                    self.framer.finish(&mut self.response)
                }
                ReadOutcome::Failed(error) if !self.answered => return Some(self.no_answer(&error)),
                ReadOutcome::Failed(error) => return Some(self.broken(format!("reading the response: {error}"), true)),
            };
            if let Err(error) = framed {
                let died = matches!(error, FramingError::NoResponse | FramingError::Truncated);
                return Some(self.broken(error.describe().to_owned(), died));
            }
            if self.framer.status() == Some(101) {
                return Some(Pump::Upgraded);
            }
            // The framing says the response is whole: the server has written
            // its last byte, so it is free now, before it even closes; its
            // room goes to the next request, which then waits for the
            // server in its accept queue instead of the server waiting for it.
            if self.framer.is_done() && self.upstream.is_some() {
                self.finish_worker();
            }
        }
        None
    }

    /// The first head of an answer was passed on: from now on the request
    /// is the server's, never to be sent elsewhere.
    fn begin_answer(&mut self) {
        if self.answered {
            return;
        }
        self.answered = true;
        self.deadline = None;
        if let Some(request) = self.request.take() {
            let BufferedRequest { leftover, .. } = *request;
            self.leftover = leftover;
        }
        if let Some(in_flight) = &self.in_flight {
            in_flight.pool().succeeded(self.server);
        }
    }

    /// The connection failed before a byte of answer: keepalive found the
    /// host silent (it vanished), or it reset the connection.
    fn no_answer(&mut self, error: &io::Error) -> Pump {
        let vanished = matches!(error.raw_os_error(), Some(libc::ETIMEDOUT | libc::EHOSTUNREACH | libc::ENETUNREACH));
        let idempotent = self.request.as_ref().is_some_and(|request| request.is_idempotent());
        if vanished && idempotent {
            return self.retry(Failure::Unreachable, format!("reading the response: {error}"));
        }
        if !vanished {
            return self.closed_without_answer();
        }
        self.finish_worker();
        self.broken(format!("reading the response: {error}"), true)
    }

    /// The server closed before a byte of answer: another server may take
    /// the request if it never reached this one's application or may safely
    /// run twice; otherwise the client gets a 502.
    fn closed_without_answer(&mut self) -> Pump {
        let reached = self.outbound.as_ref().is_none_or(Outbound::started);
        let idempotent = self.request.as_ref().is_some_and(|request| request.is_idempotent());
        if !reached || idempotent {
            return self.retry(Failure::Refused, FramingError::NoResponse.describe().into());
        }
        self.finish_worker();
        self.broken(FramingError::NoResponse.describe().to_owned(), true)
    }

    /// Gives the request back for another server, with what the client is
    /// still owed of a `100 Continue` and its pipelined bytes.
    fn retry(&mut self, failure: Failure, problem: String) -> Pump {
        self.upstream = None;
        let room = self.in_flight.take();
        match self.request.take() {
            Some(mut request) => {
                request.tried.push(self.server);
                let reached = !self.connecting && self.outbound.as_ref().is_none_or(Outbound::started);
                request.last_failure = Some(LastFailure { server: self.server, problem: problem.clone(), reached });
                // No answer came: what the client got was that interim only.
                let taken = usize::try_from(self.to_client).unwrap_or(usize::MAX).min(self.interim.len());
                request.interim = &self.interim[taken..];
                self.outbound = None;
                Pump::Retry { request, room, failure, problem }
            }
            None => {
                self.outbound = None;
                self.broken(problem, true)
            }
        }
    }

    /// Turns an upgraded exchange into a tunnel, with what is still owed
    /// each way: the 101 and anything after it to the client, the rest of
    /// the request and the client's later bytes to the server.
    pub fn into_tunnel(mut self, buffer_size: usize) -> Option<Tunnel> {
        let mut to_server = Vec::new();
        if let Some(outbound) = &self.outbound {
            // An upgrade request has no body to stream.
            to_server.extend_from_slice(outbound.unsent_bytes()?);
        }
        to_server.extend_from_slice(&self.leftover);
        let upstream = self.upstream.take()?;
        let in_flight = self.in_flight.take()?;
        Some(Tunnel::new(upstream, self.upstream_ready, in_flight, self.response, &to_server, buffer_size))
    }

    /// The status of the server's response, once its head was read.
    pub fn status(&self) -> Option<u16> {
        self.framer.status()
    }

    /// Bytes the client has taken so far: all of them, and the body's.
    pub fn sent_to_client(&self) -> (u64, u64) {
        (self.to_client, self.to_client.saturating_sub(self.framer.head_bytes()))
    }

    fn broken(&self, problem: String, server_died: bool) -> Pump {
        Pump::Broken { problem, client_got_bytes: self.to_client > 0, server_died }
    }

    /// The server is done with this request: close our end (any late bytes
    /// of a server writing past its own framing are dropped with it) and
    /// give its room back.
    fn finish_worker(&mut self) {
        self.upstream = None;
        self.outbound = None;
        self.in_flight = None;
    }
}
