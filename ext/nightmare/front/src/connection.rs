//! One client connection: a state machine from the first byte of a request
//! to the last byte of its response, and on to the next request while the
//! connection is kept alive. Each state owns what it needs; a transition
//! consumes the old state and returns the next.

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Registry, Token};

use crate::client_stream::ClientStream;
use crate::dispatch::{Admission, Slot, Waiter};
use crate::error_response::Rejection;
use crate::exchange::{Exchange, ForwardedRequest, Pump};
use crate::listener::Scheme;
use crate::proxy_header::{self, ClientAddress};
use crate::request_body::{BodyFeed, BodyPlan, BodyRead};
use crate::request_head::{BodyFraming, ForwardingFacts, HeadReader, RequestHead};
use crate::response::ClientTerms;
use crate::shared::{ConnectionPermit, Shared, StopMode};
use crate::socket_io::{ReadOutcome, Readiness, WriteOutcome, read_some, write_some};
use crate::spool::{SpoolError, SpooledBody};
use crate::spool_writer::SpoolWriter;
use crate::static_files::{FileReply, Lookup, SendStep};
use crate::tunnel::{Tunnel, TunnelStep};
use crate::upstream::ConnectError;

/// A canned reply must not keep a connection open for long.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Before closing on a client that may still be sending, read and drop
/// what it sends for a while: closing with unread data resets the
/// connection, and the reset can destroy the reply before the client reads
/// it (nginx's lingering close).
const LINGER_TOTAL: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);
/// What a 503 for overload (queue full, or waited too long) tells clients.
const RETRY_AFTER_SECONDS: u32 = 5;

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
    pub now: Instant,
    /// Writes this loop's response temp files.
    pub writer: &'a SpoolWriter,
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
struct BufferedRequest {
    head: RequestHead,
    body: SpooledBody,
    arrived_usec: u64,
    /// The rest of a half-sent `100 Continue`, owed before the response.
    interim: &'static [u8],
    /// What the client sent after this request (pipelining).
    leftover: Vec<u8>,
    /// When it first joined the front's queue: its queue_timeout runs from
    /// then, however often a full accept queue sends it back.
    queued_since: Option<Instant>,
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
    /// Complete, waiting in the front's queue for room with the workers.
    Queued(Box<BufferedRequest>),
    Exchanging(Box<Exchange>),
    /// The client left while its worker was busy: wait for the worker to
    /// finish so its slot is given back when it really is free.
    Draining(Box<Exchange>),
    /// The worker switched protocols: bytes pass both ways.
    Tunneling(Box<Tunnel>),
    /// try_files found the file: the front answers, no worker is involved.
    ServingFile {
        reply: Box<FileReply>,
        /// What the client sent after this request (pipelining).
        leftover: Vec<u8>,
    },
    Replying(Reply),
    Lingering {
        until: Instant,
    },
    /// Done, but for bytes a TLS session still holds for the socket.
    Flushing,
    Closed,
}

pub struct Connection {
    /// Loop, slab slot and serial: also how the dispatcher knows it.
    id: Waiter,
    client: ClientStream,
    client_ready: Readiness,
    peer: ClientAddress,
    scheme: Scheme,
    state: State,
    deadline: Option<Instant>,
    requests_served: usize,
    permit: ConnectionPermit,
}

impl Connection {
    pub fn new(
        id: Waiter,
        client: ClientStream,
        peer: ClientAddress,
        scheme: Scheme,
        permit: ConnectionPermit,
        deadline: Instant,
    ) -> Self {
        Connection {
            id,
            client,
            // A new connection often has its request waiting already.
            client_ready: Readiness { readable: true, writable: true, hung_up: false },
            peer,
            scheme,
            state: State::ReadingHead(HeadReader::default()),
            deadline: Some(deadline),
            requests_served: 0,
            permit,
        }
    }

    pub fn serial(&self) -> u64 {
        self.id.serial
    }

    pub fn on_client_event(&mut self, event: &mio::event::Event, ctx: &mut LoopContext) -> Verdict {
        // A client that is gone while its request waits for a worker must
        // not cost a worker later, nor hold its connection and temp file
        // meanwhile. (A half-close alone may still want the answer.)
        let gone = event.is_error() || (event.is_read_closed() && event.is_write_closed());
        if gone && matches!(self.state, State::Queued(_)) {
            return Verdict::Close;
        }
        self.client_ready.note(event);
        self.drive(ctx)
    }

