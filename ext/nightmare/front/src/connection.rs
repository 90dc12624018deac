//! One client connection: a state machine from the first byte of a request
//! to the last byte of its response. Each state owns what it needs; a
//! transition consumes the old state and returns the next.

use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Registry, Token};

use crate::chunked::{ChunkError, ChunkedDecoder};
use crate::dispatch::{Admission, Slot, Waiter};
use crate::error_response::{CONTINUE, Rejection};
use crate::exchange::{Exchange, Pump};
use crate::handoff::{self, HandoffRecord, Scheme};
use crate::listener::ClientStream;
use crate::request_head::{BodyFraming, ForwardingFacts, HeadReader, RequestHead};
use crate::shared::{ConnectionPermit, Shared};
use crate::socket_io::{ReadOutcome, Readiness, WriteOutcome, read_some, write_some};
use crate::spool::{BodySpool, SpooledBody};

/// A canned reply must not keep a connection open for long.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// After a rejection the client may still be sending: read and drop it for a
/// while, so that closing does not reset the connection before the client
/// has read the reply (nginx's lingering close).
const LINGER_TOTAL: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);

/// Client sockets have even tokens, their worker sockets the odd one after.
pub const FIRST_CONNECTION_TOKEN: usize = 1024;

pub fn client_token(slot: usize) -> Token {
    Token(FIRST_CONNECTION_TOKEN + slot * 2)
}

pub fn upstream_token(slot: usize) -> Token {
    Token(FIRST_CONNECTION_TOKEN + slot * 2 + 1)
}

/// What a connection's handlers borrow from their loop.
pub struct LoopContext<'a> {
    pub shared: &'a Arc<Shared>,
    pub registry: &'a Registry,
    /// The loop's read buffer, shared by its connections in turn.
    pub scratch: &'a mut [u8],
    pub loop_index: usize,
    pub now: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Close,
}

enum Step {
    /// The state changed or may move further: run the machine again.
    Again,
    /// Nothing more until the next event or tick.
    Wait,
}

#[derive(Debug)]
enum BodyProgress {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
}

#[derive(Debug)]
struct BodyRead {
    head: RequestHead,
    progress: BodyProgress,
    spool: BodySpool,
    /// `100 Continue` bytes still to send.
    interim: &'static [u8],
}

enum BodyFeed {
    NeedMore,
    Complete,
    Rejected(Rejection),
    SpoolFailed(std::io::Error),
}

#[derive(Debug)]
struct BufferedRequest {
    head: RequestHead,
    body: SpooledBody,
    arrived_usec: u64,
}

#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
    sent: usize,
    linger: bool,
}

#[derive(Debug)]
enum State {
    ReadingHead(HeadReader),
    ReadingBody(Box<BodyRead>),
    /// Complete, waiting for a worker to be free.
    Queued(Box<BufferedRequest>),
    /// A slot is ours but the channel was full; retried on the next tick.
    HandoffPending(Box<BufferedRequest>, Slot),
    Exchanging(Box<Exchange>),
    /// The client left while its worker was busy: wait for the worker to
    /// finish so its slot is given back when it really is free.
    Draining(Box<Exchange>),
    Replying(Reply),
    Lingering {
        until: Instant,
    },
    Closed,
}

pub struct Connection {
    /// Loop, slab slot and serial: also how the dispatcher knows it.
    id: Waiter,
    client: ClientStream,
    client_ready: Readiness,
    peer: String,
    scheme: Scheme,
    state: State,
    deadline: Option<Instant>,
    permit: ConnectionPermit,
}

impl Connection {
    pub fn new(
        id: Waiter,
        client: ClientStream,
        peer: String,
        scheme: Scheme,
        permit: ConnectionPermit,
        deadline: Instant,
    ) -> Self {
        Connection {
            id,
            client,
            // A new connection often has its request waiting already.
            client_ready: Readiness {
                readable: true,
                writable: true,
            },
            peer,
            scheme,
            state: State::ReadingHead(HeadReader::default()),
            deadline: Some(deadline),
            permit,
        }
    }

    pub fn serial(&self) -> u64 {
        self.id.serial
    }

    pub fn client_mut(&mut self) -> &mut ClientStream {
        &mut self.client
    }

    pub fn on_client_event(&mut self, event: &mio::event::Event, ctx: &mut LoopContext) -> Verdict {
        self.client_ready.note(event);
        self.drive(ctx)
    }

