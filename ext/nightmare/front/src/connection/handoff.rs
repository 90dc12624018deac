//! Getting a whole request to the workers: room in flight now, or a place
//! in the front's queue until a grant comes; then a connection to the
//! workers' private listener, the preamble and the head written for the
//! worker, and the exchange started. What cannot go is answered by the
//! front (503), and said in the log here, in the front's words.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::http::error_response::Rejection;
use crate::loop_context::{LoopContext, upstream_token};
use crate::mailbox::ConnectionId;
use crate::net::client_address::ClientAddress;
use crate::net::listener::Scheme;
use crate::request::body_spool::SpooledBody;
use crate::request::head::{BodyFraming, ForwardingFacts, RequestHead};
use crate::response::framing::ClientTerms;
use crate::shared::StopMode;
use crate::stats::Counters;
use crate::upstream::connect::ConnectError;
use crate::upstream::dispatch::{Admission, InFlight, QueuePlace};
use crate::upstream::exchange::{Exchange, ForwardedRequest};
use crate::upstream::proxy_header;

/// A request read whole, on its way to a worker.
#[derive(Debug)]
pub struct BufferedRequest {
    head: RequestHead,
    body: SpooledBody,
    /// When it was complete, for the worker's X-Request-Start.
    arrived_usec: u64,
    /// The rest of a half-sent `100 Continue`, owed before the response.
    interim: &'static [u8],
    /// What the client sent after this request (pipelining).
    leftover: Vec<u8>,
    /// When it first joined the front's queue: its queue_timeout runs from
    /// then, however often a full accept queue sends it back.
    queued_since: Option<Instant>,
}

impl BufferedRequest {
    pub fn new(head: RequestHead, body: SpooledBody, interim: &'static [u8], leftover: Vec<u8>) -> Self {
        let arrived_usec = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        BufferedRequest { head, body, arrived_usec, interim, leftover, queued_since: None }
    }
}

/// A request waiting in the front's queue, and its place there (dropping
/// it leaves the queue).
#[derive(Debug)]
pub struct QueuedRequest {
    request: Box<BufferedRequest>,
    place: QueuePlace,
    /// When its queue_timeout ends.
    pub deadline: Instant,
}

/// The client connection a request came on, as the worker must know it.
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
    /// With a worker, after `waited` in the front's queue (if it was queued).
    Started { exchange: Box<Exchange>, waited: Option<Duration> },
    /// Waiting in the front's queue for a grant.
    Queued(QueuedRequest),
    /// The front answers it itself.
    Refused(Rejection),
}

/// A request just completed: to a worker now, or into the queue.
pub fn admit(request: Box<BufferedRequest>, client: ClientSide, ctx: &mut LoopContext) -> Handoff {
    match ctx.shared.dispatcher.admit(client.id) {
        Admission::Granted(in_flight) => start(request, in_flight, client, ctx),
        Admission::Queued(place) => queue(request, place, ctx),
        Admission::Full => {
            if ctx.shared.overload.allows(ctx.now) {
                let limit = ctx.shared.config.max_queued_requests;
                ctx.shared.log.warn(format!(
                    "request of client {} refused: {limit} requests already wait for a worker \
                     (max_queued_requests); answered 503 (at most one such line a second)",
                    client.peer
                ));
            }
            Handoff::Refused(Rejection::overloaded("every worker is busy"))
        }
    }
}

/// The grant a queued request waited for.
pub fn granted(queued: QueuedRequest, client: ClientSide, ctx: &mut LoopContext) -> Handoff {
    start(queued.request, queued.place.granted(), client, ctx)
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

fn queue(mut request: Box<BufferedRequest>, place: QueuePlace, ctx: &LoopContext) -> Handoff {
    let since = *request.queued_since.get_or_insert(ctx.now);
    let deadline = since + ctx.shared.config.queue_timeout;
    Handoff::Queued(QueuedRequest { request, place, deadline })
}

/// Connects to the workers and starts the exchange; a full accept queue
/// puts the request back at the head of the front's queue.
fn start(request: Box<BufferedRequest>, in_flight: InFlight, client: ClientSide, ctx: &mut LoopContext) -> Handoff {
    let shared = ctx.shared;
    let upstream = match shared.workers.connect() {
        Ok(upstream) => upstream,
        Err(ConnectError::Busy) => {
            if shared.full_accept_queue.allows(ctx.now) {
                let in_flight = shared.dispatcher.stats().in_flight;
                shared.log.info(format!(
                    "the workers' accept queue is full ({in_flight} requests in flight); \
                     requests wait in the front until one ends"
                ));
            }
            let place = in_flight.requeue_at_head(client.id);
            return queue(request, place, ctx);
        }
        Err(ConnectError::Absent(error)) => {
            if shared.unreachable_workers.allows(ctx.now) {
                shared.log.error(format!(
                    "no workers listen on {} ({error}): is the master gone? answering 503",
                    shared.workers.path().display()
                ));
            }
            return Handoff::Refused(Rejection::new(503, "no workers are running"));
        }
        Err(ConnectError::Failed(error)) => {
            if shared.unreachable_workers.allows(ctx.now) {
                shared.log.error(format!(
                    "cannot connect to the workers on {}: {error}; answering 503",
                    shared.workers.path().display()
                ));
            }
            return Handoff::Refused(Rejection::new(503, "the workers are unreachable"));
        }
    };
    let BufferedRequest { head, body, arrived_usec, interim, leftover, queued_since } = *request;
    let waited = queued_since.map(|since| ctx.now.saturating_duration_since(since));
    let terms = ClientTerms {
        head_request: head.is_head_method(),
        version: head.version,
        keep_alive: head.keep_alive && client.may_keep_alive && shared.stop_mode() == StopMode::Running,
        upgrade: head.upgrade.is_some(),
    };
    let body_length = (head.framing != BodyFraming::None).then(|| body.len());
    let facts = ForwardingFacts { https: client.scheme == Scheme::Https, request_start_usec: arrived_usec };
    let mut bytes = proxy_header::encode(client.peer, &shared.workers.secret).to_vec();
    head.write_upstream_head(&mut bytes, body_length, &facts);
    let forwarded = ForwardedRequest { head: bytes, body, terms, interim, leftover };
    let writer = (ctx.writer.clone(), client.id);
    let watch = (ctx.registry, upstream_token(client.id.slot));
    match Exchange::start(upstream, in_flight, forwarded, &shared.config, &shared.temp_budget, writer, watch) {
        Ok(exchange) => {
            Counters::add(&shared.counters.requests_handed_off);
            Handoff::Started { exchange: Box::new(exchange), waited }
        }
        Err(error) => {
            shared.log.error(format!("cannot watch a connection to the workers: {error}"));
            Handoff::Refused(Rejection::new(503, "no socket for a worker"))
        }
    }
}
