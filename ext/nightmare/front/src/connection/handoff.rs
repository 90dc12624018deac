//! Getting a whole request to an upstream: the group its Host names, room
//! on a server of it now (see `upstream::pool` for which), or a place in
//! the front's queue until a grant comes; then a connection to that server,
//! the request written for it, and the exchange started. A server that
//! cannot take the request passes it to the next one: a connect refused or
//! timed out, an accept queue found full, a server that closed without an
//! answer (for a request that may safely run twice). What no server takes
//! is answered by the front (421, 502, 503, 504), and said in the log here,
//! in the front's words.

use std::time::{Duration, Instant};

use crate::connection_id::ConnectionId;
use crate::counters::Counters;
use crate::http::error_response::Rejection;
use crate::loop_context::{LoopContext, upstream_token};
use crate::net::client_address::ClientAddress;
use crate::net::listener::Scheme;
use crate::response::framing::ClientTerms;
use crate::shared::StopMode;
use crate::temp_budget::TempShare;
use crate::upstream::address::UpstreamAddress;
use crate::upstream::connect::{ConnectError, connect};
use crate::upstream::exchange::{Exchange, Patience};
use crate::upstream::outbound::{BufferedRequest, LastFailure};
use crate::upstream::pool::{Admission, Failure, InFlight, Placement, QueuePlace, ServerId};

/// A request waiting in the front's queue, and its place there (dropping
/// it leaves the queue).
#[derive(Debug)]
pub struct QueuedRequest {
    request: Box<BufferedRequest>,
    place: QueuePlace,
    /// When its queue_timeout ends.
    pub deadline: Instant,
}

/// The client connection a request came on, as the server must know it.
#[derive(Clone, Copy, Debug)]
pub struct ClientSide<'a> {
    pub id: ConnectionId,
    pub peer: &'a ClientAddress,
    pub scheme: Scheme,
    /// The connection may carry another request after this one
    /// (keepalive_requests, and the front not stopping).
    pub may_keep_alive: bool,
}

/// Where a request stands after a step of its handoff.
#[derive(Debug)]
pub enum Handoff {
    /// With a server, after `waited` in the front's queue (if it was queued).
    Started { exchange: Box<Exchange>, waited: Option<Duration> },
    /// Waiting in the front's queue for a grant.
    Queued(QueuedRequest),
    /// The front answers it itself.
    Refused(Rejection),
}

/// A request just completed: to a server now, or into the queue.
pub fn admit(request: Box<BufferedRequest>, client: ClientSide, ctx: &mut LoopContext) -> Handoff {
    let shared = ctx.shared;
    match shared.pool.group_for(request.head.header("host")) {
        Some(group) => {
            let mut request = request;
            request.group = group;
            place(request, client, ctx, Placement::New)
        }
        // RFC 9110 §15.5.20: this front has nothing that answers for that name.
        None => {
            let host = request.head.header("host").map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            shared.log.info(format!("client {}: no upstream serves host {host:?}; answered 421", client.peer));
            Handoff::Refused(Rejection::new(421, "no server here answers for that host"))
        }
    }
}

/// The grant a queued request waited for: room on a server.
pub fn granted(queued: QueuedRequest, room: InFlight, client: ClientSide, ctx: &mut LoopContext) -> Handoff {
    start(queued.request, queued.place.granted(room), client, ctx)
}

/// A queued request that waited queue_timeout: out of the queue (its place
/// is dropped with it), and 503.
pub fn waited_too_long(queued: QueuedRequest, client: ClientSide, ctx: &LoopContext) -> Rejection {
    drop(queued);
    if ctx.shared.overload.allows(ctx.now) {
        let limit = ctx.shared.config.queue_timeout.as_secs_f64();
        ctx.shared.log.warn(format!(
            "request of client {} waited queue_timeout ({limit}s) for a worker; answered 503 \
             (at most one such line a second)",
            client.peer
        ));
    }
    Rejection::overloaded("no worker was free in time")
}

/// The server of an exchange could not take its request (`failed`: which,
/// the room the exchange held there, and how): the next one may.
pub fn retry(
    request: Box<BufferedRequest>,
    (server, room, failure): (ServerId, Option<InFlight>, Failure),
    problem: &str,
    client: ClientSide,
    ctx: &mut LoopContext,
) -> Handoff {
    let shared = ctx.shared;
    shared.pool.failed(server, failure, ctx.now);
    drop(room);
    let next = place(request, client, ctx, Placement::Again);
    if !matches!(next, Handoff::Refused(_)) {
        Counters::add(&shared.counters.upstream_retries);
        if shared.upstream_trouble.allows(ctx.now) {
            let address = &shared.pool.server(server).address;
            let what = if failure == Failure::Unreachable { "is unreachable (left to the prober)" } else { "failed" };
            shared.log.warn(format!(
                "upstream {address} {what} ({problem}) with a request of client {}; it went to the next server \
                 (at most one such line a second)",
                client.peer
            ));
        }
    }
    next
}

/// Admission, for a new request or one coming back from a server that
/// could not take it (see `Placement`).
fn place(request: Box<BufferedRequest>, client: ClientSide, ctx: &mut LoopContext, placement: Placement) -> Handoff {
    let shared = ctx.shared;
    match shared.pool.admit(client.id, request.group, &request.tried, placement, ctx.now) {
        Admission::Granted(in_flight) => start(request, in_flight, client, ctx),
        Admission::Queued(place) => queue(request, place, ctx),
        Admission::Full => {
            if shared.overload.allows(ctx.now) {
                let limit = shared.config.max_queued_requests;
                shared.log.warn(format!(
                    "request of client {} refused: {limit} requests already wait for a worker \
                     (max_queued_requests); answered 503 (at most one such line a second)",
                    client.peer
                ));
            }
            Handoff::Refused(Rejection::overloaded("every worker is busy"))
        }
        Admission::Exhausted => exhausted(&request, client, ctx),
    }
}