    pub fn on_upstream_event(&mut self, event: &mio::event::Event, ctx: &mut LoopContext) -> Verdict {
        match &mut self.state {
            State::Exchanging(exchange) | State::Draining(exchange) => exchange.note_upstream_event(event),
            State::Tunneling(tunnel) => tunnel.note_upstream_event(event),
            _ => {}
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

    /// Deadlines and graceful stops, called every loop tick.
    pub fn on_tick(&mut self, ctx: &mut LoopContext) -> Verdict {
        if self.is_idle() && ctx.shared.stop_mode() != StopMode::Running {
            return Verdict::Close;
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
        if !self.flush_client(ctx) {
            return Verdict::Close;
        }
        loop {
            let state = std::mem::replace(&mut self.state, State::Closed);
            let (next, step) = self.advance(state, ctx);
            self.state = next;
            if let State::Closed = self.state {
                if !self.client.has_pending_output() {
                    return Verdict::Close;
                }
                // Bytes already written (by TLS) still wait for the socket:
                // closing now would cut the end of a response.
                // At most one write's worth waits (kilobytes): send_timeout
                // is for a client that takes none of it.
                self.deadline = Some(ctx.now + ctx.shared.config.send_timeout);
                self.state = State::Flushing;
                return Verdict::Keep;
            }
            if let Step::Wait = step {
                return Verdict::Keep;
            }
        }
    }

    /// Sends what a TLS session holds for a socket that said it was full;
    /// false when the client is gone, or when that was all it waited for.
    fn flush_client(&mut self, ctx: &LoopContext) -> bool {
        if !self.client.has_pending_output() || !self.client_ready.writable {
            return true;
        }
        match self.client.flush_pending() {
            WriteOutcome::Wrote(_) => !matches!(self.state, State::Flushing),
            WriteOutcome::WouldBlock => {
                self.client_ready.writable = false;
                true
            }
            WriteOutcome::Gone => false,
            WriteOutcome::Failed(error) => {
                ctx.shared.log.info(format!("writing to client {}: {error}", self.peer));
                false
            }
        }
    }

    /// When an idle keep-alive connection would time out, if this is one:
    /// what nginx closes first when connections run out, soonest first.
    pub fn idle_until(&self) -> Option<Instant> {
        if self.is_idle() { self.deadline } else { None }
    }

    /// Waiting for the next request on a connection that served one.
    fn is_idle(&self) -> bool {
        self.requests_served > 0 && matches!(&self.state, State::ReadingHead(reader) if reader.is_empty())
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
            State::Tunneling(tunnel) => self.tunnel(tunnel, ctx),
            State::ServingFile { reply, leftover } => self.serve_file(reply, leftover, ctx),
            State::Replying(reply) => self.reply(reply, ctx),
            State::Lingering { until } => self.linger(until, ctx),
            waiting @ (State::Queued(_) | State::Flushing | State::Closed) => (waiting, Step::Wait),
        }
    }

    fn read_head(&mut self, mut reader: HeadReader, ctx: &mut LoopContext) -> (State, Step) {
        if reader.has_unscanned() {
            return (self.poll_head(reader, ctx), Step::Again);
        }
        if !self.client_ready.readable {
            return (State::ReadingHead(reader), Step::Wait);
        }
        let room = reader.room(&ctx.shared.config.head_limits).min(ctx.scratch.len());
        match read_some(&mut self.client, &mut ctx.scratch[..room]) {
            ReadOutcome::Data(n) => {
                if !self.client.buffers_reads() {
                    self.client_ready.note_short_read(n, room);
                }
                if reader.is_empty() && self.requests_served > 0 {
                    // A kept-alive connection starts its next request: the
                    // head now has client_header_timeout to arrive.
                    self.deadline = Some(ctx.now + ctx.shared.config.client_header_timeout);
                }
                reader.push(&ctx.scratch[..n]);
                (self.poll_head(reader, ctx), Step::Again)
            }
            ReadOutcome::WouldBlock => {
                self.client_ready.readable = false;
                (State::ReadingHead(reader), Step::Wait)
            }
            ReadOutcome::Eof | ReadOutcome::Gone => {
                if !reader.is_empty() {
                    ctx.shared
                        .log
                        .info(format!("client {} closed the connection before finishing its request head", self.peer));
                }
                (State::Closed, Step::Again)
            }
            ReadOutcome::Failed(error) if error.kind() == io::ErrorKind::InvalidData => {
                // A TLS failure is the client's (an old client, a scanner,
                // a certificate it does not trust): info, and closed.
                ctx.shared.log.info(format!("client {}: {error}; closed", self.peer));
                (State::Closed, Step::Again)
            }
            ReadOutcome::Failed(error) => {
                ctx.shared.log.warn(format!("reading from client {}: {error}", self.peer));
                (State::Closed, Step::Again)
            }
        }
    }

    fn poll_head(&mut self, mut reader: HeadReader, ctx: &mut LoopContext) -> State {
        match reader.poll(&ctx.shared.config.head_limits) {
            Ok(None) => State::ReadingHead(reader),
            Ok(Some(_)) if self.client.spoke_plain_http() => {
                self.reject(Rejection::new(400, "plain HTTP request sent to the HTTPS port"), ctx)
            }
            Ok(Some((head, leftover))) => self.begin_body(head, leftover, ctx),
            Err(rejection) => self.reject(rejection, ctx),
        }
    }

    fn begin_body(&mut self, head: RequestHead, leftover: Vec<u8>, ctx: &mut LoopContext) -> State {
        match BodyRead::plan(head, &ctx.shared.config, &ctx.shared.temp_budget, !leftover.is_empty(), ctx.now) {
            BodyPlan::None(head) => self.complete(head, SpooledBody::Memory(Vec::new()), b"", leftover, ctx),
            BodyPlan::Refuse(rejection) => self.reject(rejection, ctx),
            BodyPlan::NoTempRoom => self.refuse_for_want_of_temp_room(ctx),
            BodyPlan::Read(mut body) => {
                self.deadline = Some(body_deadline(&body, ctx));
                match body.feed(&leftover) {
                    (BodyFeed::NeedMore, _) => State::ReadingBody(body),
                    (finished, used) => self.finish_body(body, finished, leftover[used..].to_vec(), ctx),
                }
            }
        }
    }

    fn read_body(&mut self, mut body: Box<BodyRead>, ctx: &mut LoopContext) -> (State, Step) {
        if !body.interim().is_empty() && self.client_ready.writable {
            match write_some(&mut self.client, body.interim()) {
                WriteOutcome::Wrote(n) => body.interim_sent(n),
                WriteOutcome::WouldBlock => self.client_ready.writable = false,
                WriteOutcome::Gone | WriteOutcome::Failed(_) => return (State::Closed, Step::Again),
            }
        }
        if !self.client_ready.readable {
            return (State::ReadingBody(body), Step::Wait);
        }
        let wanted = body.still_needed().map_or(ctx.scratch.len(), |needed| {
            usize::try_from(needed).unwrap_or(usize::MAX).clamp(1, ctx.scratch.len())
        });
        match read_some(&mut self.client, &mut ctx.scratch[..wanted]) {
            ReadOutcome::Data(n) => {
                // A finished body's next state sets its own deadline.
                match body.feed(&ctx.scratch[..n]) {
                    (BodyFeed::NeedMore, _) => {
                        self.deadline = Some(body_deadline(&body, ctx));
                        (State::ReadingBody(body), Step::Again)
                    }
                    (finished, used) => {
                        let leftover = ctx.scratch[used..n].to_vec();
                        (self.finish_body(body, finished, leftover, ctx), Step::Again)
                    }
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
                    body.received()
                ));
                (State::Closed, Step::Again)
            }
            ReadOutcome::Failed(error) => {
                ctx.shared.log.warn(format!("reading from client {}: {error}", self.peer));
                (State::Closed, Step::Again)
            }
        }
    }

    fn finish_body(&mut self, body: Box<BodyRead>, feed: BodyFeed, leftover: Vec<u8>, ctx: &mut LoopContext) -> State {
        match feed {
            BodyFeed::Complete => {
                let (head, spooled, interim) = body.finish();
                self.complete(head, spooled, interim, leftover, ctx)
            }
            BodyFeed::Rejected(rejection) => self.reject(rejection, ctx),
            BodyFeed::SpoolFailed(SpoolError::BudgetSpent) => self.refuse_for_want_of_temp_room(ctx),
            BodyFeed::SpoolFailed(SpoolError::Io(error)) => {
                ctx.shared.log.error(format!(
                    "cannot spool the request body of client {} to temp_path {}: {error}",
                    self.peer,
                    ctx.shared.config.temp_path.display()
                ));
                self.reply_with(Rejection::new(500, "the request body could not be stored"), true, ctx)
            }
            BodyFeed::NeedMore => State::ReadingBody(body),
        }
    }

    /// temp_path_max_size is reached: 503, and a line now and then.
    fn refuse_for_want_of_temp_room(&mut self, ctx: &mut LoopContext) -> State {
        let budget = &ctx.shared.temp_budget;
        if ctx.shared.temp_budget_spent.allows(ctx.now) {
            ctx.shared.log.error(format!(
                "temp files hold {} of temp_path_max_size {} bytes: request bodies that need a file \
                 get 503 and responses stop spooling until some are gone",
                budget.taken(),
                budget.limit()
            ));
        }
        let rejection = Rejection::new(503, "no room to store the request body now").retry_after(RETRY_AFTER_SECONDS);
        self.reply_with(rejection, true, ctx)
    }

    /// The request is whole: to a worker now, or to the queue.
    fn complete(
        &mut self,
        head: RequestHead,
        body: SpooledBody,
        interim: &'static [u8],
        leftover: Vec<u8>,
        ctx: &mut LoopContext,
    ) -> State {
        self.deadline = None;
        if let Some(files) = &ctx.shared.static_files {
            match files.lookup(&head, self.keeps_alive(&head, ctx), ctx.now) {
                Lookup::App => {}
                Lookup::Serve(mut reply) => {
                    ctx.shared.count_response(reply.status());
                    reply.put_first(interim);
                    self.deadline = Some(ctx.now + ctx.shared.config.send_timeout);
                    return State::ServingFile { reply: Box::new(reply), leftover };
                }
                Lookup::Refuse(rejection) => return self.reject(rejection, ctx),
            }
        }
        let arrived_usec = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let request = BufferedRequest { head, body, arrived_usec, interim, leftover, queued_since: None };
        match ctx.shared.dispatcher.admit(self.id) {
            Admission::Granted(slot) => self.hand_off(Box::new(request), slot, ctx),
            Admission::Queued => self.queue(Box::new(request), ctx),
            Admission::Full => {
                if ctx.shared.overload.allows(ctx.now) {
                    let limit = ctx.shared.config.max_queued_requests;
                    ctx.shared.log.warn(format!(
                        "request of client {} refused: {limit} requests already wait for a worker \
                         (max_queued_requests); answered 503 (at most one such line a second)",
                        self.peer
                    ));
                }
                let rejection = Rejection::new(503, "every worker is busy").retry_after(RETRY_AFTER_SECONDS);
                self.reply_with(rejection, true, ctx)
            }
        }
    }

    fn queue(&mut self, mut request: Box<BufferedRequest>, ctx: &LoopContext) -> State {
        let since = *request.queued_since.get_or_insert(ctx.now);
        self.deadline = Some(since + ctx.shared.config.queue_timeout);
        State::Queued(request)
    }

    /// Connects to the workers and starts the exchange; a full accept queue
    /// puts the request back at the head of the front's queue.
    fn hand_off(&mut self, request: Box<BufferedRequest>, slot: Slot, ctx: &mut LoopContext) -> State {
        let upstream = match ctx.shared.workers.connect() {
            Ok(upstream) => upstream,
            Err(ConnectError::Busy) => {
                if ctx.shared.full_accept_queue.allows(ctx.now) {
                    let in_flight = ctx.shared.dispatcher.stats().in_flight;
                    ctx.shared.log.info(format!(
                        "the workers' accept queue is full ({in_flight} requests in flight); \
                         requests wait in the front until one ends"
                    ));
                }
                slot.requeue_at_head(self.id);
                return self.queue(request, ctx);
            }
            Err(ConnectError::Absent(error)) => {
                if ctx.shared.unreachable_workers.allows(ctx.now) {
                    ctx.shared.log.error(format!(
                        "no workers listen on {} ({error}): is the master gone? answering 503",
                        ctx.shared.workers.path().display()
                    ));
                }
                return self.reply_with(Rejection::new(503, "no workers are running"), true, ctx);
            }
            Err(ConnectError::Failed(error)) => {
                if ctx.shared.unreachable_workers.allows(ctx.now) {
                    ctx.shared.log.error(format!(
                        "cannot connect to the workers on {}: {error}; answering 503",
                        ctx.shared.workers.path().display()
                    ));
                }
                return self.reply_with(Rejection::new(503, "the workers are unreachable"), true, ctx);
            }
        };
        let BufferedRequest { head, body, arrived_usec, interim, leftover, .. } = *request;
        let config = &ctx.shared.config;
        let terms = ClientTerms {
            head_request: head.is_head_method(),
            version: head.version,
            keep_alive: self.keeps_alive(&head, ctx),
            upgrade: head.upgrade.is_some(),
        };
        let body_length = (head.framing != BodyFraming::None).then(|| body.len());
        let facts = ForwardingFacts { https: self.scheme == Scheme::Https, request_start_usec: arrived_usec };
        let mut bytes = proxy_header::encode(&self.peer, &ctx.shared.workers.secret).to_vec();
        head.write_upstream_head(&mut bytes, body_length, &facts);
        let forwarded = ForwardedRequest { head: bytes, body, terms, interim, leftover };
        let writer = (ctx.writer.clone(), self.id);
        let watch = (ctx.registry, upstream_token(self.id.slot));
        match Exchange::start(upstream, slot, forwarded, config, &ctx.shared.temp_budget, writer, watch) {
            Ok(exchange) => {
                ctx.shared.requests_handed_off.fetch_add(1, Ordering::Relaxed);
                State::Exchanging(Box::new(exchange))
            }
            Err(error) => {
                ctx.shared.log.error(format!("cannot watch a connection to the workers: {error}"));
                self.reply_with(Rejection::new(503, "no socket for a worker"), true, ctx)
            }
        }
    }

    /// The client asked to keep the connection, and the front is willing.
    fn keeps_alive(&self, head: &RequestHead, ctx: &LoopContext) -> bool {
        head.keep_alive
            && ctx.shared.stop_mode() == StopMode::Running
            && self.requests_served + 1 < ctx.shared.config.keepalive_requests
    }

    fn serve_file(&mut self, mut reply: Box<FileReply>, leftover: Vec<u8>, ctx: &mut LoopContext) -> (State, Step) {
        if !self.client_ready.writable {
            return (State::ServingFile { reply, leftover }, Step::Wait);
        }
        match reply.send(&mut self.client) {
            SendStep::Done => (self.after_response(reply.keep_alive, leftover, ctx), Step::Again),
            SendStep::Blocked { moved } => {
                self.client_ready.writable = false;
                if moved {
                    self.deadline = Some(ctx.now + ctx.shared.config.send_timeout);
                }
                (State::ServingFile { reply, leftover }, Step::Wait)
            }
            SendStep::Gone => {
                ctx.shared.log.info(format!("client {} went away before the end of a static file", self.peer));
                (State::Closed, Step::Again)
            }
            SendStep::Failed(error) => {
                ctx.shared.log.error(format!("cannot send a static file to client {}: {error}", self.peer));
                (State::Closed, Step::Again)
            }
        }
    }

    fn exchange(&mut self, mut exchange: Box<Exchange>, ctx: &mut LoopContext) -> (State, Step) {
        let pumped = exchange.pump(&mut self.client, &mut self.client_ready, ctx.scratch);
        if let Some(error) = exchange.take_spool_error() {
            ctx.shared.log.error(format!(
                "cannot spool the response to client {} in temp_path {}: {error}; the worker now waits for the client",
                self.peer,
                ctx.shared.config.temp_path.display()
            ));
        }
        match pumped {
            Pump::Working { client_kept_up } => {
                // send_timeout runs only while the client has bytes it isn't taking.
                self.deadline = match (exchange.has_pending_response(), client_kept_up, self.deadline) {
                    (false, _, _) => None,
                    (true, false, Some(deadline)) => Some(deadline),
                    (true, _, _) => Some(ctx.now + ctx.shared.config.send_timeout),
                };
                (State::Exchanging(exchange), Step::Wait)
            }
            Pump::Finished { keep_alive } => {
                if let Some(status) = exchange.status() {
                    ctx.shared.count_response(status);
                }
                let leftover = exchange.take_leftover();
                (self.after_response(keep_alive, leftover, ctx), Step::Again)
            }
            Pump::Broken { problem, client_got_bytes, worker_died } => {
                if client_got_bytes {
                    if let Some(status) = exchange.status() {
                        ctx.shared.count_response(status);
                    }
                    ctx.shared.log.error(format!("worker response to client {} broke off: {problem}", self.peer));
                    (State::Closed, Step::Again)
                } else if worker_died {
                    ctx.shared.log.error(format!(
                        "worker closed its connection for client {} early ({problem}; killed or crashed?); answered 502",
                        self.peer
                    ));
                    (self.reply_with(Rejection::new(502, "the worker did not answer"), true, ctx), Step::Again)
                } else {
                    ctx.shared.log.error(format!(
                        "worker sent client {} a response the front cannot pass on ({problem}); answered 502",
                        self.peer
                    ));
                    (
                        self.reply_with(Rejection::new(502, "the worker's response was malformed"), true, ctx),
                        Step::Again,
                    )
                }
            }
            Pump::ClientGone => {
                if let Some(status) = exchange.status() {
                    ctx.shared.count_response(status);
                }
                ctx.shared.log.info(format!("client {} went away before the end of its response", self.peer));
                (self.abandon(exchange, ctx), Step::Again)
            }
            Pump::Upgraded => match exchange.into_tunnel(ctx.shared.config.proxy_buffer_size) {
                Some(tunnel) => {
                    ctx.shared.count_response(101);
                    self.deadline = Some(ctx.now + ctx.shared.config.tunnel_timeout);
                    (State::Tunneling(Box::new(tunnel)), Step::Again)
                }
                None => {
                    ctx.shared.log.error(format!("worker switched protocols for client {} mid-request", self.peer));
                    (State::Closed, Step::Again)
                }
            },
        }
    }

    fn tunnel(&mut self, mut tunnel: Box<Tunnel>, ctx: &mut LoopContext) -> (State, Step) {
        match tunnel.pump(&mut self.client, &mut self.client_ready, ctx.scratch) {
            TunnelStep::Open { moved } => {
                if moved {
                    self.deadline = Some(ctx.now + ctx.shared.config.tunnel_timeout);
                }
                (State::Tunneling(tunnel), Step::Wait)
            }
            // Closing as a lingering close: the client may still be sending.
            TunnelStep::Closed => (self.start_lingering(ctx), Step::Again),
        }
    }

    /// A response is complete: wait for the next request, or close.
    fn after_response(&mut self, keep_alive: bool, leftover: Vec<u8>, ctx: &mut LoopContext) -> State {
        self.requests_served += 1;
        let config = &ctx.shared.config;
        if keep_alive && ctx.shared.stop_mode() == StopMode::Running {
            let wait = if leftover.is_empty() { config.keepalive_timeout } else { config.client_header_timeout };
            self.deadline = Some(ctx.now + wait);
            return State::ReadingHead(HeadReader::with_leftover(leftover));
        }
        if leftover.is_empty() && !self.client_ready.readable {
            return State::Closed;
        }
        self.start_lingering(ctx)
    }

    /// The client is gone. A worker still reading the request is cut off
    /// (it fails fast on the short read); one already working is waited
    /// for, so its slot is given back when it is really free, but no longer
    /// than send_timeout.
    fn abandon(&mut self, exchange: Box<Exchange>, ctx: &LoopContext) -> State {
        if exchange.is_sending_request() || exchange.worker_finished() {
            return State::Closed;
        }
        let _ = self.client.shutdown(Shutdown::Both);
        self.deadline = Some(ctx.now + ctx.shared.config.send_timeout);
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
                    (State::Replying(reply), Step::Again)
                } else if reply.linger {
                    (self.start_lingering(ctx), Step::Again)
                } else {
                    (State::Closed, Step::Again)
                }
            }
            WriteOutcome::WouldBlock => {
                self.client_ready.writable = false;
                (State::Replying(reply), Step::Wait)
            }
            WriteOutcome::Gone | WriteOutcome::Failed(_) => (State::Closed, Step::Again),
        }
    }

    fn start_lingering(&mut self, ctx: &mut LoopContext) -> State {
        let _ = self.client.shutdown(Shutdown::Write);
        let until = ctx.now + LINGER_TOTAL;
        self.deadline = Some(until.min(ctx.now + LINGER_IDLE));
        State::Lingering { until }
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
            // keepalive_timeout: an idle connection just ends.
            State::ReadingHead(reader) if reader.is_empty() && self.requests_served > 0 => State::Closed,
            State::ReadingHead(_) => {
                let limit = config.client_header_timeout.as_secs_f64();
                ctx.shared.log.info(format!(
                    "client {} sent no complete request head within client_header_timeout ({limit}s); answered 408",
                    self.peer
                ));
                self.reply_with(Rejection::new(408, "request head not received in time"), true, ctx)
            }
            State::ReadingBody(body) => {
                let too_slow = body
                    .rate_deadline(config.client_body_min_rate, config.client_body_timeout)
                    .is_some_and(|deadline| deadline <= ctx.now);
                if too_slow {
                    ctx.shared.log.info(format!(
                        "client {} sent its request body slower than client_body_min_rate ({} bytes/s, {} bytes \
                         so far); answered 408",
                        self.peer,
                        config.client_body_min_rate,
                        body.received()
                    ));
                } else {
                    let limit = config.client_body_timeout.as_secs_f64();
                    ctx.shared.log.info(format!(
                        "client {} sent nothing of its request body for client_body_timeout ({limit}s); answered 408",
                        self.peer
                    ));
                }
                self.reply_with(Rejection::new(408, "request body not received in time"), true, ctx)
            }
            State::Exchanging(exchange) => {
                let limit = config.send_timeout.as_secs_f64();
                ctx.shared
                    .log
                    .info(format!("client {} took none of its response for send_timeout ({limit}s)", self.peer));
                self.abandon(exchange, ctx)
            }
            // A worker still busy long after its client left: stop waiting,
            // which gives its slot back (the worker fails on its next write).
            State::Replying(_) | State::Lingering { .. } | State::Draining(_) | State::Flushing => State::Closed,
            State::Queued(_) => {
                // Out of the queue before anything else: a grant already on
                // its way finds the connection no longer queued and passes
                // the slot on.
                ctx.shared.dispatcher.cancel(self.id);
                if ctx.shared.overload.allows(ctx.now) {
                    let limit = config.queue_timeout.as_secs_f64();
                    ctx.shared.log.warn(format!(
                        "request of client {} waited queue_timeout ({limit}s) for a worker; answered 503 \
                         (at most one such line a second)",
                        self.peer
                    ));
                }
                let rejection = Rejection::new(503, "no worker was free in time").retry_after(RETRY_AFTER_SECONDS);
                self.reply_with(rejection, true, ctx)
            }
            State::ServingFile { .. } => {
                let limit = config.send_timeout.as_secs_f64();
                ctx.shared
                    .log
                    .info(format!("client {} took none of its static file for send_timeout ({limit}s)", self.peer));
                State::Closed
            }
            State::Tunneling(_) => {
                let limit = config.tunnel_timeout.as_secs_f64();
                ctx.shared
                    .log
                    .info(format!("tunnel of client {} idle for tunnel_timeout ({limit}s); closed", self.peer));
                State::Closed
            }
            other => {
                self.deadline = None;
                other
            }
        }
    }

    /// Answers a bad request itself; the log line blames the client at info
    /// level, since the front and its workers are fine.
    fn reject(&mut self, rejection: Rejection, ctx: &mut LoopContext) -> State {
        ctx.shared.log.info(format!("client {}: {}; answered {}", self.peer, rejection.reason, rejection.status));
        self.reply_with(rejection, true, ctx)
    }

    fn reply_with(&mut self, rejection: Rejection, linger: bool, ctx: &mut LoopContext) -> State {
        ctx.shared.count_response(rejection.status);
        let timeout = ctx.shared.config.send_timeout.min(REPLY_TIMEOUT);
        self.deadline = Some(ctx.now + timeout);
        State::Replying(Reply { bytes: rejection.to_response(), sent: 0, linger })
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

/// The sooner of client_body_timeout from now and the moment the body
/// falls below client_body_min_rate.
fn body_deadline(body: &BodyRead, ctx: &LoopContext) -> Instant {
    let config = &ctx.shared.config;
    let pause = ctx.now + config.client_body_timeout;
    body.rate_deadline(config.client_body_min_rate, config.client_body_timeout).map_or(pause, |rate| rate.min(pause))
}
