//! One client connection: a state machine from the first byte of a request
//! to the last byte of its response, and on to the next request while the
//! connection is kept alive. Each state owns what it needs; a transition
//! consumes the old state and returns the next. The states' work is split
//! by phase: `request` reads the request in, `response` follows it through
//! a worker (or try_files) back to the client, `reply` is the front's own
//! answers and the lingering close.

mod handoff;
mod http2;
mod reply;
mod request;
mod response;
mod shedding;

use std::time::Instant;

use crate::access_log::{CLIENT_CLOSED, Ending, LogEntry};
use crate::connection_id::ConnectionId;
use crate::connection_permit::ConnectionPermit;
use crate::counters::{Counters, Phase};
use crate::http::error_response::Rejection;
use crate::http2::link::Link;
use crate::loop_context::{LoopContext, Verdict};
use crate::net::client_address::ClientAddress;
use crate::net::client_stream::ClientStream;
use crate::net::listener::Scheme;
use crate::net::socket_io::{Readiness, WriteOutcome};
use crate::request::body::BodyRead;
use crate::request::head::HeadReader;
use crate::request_share::{ShareSlot, ShareTicket};
use crate::response::send_pace::SendPace;
use crate::shared::StopMode;
use crate::static_files::FileReply;
use crate::upstream::exchange::Exchange;
use crate::upstream::outbound::BufferedRequest;
use crate::upstream::pool::InFlight;
use crate::upstream::tunnel::Tunnel;
use handoff::{ClientSide, QueuedRequest};
use http2::Http2Client;
pub use http2::{FollowUp, Spawn};

use reply::Reply;

/// How long a server may leave a connect pending, or a whole request
/// unanswered, before the prober checks its host is still on the network
/// (a host that answered is spared a while, so a slow endpoint costs a
/// connect now and then). A pending connect counts too: with a long
/// `upstream_connect_timeout` (nginx's 60 s) it would otherwise wait that
/// long on a vanished host.
const SUSPECT_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

enum Step {
    /// The state changed or may move further: run the machine again.
    Again,
    /// Nothing more until the next event or tick.
    Wait,
}

#[derive(Debug)]
enum State {
    ReadingHead(HeadReader),
    ReadingBody(Box<BodyRead>),
    /// Read whole; the temp file's writer still has some of it to write.
    StoringBody {
        body: Box<BodyRead>,
        /// What the client sent after this request (pipelining).
        leftover: Vec<u8>,
    },
    /// Complete, waiting for its address's earlier requests to leave the
    /// upstreams (requests_per_address) before it may join the queue.
    AwaitingShare {
        request: Box<BufferedRequest>,
        /// Its place in its address's line.
        ticket: ShareTicket,
    },
    /// Complete, waiting in the front's queue for room with the workers.
    Queued(QueuedRequest),
    Exchanging(Box<Exchange>),
    /// The client left while its worker was busy: wait for the worker to
    /// finish so its room is given back when it really is free.
    Draining(Box<Exchange>),
    /// The worker switched protocols: bytes pass both ways.
    Tunneling(Box<Tunnel>),
    /// The client speaks HTTP/2: its streams are connections of their own.
    Http2(Box<Http2Client>),
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
    /// Loop, slab slot and serial: also how other threads address it.
    id: ConnectionId,
    client: ClientStream,
    client_ready: Readiness,
    peer: ClientAddress,
    scheme: Scheme,
    state: State,
    deadline: Option<Instant>,
    /// How fast the client takes the current response (send_min_rate).
    pace: SendPace,
    /// One of its address's requests with the upstreams, while its request
    /// is queued or with a worker (requests_per_address).
    share: Option<ShareSlot>,
    requests_served: usize,
    /// The current request's access log entry, when access_log is on.
    entry: Option<Box<LogEntry>>,
    /// Counts it against max_connections while it lives (a stream's
    /// connection is counted by its client's).
    _permit: Option<ConnectionPermit>,
    /// It serves an HTTP/2 client, or one stream of one.
    http2: bool,
    /// The current request asked for HTML: the front's own 5xx is then
    /// the site's page, if it has one (`error_page`).
    html_errors: bool,
    /// The link of an HTTP/2 client's connection that has ended, kept for
    /// the loop to wake its streams' connections.
    ended_link: Option<Link>,
}