    pub fn on_upstream_event(
        &mut self,
        event: &mio::event::Event,
        ctx: &mut LoopContext,
    ) -> Verdict {
        if let State::Exchanging(exchange) | State::Draining(exchange) = &mut self.state {
            exchange.note_upstream_event(event);
        }
        self.drive(ctx)
    }

    /// A worker slot was granted to this connection's queued request.
    pub fn on_grant(&mut self, ctx: &mut LoopContext) -> Verdict {
        let slot = ctx.shared.dispatcher.claim();
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Queued(request) => {
                self.state = self.hand_off(request, slot, ctx);
                self.drive(ctx)
            }
            other => {
                // Not waiting (any more): the slot goes straight back.
                self.state = other;
                Verdict::Keep
            }
        }
    }

    /// Deadlines and retries, called every loop tick.
    pub fn on_tick(&mut self, ctx: &mut LoopContext) -> Verdict {
        if let State::HandoffPending(..) = self.state
            && let State::HandoffPending(request, slot) =
                std::mem::replace(&mut self.state, State::Closed)
        {
            self.state = self.hand_off(request, slot, ctx);
            return self.drive(ctx);
        }
        match self.deadline {
            Some(deadline) if ctx.now >= deadline => {
                let state = std::mem::replace(&mut self.state, State::Closed);
                self.state = self.expire(state, ctx);
                self.drive(ctx)
            }
            _ => Verdict::Keep,
        }
    }

    /// Runs the machine until it has to wait for I/O.
    pub fn drive(&mut self, ctx: &mut LoopContext) -> Verdict {
        loop {
            let state = std::mem::replace(&mut self.state, State::Closed);
            let (next, step) = self.advance(state, ctx);
            self.state = next;
            if let State::Closed = self.state {
                return Verdict::Close;
            }
            if let Step::Wait = step {
                return Verdict::Keep;
            }
        }
    }

    fn advance(&mut self, state: State, ctx: &mut LoopContext) -> (State, Step) {
        match state {
            State::ReadingHead(reader) => self.read_head(reader, ctx),
            State::ReadingBody(body) => self.read_body(body, ctx),
            State::Exchanging(exchange) => self.exchange(exchange, ctx),
            State::Draining(mut exchange) => {
                if exchange.discard(ctx.scratch) {
                    (State::Closed, Step::Again)
                } else {
                    (State::Draining(exchange), Step::Wait)
                }
            }
            State::Replying(reply) => self.reply(reply, ctx),
            State::Lingering { until } => self.linger(until, ctx),
            waiting @ (State::Queued(_) | State::HandoffPending(..) | State::Closed) => {
                (waiting, Step::Wait)
            }
        }
    }

    fn read_head(&mut self, mut reader: HeadReader, ctx: &mut LoopContext) -> (State, Step) {
        if !self.client_ready.readable {
            return (State::ReadingHead(reader), Step::Wait);
        }
        let limits = &ctx.shared.config.head_limits;
        let room = reader.room(limits).min(ctx.scratch.len());
        match read_some(&mut self.client, &mut ctx.scratch[..room]) {
            ReadOutcome::Data(n) => {
                reader.push(&ctx.scratch[..n]);
                match reader.poll(limits) {
                    Ok(None) => (State::ReadingHead(reader), Step::Again),
                    Ok(Some((head, leftover))) => {
                        (self.begin_body(head, &leftover, ctx), Step::Again)
                    }
                    Err(rejection) => (self.reject(rejection, ctx), Step::Again),
                }
            }
            ReadOutcome::WouldBlock => {
                self.client_ready.readable = false;
                (State::ReadingHead(reader), Step::Wait)
            }
            ReadOutcome::Eof | ReadOutcome::Gone => {
                if !reader.is_empty() {
                    ctx.shared.log.info(format!(
                        "client {} closed the connection before finishing its request head",
                        self.peer
                    ));
                }
                (State::Closed, Step::Again)
            }
            ReadOutcome::Failed(error) => {
                ctx.shared
                    .log
                    .warn(format!("reading from client {}: {error}", self.peer));
                (State::Closed, Step::Again)
            }
        }
    }

    fn begin_body(&mut self, head: RequestHead, leftover: &[u8], ctx: &mut LoopContext) -> State {
        let config = &ctx.shared.config;
        let max_body = (config.client_max_body_size > 0).then_some(config.client_max_body_size);
        let progress = match head.framing {
            BodyFraming::None | BodyFraming::Length(0) => {
                return self.complete(head, SpooledBody::Memory(Vec::new()), ctx);
            }
            BodyFraming::Length(length) if max_body.is_some_and(|max| length > max) => {
                return self.reject(
                    Rejection::new(413, "request body larger than client_max_body_size"),
                    ctx,
                );
            }
            BodyFraming::Length(length) => BodyProgress::Length { remaining: length },
            BodyFraming::Chunked => BodyProgress::Chunked(ChunkedDecoder::new(max_body)),
        };
        let expected = match progress {
            BodyProgress::Length { remaining } => Some(remaining),
            BodyProgress::Chunked(_) => None,
        };
        let interim: &'static [u8] = if head.expects_continue && leftover.is_empty() {
            CONTINUE
        } else {
            b""
        };
        let spool = BodySpool::new(config.client_body_buffer_size, &config.temp_path, expected);
        self.deadline = Some(ctx.now + config.client_body_timeout);
        let mut body = Box::new(BodyRead {
            head,
            progress,
            spool,
            interim,
        });
        match feed_body(&mut body, leftover) {
            BodyFeed::NeedMore => State::ReadingBody(body),
            finished => self.finish_body(body, finished, ctx),
        }
    }

    fn read_body(&mut self, mut body: Box<BodyRead>, ctx: &mut LoopContext) -> (State, Step) {
        if !body.interim.is_empty() && self.client_ready.writable {
            match write_some(&mut self.client, body.interim) {
                WriteOutcome::Wrote(n) => body.interim = &body.interim[n..],
                WriteOutcome::WouldBlock => self.client_ready.writable = false,
                WriteOutcome::Gone | WriteOutcome::Failed(_) => {
                    return (State::Closed, Step::Again);
                }
            }
        }
        if !self.client_ready.readable {
            return (State::ReadingBody(body), Step::Wait);
        }
        match read_some(&mut self.client, ctx.scratch) {
            ReadOutcome::Data(n) => {
                self.deadline = Some(ctx.now + ctx.shared.config.client_body_timeout);
                match feed_body(&mut body, &ctx.scratch[..n]) {
                    BodyFeed::NeedMore => (State::ReadingBody(body), Step::Again),
                    finished => (self.finish_body(body, finished, ctx), Step::Again),
                }
            }
            ReadOutcome::WouldBlock => {
                self.client_ready.readable = false;
                (State::ReadingBody(body), Step::Wait)
            }
            ReadOutcome::Eof | ReadOutcome::Gone => {
                ctx.shared.log.info(format!(
                    "client {} closed the connection after {} bytes of its request body",
                    self.peer,
                    body.spool.len()
                ));
                (State::Closed, Step::Again)
            }
            ReadOutcome::Failed(error) => {
                ctx.shared
                    .log
                    .warn(format!("reading from client {}: {error}", self.peer));
                (State::Closed, Step::Again)
            }
        }
    }

    fn finish_body(&mut self, body: Box<BodyRead>, feed: BodyFeed, ctx: &mut LoopContext) -> State {
        match feed {
            BodyFeed::Complete => {
                let BodyRead { head, spool, .. } = *body;
                self.complete(head, spool.finish(), ctx)
            }
            BodyFeed::Rejected(rejection) => self.reject(rejection, ctx),
            BodyFeed::SpoolFailed(error) => {
                ctx.shared.log.error(format!(
                    "cannot spool the request body of client {} to temp_path {}: {error}",
                    self.peer,
                    ctx.shared.config.temp_path.display()
                ));
                self.reply_with(
                    Rejection::new(500, "the request body could not be stored"),
                    true,
                    ctx,
                )
            }
            BodyFeed::NeedMore => State::ReadingBody(body),
        }
    }

    /// The request is whole: to a worker now, or to the queue.
    fn complete(&mut self, head: RequestHead, body: SpooledBody, ctx: &mut LoopContext) -> State {
        self.deadline = None;
        let arrived_usec = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let request = Box::new(BufferedRequest {
            head,
            body,
            arrived_usec,
        });
        match ctx.shared.dispatcher.admit(self.id) {
            Admission::Granted(slot) => self.hand_off(request, slot, ctx),
            Admission::Queued => State::Queued(request),
        }
    }

    fn hand_off(
        &mut self,
        request: Box<BufferedRequest>,
        slot: Slot,
        ctx: &mut LoopContext,
    ) -> State {
        let (front_end, worker_end) = match handoff::request_socket_pair() {
            Ok(pair) => pair,
            Err(error) => {
                ctx.shared
                    .log
                    .error(format!("cannot create a socket pair for a worker: {error}"));
                return self.reply_with(Rejection::new(503, "no socket for a worker"), true, ctx);
            }
        };
        let record = HandoffRecord {
            client_addr: self.peer.clone(),
            scheme: self.scheme,
            arrived_usec: request.arrived_usec,
        };
        match handoff::send(ctx.shared.channel.as_fd(), worker_end.as_fd(), &record) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                return State::HandoffPending(request, slot);
            }
            Err(error) => {
                ctx.shared
                    .log
                    .error(format!("cannot pass a request to the workers: {error}"));
                return self.reply_with(Rejection::new(503, "workers unreachable"), true, ctx);
            }
        }
        drop(worker_end);
        let BufferedRequest {
            head,
            body,
            arrived_usec,
        } = *request;
        let body_length = (head.framing != BodyFraming::None).then(|| body.len());
        let facts = ForwardingFacts {
            client_addr: &self.peer,
            scheme: self.scheme.as_str(),
            request_start_usec: arrived_usec,
        };
        let upstream_head = head.upstream_head(body_length, &facts);
        let buffer_size = ctx.shared.config.proxy_buffer_size;
        match Exchange::start(
            front_end,
            ctx.registry,
            upstream_token(self.id.slot),
            slot,
            upstream_head,
            body,
            buffer_size,
        ) {
            Ok(exchange) => {
                ctx.shared
                    .requests_handed_off
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                State::Exchanging(Box::new(exchange))
            }
            Err(error) => {
                ctx.shared
                    .log
                    .error(format!("cannot watch a worker socket: {error}"));
                self.reply_with(Rejection::new(503, "no socket for a worker"), true, ctx)
            }
        }
    }

    fn exchange(&mut self, mut exchange: Box<Exchange>, ctx: &mut LoopContext) -> (State, Step) {
        match exchange.pump(&mut self.client, &mut self.client_ready) {
            Pump::Working { progressed } => {
                // send_timeout runs only while the client has bytes it isn't taking.
                self.deadline = match (exchange.has_pending_response(), progressed, self.deadline) {
                    (false, _, _) => None,
                    (true, false, Some(deadline)) => Some(deadline),
                    (true, _, _) => Some(ctx.now + ctx.shared.config.send_timeout),
                };
                (State::Exchanging(exchange), Step::Wait)
            }
            // One request per connection until keep-alive arrives.
            Pump::Finished => (State::Closed, Step::Again),
            Pump::NoResponse => {
                ctx.shared.log.error(format!(
                    "worker closed the connection without answering client {} (killed or crashed?)",
                    self.peer
                ));
                (
                    self.reply_with(Rejection::new(502, "the worker did not answer"), false, ctx),
                    Step::Again,
                )
            }
            Pump::ClientGone => {
                ctx.shared.log.info(format!(
                    "client {} went away before the end of its response",
                    self.peer
                ));
                (self.abandon(exchange), Step::Again)
            }
            Pump::UpstreamFailed(error) => {
                ctx.shared.log.error(format!(
                    "worker socket for client {} failed: {error}",
                    self.peer
                ));
                (State::Closed, Step::Again)
            }
        }
    }

    /// The client is gone. A worker still reading the request is cut off
    /// (it fails fast on the short read); one already working is waited for.
    fn abandon(&mut self, exchange: Box<Exchange>) -> State {
        self.deadline = None;
        if exchange.is_sending_request() || exchange.worker_finished() {
            return State::Closed;
        }
        let _ = self.client.shutdown(Shutdown::Both);
        State::Draining(exchange)
    }

    fn reply(&mut self, mut reply: Reply, ctx: &mut LoopContext) -> (State, Step) {
        if !self.client_ready.writable {
            return (State::Replying(reply), Step::Wait);
        }
        match write_some(&mut self.client, &reply.bytes[reply.sent..]) {
            WriteOutcome::Wrote(n) => {
                reply.sent += n;
                if reply.sent < reply.bytes.len() {
                    return (State::Replying(reply), Step::Again);
                }
                if !reply.linger {
                    return (State::Closed, Step::Again);
                }
                let _ = self.client.shutdown(Shutdown::Write);
                let until = ctx.now + LINGER_TOTAL;
                self.deadline = Some(until.min(ctx.now + LINGER_IDLE));
                (State::Lingering { until }, Step::Again)
            }
            WriteOutcome::WouldBlock => {
                self.client_ready.writable = false;
                (State::Replying(reply), Step::Wait)
            }
            WriteOutcome::Gone | WriteOutcome::Failed(_) => (State::Closed, Step::Again),
        }
    }

    fn linger(&mut self, until: Instant, ctx: &mut LoopContext) -> (State, Step) {
        loop {
            if !self.client_ready.readable {
                return (State::Lingering { until }, Step::Wait);
            }
            match read_some(&mut self.client, ctx.scratch) {
                ReadOutcome::Data(_) => self.deadline = Some(until.min(ctx.now + LINGER_IDLE)),
                ReadOutcome::WouldBlock => self.client_ready.readable = false,
                _ => return (State::Closed, Step::Again),
            }
        }
    }

    /// The connection's deadline passed while in `state`.
    fn expire(&mut self, state: State, ctx: &mut LoopContext) -> State {
        let config = &ctx.shared.config;
        match state {
            State::ReadingHead(_) => {
                let limit = config.client_header_timeout.as_secs_f64();
                ctx.shared.log.info(format!(
                    "client {} sent no complete request head within client_header_timeout ({limit}s); answered 408",
                    self.peer
                ));
                self.reply_with(
                    Rejection::new(408, "request head not received in time"),
                    false,
                    ctx,
                )
            }
            State::ReadingBody(_) => {
                let limit = config.client_body_timeout.as_secs_f64();
                ctx.shared.log.info(format!(
                    "client {} sent nothing of its request body for client_body_timeout ({limit}s); answered 408",
                    self.peer
                ));
                self.reply_with(
                    Rejection::new(408, "request body not received in time"),
                    false,
                    ctx,
                )
            }
            State::Exchanging(exchange) => {
                let limit = config.send_timeout.as_secs_f64();
                ctx.shared.log.info(format!(
                    "client {} took none of its response for send_timeout ({limit}s)",
                    self.peer
                ));
                self.abandon(exchange)
            }
            State::Replying(_) | State::Lingering { .. } => State::Closed,
            other => {
                self.deadline = None;
                other
            }
        }
    }

    /// Answers a bad request itself; the log line blames the client at info
    /// level, since the front and its workers are fine.
    fn reject(&mut self, rejection: Rejection, ctx: &mut LoopContext) -> State {
        ctx.shared.log.info(format!(
            "client {}: {}; answered {}",
            self.peer, rejection.reason, rejection.status
        ));
        self.reply_with(rejection, true, ctx)
    }

    fn reply_with(&mut self, rejection: Rejection, linger: bool, ctx: &mut LoopContext) -> State {
        let timeout = ctx.shared.config.send_timeout.min(REPLY_TIMEOUT);
        self.deadline = Some(ctx.now + timeout);
        State::Replying(Reply {
            bytes: rejection.to_response(),
            sent: 0,
            linger,
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // A queued request leaves the queue with its connection. If it was
        // already granted, the grant finds no connection and is released.
        if let State::Queued(_) = self.state {
            self.permit.shared().dispatcher.cancel(self.id);
        }
    }
}

fn feed_body(body: &mut BodyRead, mut input: &[u8]) -> BodyFeed {
    loop {
        match &mut body.progress {
            BodyProgress::Length { remaining } => {
                let take = (*remaining).min(input.len() as u64) as usize;
                if let Err(error) = body.spool.write(&input[..take]) {
                    return BodyFeed::SpoolFailed(error);
                }
                *remaining -= take as u64;
                return if *remaining == 0 {
                    BodyFeed::Complete
                } else {
                    BodyFeed::NeedMore
                };
            }
            BodyProgress::Chunked(decoder) => {
                if decoder.is_done() {
                    return BodyFeed::Complete;
                }
                if input.is_empty() {
                    return BodyFeed::NeedMore;
                }
                match decoder.decode(input) {
                    Ok(step) => {
                        if let Err(error) = body.spool.write(&input[step.data]) {
                            return BodyFeed::SpoolFailed(error);
                        }
                        input = &input[step.consumed..];
                    }
                    Err(ChunkError::Malformed(reason)) => {
                        return BodyFeed::Rejected(Rejection::new(400, reason));
                    }
                    Err(ChunkError::TooLarge) => {
                        return BodyFeed::Rejected(Rejection::new(
                            413,
                            "request body larger than client_max_body_size",
                        ));
                    }
                }
            }
        }
    }
}