/// Every server the request could go to was tried; the last one's
/// failure says what to answer.
fn exhausted(request: &BufferedRequest, client: ClientSide, ctx: &LoopContext) -> Handoff {
    let shared = ctx.shared;
    let Some(last) = &request.last_failure else {
        shared.log.error(format!("no upstream server for the request of client {}; answered 503", client.peer));
        return Handoff::Refused(Rejection::new(503, "no upstream server is configured"));
    };
    let server = shared.pool.server(last.server);
    let problem = &last.problem;
    match (server.local, last.reached) {
        (true, true) => {
            shared.log.error(format!(
                "a worker closed its connection for client {} early ({problem}; killed or crashed?); answered 502",
                client.peer
            ));
            Handoff::Refused(Rejection::new(502, "the application server did not answer"))
        }
        (true, false) => {
            if shared.upstream_trouble.allows(ctx.now) {
                let path = match &server.address {
                    UpstreamAddress::Unix(path) => path.display().to_string(),
                    other => other.to_string(),
                };
                shared.log.error(format!("no workers listen on {path} ({problem}): is the master gone? answering 503"));
            }
            Handoff::Refused(Rejection::new(503, "no workers are running"))
        }
        (false, _) => {
            if shared.upstream_trouble.allows(ctx.now) {
                shared.log.error(format!(
                    "no upstream could take the request of client {} ({} tried; the last, {}: {problem}); \
                     answered 502 (at most one such line a second)",
                    client.peer,
                    request.tried.len(),
                    server.address
                ));
            }
            Handoff::Refused(Rejection::new(502, "no upstream server could take the request"))
        }
    }
}

fn queue(mut request: Box<BufferedRequest>, place: QueuePlace, ctx: &LoopContext) -> Handoff {
    let since = *request.queued_since.get_or_insert(ctx.now);
    let deadline = since + ctx.shared.config.queue_timeout;
    Handoff::Queued(QueuedRequest { request, place, deadline })
}

/// Connects to the server `in_flight` names and starts the exchange; a
/// server that cannot be reached passes the request on.
fn start(mut request: Box<BufferedRequest>, in_flight: InFlight, client: ClientSide, ctx: &mut LoopContext) -> Handoff {
    let shared = ctx.shared;
    let id = in_flight.server();
    let server = shared.pool.server(id);
    let connected = match connect(&server.address) {
        Ok(connected) => connected,
        Err(ConnectError::Busy) => {
            if shared.full_accept_queue.allows(ctx.now) {
                let in_flight = shared.pool.in_flight_to(id);
                let (whose, to) = if server.local {
                    ("the workers'".to_owned(), "them".to_owned())
                } else {
                    (format!("upstream {}'s", server.address), "it".to_owned())
                };
                shared.log.info(format!(
                    "{whose} accept queue is full ({in_flight} requests in flight to {to}); \
                     requests go to another server or wait in the front until one ends"
                ));
            }
            in_flight.busy();
            return place(request, client, ctx, Placement::AfterBusy(id));
        }
        Err(error) => {
            shared.pool.failed(id, Failure::Refused, ctx.now);
            request.tried.push(id);
            request.last_failure = Some(LastFailure { server: id, problem: error.to_string(), reached: false });
            drop(in_flight);
            let next = place(request, client, ctx, Placement::Again);
            if !matches!(next, Handoff::Refused(_)) && shared.upstream_trouble.allows(ctx.now) {
                shared.log.warn(format!(
                    "cannot connect to upstream {} ({error}); the request of client {} went to the next server \
                     (at most one such line a second)",
                    server.address, client.peer
                ));
            }
            return next;
        }
    };
    if server.backup {
        Counters::add(&shared.counters.backup_requests);
        if shared.overflow.allows(ctx.now) {
            shared.log.info(format!(
                "a request of client {} went to backup {}: the servers before it are busy or failing \
                 (at most one such line a second; see backup_requests in the stats)",
                client.peer, server.address
            ));
        }
    }
    let waited = request.queued_since.map(|since| ctx.now.saturating_duration_since(since));
    let head = &request.head;
    let terms = ClientTerms {
        head_request: head.is_head_method(),
        version: head.version,
        keep_alive: head.keep_alive && client.may_keep_alive && shared.stop_mode() == StopMode::Running,
        upgrade: head.upgrade.is_some(),
        https: client.scheme == Scheme::Https,
    };
    let mapping = shared.accel_files.as_ref().map(|files| files.mapping());
    let outbound = request.outbound(&server.preamble, client.peer, client.scheme == Scheme::Https, mapping);
    let config = &shared.config;
    let patience = Patience { connect: config.upstream_connect_timeout, response_head: config.upstream_read_timeout };
    let writer = (ctx.writer.clone(), client.id);
    let watch = (ctx.registry, upstream_token(client.id.slot));
    let share = TempShare::for_reader(&shared.temp_budget, client.id, *client.peer, ctx.now);
    match Exchange::start(
        connected, in_flight, request, outbound, terms, patience, config, share, writer, watch, ctx.now,
    ) {
        Ok(exchange) => {
            Counters::add(&shared.counters.requests_handed_off);
            Handoff::Started { exchange: Box::new(exchange), waited }
        }
        Err(error) => {
            shared.log.error(format!("cannot watch a connection to an upstream: {error}"));
            Handoff::Refused(Rejection::new(503, "no socket for an upstream"))
        }
    }
}