impl Connection {
    pub fn new(
        id: ConnectionId,
        client: ClientStream,
        peer: ClientAddress,
        scheme: Scheme,
        permit: Option<ConnectionPermit>,
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
            pace: SendPace::default(),
            share: None,
            requests_served: 0,
            entry: None,
            _permit: permit,
            http2: false,
            html_errors: false,
            ended_link: None,
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
        if gone && matches!(self.state, State::Queued(_) | State::AwaitingShare { .. } | State::StoringBody { .. }) {
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

    /// What it is doing, as nginx's stub_status counts connections.
    pub fn phase(&self) -> Phase {
        match &self.state {
            State::ReadingHead(reader) if reader.is_empty() => Phase::Waiting,
            State::ReadingHead(_) | State::ReadingBody(_) | State::StoringBody { .. } => Phase::Reading,
            _ => Phase::Writing,
        }
    }

    /// Its request waits in the front's queue for a grant.
    pub fn is_queued(&self) -> bool {
        matches!(self.state, State::Queued(_))
    }

    /// Its address's turn came for the request that waited for it (the
    /// caller checked nothing; a slot it cannot use, dropped, passes on).
    pub fn on_share(&mut self, slot: ShareSlot, ctx: &mut LoopContext) -> Verdict {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::AwaitingShare { request, ticket } => {
                drop(ticket);
                self.share = Some(slot);
                let handoff = handoff::admit(request, self.client_side(ctx), ctx);
                self.state = self.follow(handoff, ctx);
                self.drive(ctx)
            }
            other => {
                self.state = other;
                Verdict::Keep
            }
        }
    }

    /// Room on a server was granted to this connection's queued request
    /// (the caller checked `is_queued`; otherwise the room, dropped, goes
    /// back).
    pub fn on_grant(&mut self, room: InFlight, ctx: &mut LoopContext) -> Verdict {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Queued(queued) => {
                let handoff = handoff::granted(queued, room, self.client_side(ctx), ctx);
                self.state = self.follow(handoff, ctx);
                self.drive(ctx)
            }
            other => {
                self.state = other;
                Verdict::Keep
            }
        }
    }

