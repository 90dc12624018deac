//! A request's way back: the handoff's outcome, the exchange with a worker
//! (and the tunnel a 101 makes of it), a static file, and what the
//! connection does once the response is out.

use std::net::Shutdown;

use super::handoff::Handoff;
use super::{Connection, State, Step};
use crate::access_log::CLIENT_CLOSED;
use crate::http::error_response::Rejection;
use crate::loop_context::LoopContext;
use crate::net::listener::Scheme;
use crate::request::head::HeadReader;
use crate::response::framing::AccelAnswer;
use crate::response::send_pace::SendPace;
use crate::shared::StopMode;
use crate::static_files::{FileFacts, FileReply, SendStep};
use crate::upstream::exchange::{Exchange, Pump};
use crate::upstream::pool::Failure;
use crate::upstream::tunnel::{Tunnel, TunnelStep};

use super::handoff;

impl Connection {
    /// The state a step of the handoff leads to.
    pub(super) fn follow(&mut self, handoff: Handoff, ctx: &mut LoopContext) -> State {
        match handoff {
            Handoff::Started { exchange, waited } => {
                if let Some(entry) = &mut self.entry {
                    entry.handed_off(waited, ctx.now);
                }
                State::Exchanging(exchange)
            }
            Handoff::Queued(queued) => {
                self.deadline = Some(queued.deadline);
                State::Queued(queued)
            }
            Handoff::Refused(rejection) => self.reply_with(rejection, ctx),
        }
    }

    pub(super) fn exchange(&mut self, mut exchange: Box<Exchange>, ctx: &mut LoopContext) -> (State, Step) {
        if exchange.is_shed() {
            return (self.shed(exchange, ctx), Step::Again);
        }
        let pumped = exchange.pump(&mut self.client, &mut self.client_ready, ctx.scratch, ctx.now);
        self.after_pump(exchange, pumped, ctx)
    }