    /// Deadlines and graceful stops, called every loop tick.
    pub fn on_tick(&mut self, ctx: &mut LoopContext) -> Verdict {
        self.stop_http2(ctx);
        if self.is_idle() && ctx.shared.stop_mode() != StopMode::Running {
            return Verdict::Close;
        }
        if let Some(verdict) = self.check_on_server(ctx) {
            return verdict;
        }
        // The deadline below still counts for a connection that waits on
        // the budget (send_timeout, send_min_rate).
        if self.check_on_budget(ctx) == Some(Verdict::Close) {
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

    /// The server an exchange waits on took too long, or its host is gone.
    fn check_on_server(&mut self, ctx: &mut LoopContext) -> Option<Verdict> {
        let State::Exchanging(exchange) = &mut self.state else { return None };
        // An answer this late from a LAN host may mean the host is gone:
        // the prober checks (see upstream::prober).
        if exchange.waiting_on_server(ctx.now).is_some_and(|waited| waited >= SUSPECT_AFTER) {
            ctx.shared.pool.suspect(exchange.server());
        }
        let late = exchange.deadline().is_some_and(|deadline| ctx.now >= deadline);
        let pumped = if late {
            exchange.expire()
        } else if exchange.awaits_answer() && exchange.host_lost() {
            exchange.server_unreachable()?
        } else if ctx.host_news {
            // Looked at only on news of a loss: a response under way is not
            // waiting on anything the pool's lock would tell every tick.
            exchange.host_lost_mid_response()?
        } else {
            return None;
        };
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Exchanging(exchange) => self.state = self.after_pump(exchange, pumped, ctx).0,
            other => self.state = other,
        }
        Some(self.drive(ctx))
    }

    /// Runs the machine until it has to wait for I/O; then gives its
    /// address's share back if its request no longer needs it.
    pub fn drive(&mut self, ctx: &mut LoopContext) -> Verdict {
        let verdict = self.run_machine(ctx);
        if self.share.is_some() && !self.needs_share() {
            self.share = None;
        }
        verdict
    }

    /// Its request is queued or with a server that has not finished it.
    fn needs_share(&self) -> bool {
        match &self.state {
            State::Queued(_) => true,
            State::Tunneling(tunnel) => !tunnel.worker_finished(),
            State::Exchanging(exchange) | State::Draining(exchange) => !exchange.worker_finished(),
            _ => false,
        }
    }

    fn run_machine(&mut self, ctx: &mut LoopContext) -> Verdict {
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

    /// When an idle keep-alive connection would time out, if this is one:
    /// what nginx closes first when connections run out, soonest first.
    pub fn idle_until(&self) -> Option<Instant> {
        if self.is_idle() || self.is_idle_http2() { self.deadline } else { None }
    }

    /// Waiting for the next request on a connection that served one.
    fn is_idle(&self) -> bool {
        self.requests_served > 0 && matches!(&self.state, State::ReadingHead(reader) if reader.is_empty())
    }

    /// A request's first byte: its access log entry begins.
    fn begin_entry(&mut self, ctx: &LoopContext) {
        if self.entry.is_none()
            && let Some(log) = &ctx.shared.access_log
        {
            let number = self.requests_served + 1;
            self.entry = Some(LogEntry::begin(log, ctx.now, &self.peer, self.scheme, self.id.serial, number));
        }
    }

    /// The request ended with `status`, `sent` bytes (all, and the body's)
    /// gone to the client: its access log line.
    fn end_entry(&mut self, status: u16, sent: (u64, u64), ctx: &LoopContext) {
        if let Some(entry) = self.entry.take() {
            let (bytes_sent, body_bytes_sent) = sent;
            entry.finish(Ending { status, bytes_sent, body_bytes_sent }, ctx.now);
        }
    }

    /// The connection as the handoff needs to know it, now.
    fn client_side(&self, ctx: &LoopContext) -> ClientSide<'_> {
        ClientSide {
            id: self.id,
            peer: &self.peer,
            scheme: self.scheme,
            may_keep_alive: ctx.shared.stop_mode() == StopMode::Running
                && self.requests_served + 1 < ctx.shared.config.keepalive_requests,
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

    fn advance(&mut self, state: State, ctx: &mut LoopContext) -> (State, Step) {
        match state {
            State::ReadingHead(reader) => self.read_head(reader, ctx),
            State::ReadingBody(body) => self.read_body(body, ctx),
            State::StoringBody { body, leftover } => self.store_body(body, leftover, ctx),
            State::Exchanging(exchange) => self.exchange(exchange, ctx),
            State::Draining(exchange) => self.drain(exchange, ctx),
            State::Tunneling(tunnel) => self.tunnel(tunnel, ctx),
            State::Http2(client) => self.serve_http2(client, ctx),
            State::ServingFile { reply, leftover } => self.serve_file(reply, leftover, ctx),
            State::Replying(reply) => self.reply(reply, ctx),
            State::Lingering { until } => self.linger(until, ctx),
            waiting @ (State::Queued(_) | State::AwaitingShare { .. } | State::Flushing | State::Closed) => {
                (waiting, Step::Wait)
            }
        }
    }

    /// The client took too little of `what` in time: nothing for
    /// send_timeout, or less than send_min_rate on average.
    fn say_too_slow(&self, what: &str, sent: u64, ctx: &LoopContext) {
        let config = &ctx.shared.config;
        Counters::add(&ctx.shared.counters.slow_readers_closed);
        let below_rate = self
            .pace
            .deadline(sent, config.send_min_rate, config.send_timeout)
            .is_some_and(|deadline| deadline <= ctx.now);
        let message = if below_rate {
            format!(
                "client {} took {what} slower than send_min_rate ({} bytes/s: {sent} bytes in {:.1}s of waiting \
                 bytes); closed",
                self.peer,
                config.send_min_rate,
                self.pace.busy(ctx.now).as_secs_f64()
            )
        } else {
            let limit = config.send_timeout.as_secs_f64();
            format!("client {} took none of {what} for send_timeout ({limit}s)", self.peer)
        };
        ctx.shared.log.info(message);
    }

    /// When the client's send deadline falls: send_timeout after it last
    /// took bytes (`idle`), or sooner, when it falls below send_min_rate.
    fn send_deadline(&mut self, waiting: bool, sent: u64, idle: Option<Instant>, ctx: &LoopContext) -> Option<Instant> {
        let config = &ctx.shared.config;
        self.pace.note(waiting, ctx.now);
        let rate = self.pace.deadline(sent, config.send_min_rate, config.send_timeout);
        match (idle, rate) {
            (Some(idle), Some(rate)) => Some(idle.min(rate)),
            (idle, rate) => idle.or(rate),
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
                self.reply_with(Rejection::new(408, "request head not received in time"), ctx)
            }
            State::ReadingBody(body) => self.body_too_slow(body, ctx),
            State::StoringBody { .. } => self.body_never_stored(ctx),
            State::Exchanging(exchange) => {
                self.say_too_slow("its response", exchange.sent_to_client().0, ctx);
                self.end_entry(exchange.status().unwrap_or(CLIENT_CLOSED), exchange.sent_to_client(), ctx);
                self.client.reset();
                self.abandon(exchange, ctx)
            }
            State::Replying(reply) => {
                self.end_entry(reply.status, reply.sent(), ctx);
                State::Closed
            }
            // A worker still busy long after its client left: stop waiting,
            // which gives its room back (the worker fails on its next write).
            State::Lingering { .. } | State::Draining(_) | State::Flushing => State::Closed,
            State::Queued(queued) => {
                let rejection = handoff::waited_too_long(queued, self.client_side(ctx), ctx);
                self.reply_with(rejection, ctx)
            }
            State::AwaitingShare { request, ticket } => {
                drop((request, ticket));
                if ctx.shared.overload.allows(ctx.now) {
                    let limit = config.queue_timeout.as_secs_f64();
                    ctx.shared.log.warn(format!(
                        "request of client {} waited queue_timeout ({limit}s) behind its own address's earlier \
                         requests (requests_per_address {}); answered 503 (at most one such line a second)",
                        self.peer,
                        ctx.shared.shares.limit()
                    ));
                }
                self.reply_with(
                    Rejection::overloaded("your earlier requests still hold your share of the workers"),
                    ctx,
                )
            }
            State::ServingFile { reply, .. } => {
                self.say_too_slow("its static file", reply.sent().0, ctx);
                self.end_entry(reply.status(), reply.sent(), ctx);
                self.client.reset();
                State::Closed
            }
            State::Http2(client) => self.expire_http2(*client, ctx),
            State::Tunneling(_) => {
                let limit = config.tunnel_timeout.as_secs_f64();
                ctx.shared
                    .log
                    .info(format!("tunnel of client {} idle for tunnel_timeout ({limit}s); closed", self.peer));
                State::Closed
            }
            State::Closed => {
                self.deadline = None;
                State::Closed
            }
        }
    }
}

impl Drop for Connection {
    /// A request still open when its connection goes (the client left, or
    /// a timeout closed it) is logged as nginx logs it: 499.
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take()
            && entry.has_request()
        {
            entry.finish(Ending { status: CLIENT_CLOSED, bytes_sent: 0, body_bytes_sent: 0 }, Instant::now());
        }
    }
}