    /// Where the exchange's last step leads.
    pub(super) fn after_pump(
        &mut self,
        mut exchange: Box<Exchange>,
        pumped: Pump,
        ctx: &mut LoopContext,
    ) -> (State, Step) {
        if exchange.worker_finished()
            && let Some(entry) = &mut self.entry
        {
            entry.upstream_done(ctx.now);
        }
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
                let waiting = exchange.has_pending_response();
                let idle = match (waiting, client_kept_up, self.deadline) {
                    (false, _, _) => None,
                    (true, false, Some(deadline)) => Some(deadline),
                    (true, _, _) => Some(ctx.now + ctx.shared.config.send_timeout),
                };
                self.deadline = self.send_deadline(waiting, exchange.sent_to_client().0, idle, ctx);
                (State::Exchanging(exchange), Step::Wait)
            }
            Pump::Finished { keep_alive } => {
                if let Some((answer, facts)) = exchange.take_accel() {
                    let leftover = exchange.take_leftover();
                    return (self.serve_named_file(answer, facts, keep_alive, leftover, ctx), Step::Again);
                }
                if let Some(status) = exchange.status() {
                    ctx.shared.count_response(status);
                    self.end_entry(status, exchange.sent_to_client(), ctx);
                }
                let leftover = exchange.take_leftover();
                (self.after_response(keep_alive, leftover, ctx), Step::Again)
            }
            Pump::Retry { request, room, failure, problem } => {
                let failed = (exchange.server(), room, failure);
                let handoff = handoff::retry(request, failed, &problem, self.client_side(ctx), ctx);
                (self.follow(handoff, ctx), Step::Again)
            }
            Pump::TimedOut => {
                let limit = ctx.shared.config.upstream_read_timeout.as_secs_f64();
                let address = &ctx.shared.pool.server(exchange.server()).address;
                ctx.shared.log.error(format!(
                    "upstream {address} sent no response head within upstream_read_timeout ({limit}s) for client {}; \
                     answered 504",
                    self.peer
                ));
                (self.reply_with(Rejection::new(504, "the upstream did not answer in time"), ctx), Step::Again)
            }
            Pump::Broken { problem, client_got_bytes, server_died } => {
                let server = ctx.shared.pool.server(exchange.server());
                // nginx names the upstream; the master's own are its workers.
                let who = if server.local { "a worker".to_owned() } else { format!("upstream {}", server.address) };
                if client_got_bytes {
                    if let Some(status) = exchange.status() {
                        ctx.shared.count_response(status);
                        self.end_entry(status, exchange.sent_to_client(), ctx);
                    }
                    ctx.shared.log.error(format!("the response of {who} to client {} broke off: {problem}", self.peer));
                    (State::Closed, Step::Again)
                } else if server_died {
                    ctx.shared.pool.failed(exchange.server(), Failure::Refused, ctx.now);
                    ctx.shared.log.error(format!(
                        "{who} closed its connection for client {} early ({problem}; killed or crashed?); answered 502",
                        self.peer
                    ));
                    (self.reply_with(Rejection::new(502, "the application server did not answer"), ctx), Step::Again)
                } else {
                    ctx.shared.log.error(format!(
                        "{who} sent client {} a response the front cannot pass on ({problem}); answered 502",
                        self.peer
                    ));
                    (
                        self.reply_with(Rejection::new(502, "the application server's response was malformed"), ctx),
                        Step::Again,
                    )
                }
            }
            Pump::ClientGone => {
                if let Some(status) = exchange.status() {
                    ctx.shared.count_response(status);
                }
                // nginx's 499 for a client that left before its response began.
                let (sent, body_sent) = exchange.sent_to_client();
                let status = exchange.status().filter(|_| sent > 0).unwrap_or(CLIENT_CLOSED);
                self.end_entry(status, (sent, body_sent), ctx);
                ctx.shared.log.info(format!("client {} went away before the end of its response", self.peer));
                (self.abandon(exchange, ctx), Step::Again)
            }
            Pump::Upgraded => match exchange.into_tunnel(ctx.shared.config.proxy_buffer_size) {
                Some(tunnel) => {
                    ctx.shared.count_response(101);
                    self.end_entry(101, (0, 0), ctx);
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

    /// The client is gone. A worker still reading the request is cut off
    /// (it fails fast on the short read); one already working is waited
    /// for, so its room is given back when it is really free, but no longer
    /// than send_timeout.
    pub(super) fn abandon(&mut self, exchange: Box<Exchange>, ctx: &LoopContext) -> State {
        if exchange.is_sending_request() || exchange.worker_finished() {
            return State::Closed;
        }
        let _ = self.client.shutdown(Shutdown::Both);
        self.deadline = Some(ctx.now + ctx.shared.config.send_timeout);
        State::Draining(exchange)
    }

    pub(super) fn drain(&mut self, mut exchange: Box<Exchange>, ctx: &mut LoopContext) -> (State, Step) {
        if exchange.discard(ctx.scratch) {
            (State::Closed, Step::Again)
        } else {
            (State::Draining(exchange), Step::Wait)
        }
    }

    pub(super) fn tunnel(&mut self, mut tunnel: Box<Tunnel>, ctx: &mut LoopContext) -> (State, Step) {
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

    pub(super) fn serve_file(
        &mut self,
        mut reply: Box<FileReply>,
        leftover: Vec<u8>,
        ctx: &mut LoopContext,
    ) -> (State, Step) {
        if !self.client_ready.writable {
            return (State::ServingFile { reply, leftover }, Step::Wait);
        }
        match reply.send(&mut self.client) {
            SendStep::Done => {
                self.end_entry(reply.status(), reply.sent(), ctx);
                (self.after_response(reply.keep_alive, leftover, ctx), Step::Again)
            }
            SendStep::Blocked { moved } => {
                self.client_ready.writable = false;
                let idle = if moved { Some(ctx.now + ctx.shared.config.send_timeout) } else { self.deadline };
                self.deadline = self.send_deadline(true, reply.sent().0, idle, ctx);
                (State::ServingFile { reply, leftover }, Step::Wait)
            }
            SendStep::Gone => {
                ctx.shared.log.info(format!("client {} went away before the end of a static file", self.peer));
                self.end_entry(reply.status(), reply.sent(), ctx);
                (State::Closed, Step::Again)
            }
            SendStep::Failed(error) => {
                ctx.shared.log.error(format!("cannot send a static file to client {}: {error}", self.peer));
                self.end_entry(reply.status(), reply.sent(), ctx);
                (State::Closed, Step::Again)
            }
        }
    }

    /// A response is complete: wait for the next request, or close.
    fn after_response(&mut self, keep_alive: bool, leftover: Vec<u8>, ctx: &mut LoopContext) -> State {
        self.requests_served += 1;
        self.pace = SendPace::default();
        // A pipelined next request must not count against this one.
        self.share = None;
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
    /// The app named a file for the front to serve (X-Accel-Redirect): it
    /// is answered as try_files answers, with the app's descriptive headers;
    /// a file the front may not serve is the app's mistake, a 500.
    fn serve_named_file(
        &mut self,
        answer: AccelAnswer,
        facts: FileFacts,
        keep_alive: bool,
        leftover: Vec<u8>,
        ctx: &mut LoopContext,
    ) -> State {
        let Some(files) = &ctx.shared.accel_files else { return State::Closed };
        match files.serve(&answer.uri, &answer.headers, facts, keep_alive, ctx.now) {
            Ok(mut reply) => {
                ctx.shared.count_response(reply.status());
                if let Some(hsts) = &ctx.shared.config.hsts
                    && self.scheme == Scheme::Https
                {
                    reply.add_header("Strict-Transport-Security", hsts);
                }
                self.deadline = Some(ctx.now + ctx.shared.config.send_timeout);
                State::ServingFile { reply: Box::new(reply), leftover }
            }
            Err(why) => {
                ctx.shared.log.error(format!("the response to client {}: {why}; answered 500", self.peer));
                self.reply_with(Rejection::new(500, "the file the application named cannot be served"), ctx)
            }
        }
    }
}
