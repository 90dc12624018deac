//! Reading a request in: the head under its limits (a plain client's is
//! answered with the redirect to HTTPS at once, when asked), then the body
//! into memory or a temp file; a whole request goes to try_files or on to
//! the workers.

use std::io;
use std::time::Instant;

use super::handoff;
use super::{Connection, State, Step};
use crate::counters::Counters;
use crate::http::acme_challenge;
use crate::http::error_pages;
use crate::http::error_response::Rejection;
use crate::http::https_redirect;
use crate::http2::session::PREFACE;
use crate::loop_context::LoopContext;
use crate::net::client_address::ClientAddress;
use crate::net::listener::Scheme;
use crate::net::socket_io::{ReadOutcome, WriteOutcome, read_some, write_some};
use crate::request::body::{BodyFeed, BodyPlan, BodyRead};
use crate::request::body_spool::{SpoolError, SpooledBody};
use crate::request::head::{HeadReader, RequestHead};
use crate::request_share::ShareAdmission;
use crate::static_files::Lookup;
use crate::stats;
use crate::status_page::{PageFormat, StatusReply};
use crate::upstream::outbound::BufferedRequest;

impl Connection {
    pub(super) fn read_head(&mut self, mut reader: HeadReader, ctx: &mut LoopContext) -> (State, Step) {
        // HTTP/2 with prior knowledge (http2_cleartext): the preface's first
        // 18 bytes read as a whole HTTP/1.1 head, so they are not parsed
        // as one while the rest may still come.
        let mut preface_so_far = false;
        if self.requests_served == 0 && ctx.shared.config.http2_cleartext && !self.client.is_tls() {
            let bytes = reader.bytes();
            let seen = bytes.len().min(PREFACE.len());
            preface_so_far = seen > 0 && bytes[..seen] == PREFACE[..seen];
            if preface_so_far && seen == PREFACE.len() {
                let first = bytes.to_vec();
                return (self.begin_http2(&first, ctx), Step::Again);
            }
        }
        if reader.has_unscanned() && !preface_so_far {
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
                if reader.is_empty() && self.requests_served == 0 && self.client.negotiated_h2() {
                    let first = ctx.scratch[..n].to_vec();
                    return (self.begin_http2(&first, ctx), Step::Again);
                }
                if reader.is_empty() {
                    self.begin_entry(ctx);
                    if self.requests_served > 0 {
                        // A kept-alive connection starts its next request:
                        // the head now has client_header_timeout to arrive.
                        self.deadline = Some(ctx.now + ctx.shared.config.client_header_timeout);
                    }
                }
                reader.push(&ctx.scratch[..n]);
                if self.requests_served == 0 && ctx.shared.config.http2_cleartext && reader.bytes().starts_with(b"PRI ")
                {
                    // Looked at again at the top, whole or in part.
                    return (State::ReadingHead(reader), Step::Again);
                }
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
        let polled = reader.poll(&ctx.shared.config.head_limits);
        if !matches!(polled, Ok(None)) {
            // A pipelined request's head came with the one before: it
            // begins now.
            self.begin_entry(ctx);
        }
        match polled {
            Ok(None) => State::ReadingHead(reader),
            Ok(Some(_)) if self.client.spoke_plain_http() => {
                self.reject(Rejection::new(400, "plain HTTP request sent to the HTTPS port"), ctx)
            }
            Ok(Some((head, leftover))) => {
                Counters::add(&ctx.shared.counters.requests);
                self.html_errors = error_pages::wants_html(&head.method, head.header("accept"));
                if let Some(entry) = &mut self.entry {
                    entry.request(&head);
                    if self.client.is_stream() {
                        entry.over_http2();
                    }
                }
                if let Some(answer) = self.acme_challenge_answer(&head, ctx) {
                    let bytes = acme_challenge::response(&answer, head.is_head_method());
                    return self.reply_and_close(200, bytes, ctx);
                }
                if let Some(port) = self.https_redirect_port(&head, ctx) {
                    // The body, if any, is left to the lingering close.
                    return match https_redirect::response(
                        head.header("host"),
                        &head.target,
                        head.is_head_method(),
                        port,
                    ) {
                        Ok(bytes) => self.reply_and_close(308, bytes, ctx),
                        Err(rejection) => self.reject(rejection, ctx),
                    };
                }
                self.begin_body(head, leftover, ctx)
            }
            Err(rejection) => self.reject(rejection, ctx),
        }
    }

    /// Where this request is sent instead (`ssl_redirect`): a plain TCP
    /// client's, the status page's and ACME challenges excepted.
    fn https_redirect_port(&self, head: &RequestHead, ctx: &LoopContext) -> Option<u16> {
        let config = &ctx.shared.config;
        let port = config.https_redirect_port?;
        let plain_tcp = self.scheme == Scheme::Http && matches!(self.peer, ClientAddress::Ip(_));
        let status_page = config.status_page.as_ref().is_some_and(|page| page.is_for(head));
        (plain_tcp && !status_page && !acme_challenge::is_challenge(&head.target)).then_some(port)
    }

    /// The key authorization for an HTTP-01 token of the front's own
    /// orders, on plain HTTP (the only scheme an issuer uses for it).
    fn acme_challenge_answer(&self, head: &RequestHead, ctx: &LoopContext) -> Option<String> {
        let store = ctx.shared.acme_challenges.as_ref()?;
        if self.scheme != Scheme::Http || !matches!(head.method.as_str(), "GET" | "HEAD") {
            return None;
        }
        store.http_answer(acme_challenge::token(&head.target)?)
    }

    fn begin_body(&mut self, head: RequestHead, leftover: Vec<u8>, ctx: &mut LoopContext) -> State {
        let writer = Some((ctx.writer.clone(), self.id));
        let body_started = !leftover.is_empty();
        match BodyRead::plan(head, &ctx.shared.config, &ctx.shared.temp_budget, body_started, ctx.now, writer) {
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

    pub(super) fn read_body(&mut self, mut body: Box<BodyRead>, ctx: &mut LoopContext) -> (State, Step) {
        if let Some(failure) = body.spool_failure() {
            return (self.finish_body(body, BodyFeed::SpoolFailed(failure), Vec::new(), ctx), Step::Again);
        }
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
        let room = body.room();
        if room == 0 {
            // The temp file's writer is behind: the client waits for the
            // disk (the writer tells this connection when it has written),
            // and the pause is not the client's.
            self.deadline = Some(ctx.now + ctx.shared.config.client_body_timeout);
            return (State::ReadingBody(body), Step::Wait);
        }
        let wanted = body.still_needed().map_or(ctx.scratch.len(), |needed| {
            usize::try_from(needed).unwrap_or(usize::MAX).clamp(1, ctx.scratch.len())
        });
        let wanted = wanted.min(room);
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

    /// client_body_timeout or client_body_min_rate ran out: 408.
    pub(super) fn body_too_slow(&mut self, body: Box<BodyRead>, ctx: &mut LoopContext) -> State {
        let config = &ctx.shared.config;
        let below_rate = body
            .rate_deadline(config.client_body_min_rate, config.client_body_timeout)
            .is_some_and(|deadline| deadline <= ctx.now);
        if below_rate {
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
        self.reply_with(Rejection::new(408, "request body not received in time"), ctx)
    }

    fn finish_body(&mut self, body: Box<BodyRead>, feed: BodyFeed, leftover: Vec<u8>, ctx: &mut LoopContext) -> State {
        match feed {
            BodyFeed::Complete if !body.is_stored() => {
                // Read whole, but the writer still has some of it to write.
                self.deadline = Some(ctx.now + ctx.shared.config.client_body_timeout);
                State::StoringBody { body, leftover }
            }
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
                self.reply_with(Rejection::new(500, "the request body could not be stored"), ctx)
            }
            BodyFeed::NeedMore => State::ReadingBody(body),
        }
    }

    /// A body read whole, its last bytes on their way to the temp file.
    pub(super) fn store_body(
        &mut self,
        body: Box<BodyRead>,
        leftover: Vec<u8>,
        ctx: &mut LoopContext,
    ) -> (State, Step) {
        if let Some(failure) = body.spool_failure() {
            return (self.finish_body(body, BodyFeed::SpoolFailed(failure), leftover, ctx), Step::Again);
        }
        if body.is_stored() {
            return (self.finish_body(body, BodyFeed::Complete, leftover, ctx), Step::Again);
        }
        (State::StoringBody { body, leftover }, Step::Wait)
    }

    /// The temp file's writer took client_body_timeout for a body's last
    /// bytes: the disk is stalled, and the request cannot wait for it.
    pub(super) fn body_never_stored(&mut self, ctx: &mut LoopContext) -> State {
        ctx.shared.log.error(format!(
            "the request body of client {} was not written to temp_path {} within client_body_timeout; answered 503",
            self.peer,
            ctx.shared.config.temp_path.display()
        ));
        self.reply_with(Rejection::overloaded("the request body could not be stored in time"), ctx)
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
        super::shedding::shed_round("a request body was refused for want of it", ctx);
        self.reply_with(Rejection::overloaded("no room to store the request body now"), ctx)
    }

    /// The request is whole: try_files answers it, or it goes on to the
    /// workers (now, or through the front's queue).
    fn complete(
        &mut self,
        head: RequestHead,
        body: SpooledBody,
        interim: &'static [u8],
        leftover: Vec<u8>,
        ctx: &mut LoopContext,
    ) -> State {
        self.deadline = None;
        if let Some(page) = &ctx.shared.config.status_page
            && page.is_for(&head)
        {
            let render = |format| {
                let figures = stats::snapshot(ctx.shared);
                match format {
                    PageFormat::Json => stats::to_json(&figures),
                    PageFormat::StubStatus => stats::to_stub_status(&figures),
                }
            };
            return match page.answer(&head, &self.peer, render) {
                StatusReply::Page { status, bytes } => self.reply_and_close(status, bytes, ctx),
                StatusReply::Refused(rejection) => self.reject(rejection, ctx),
            };
        }
        if let Some(files) = &ctx.shared.static_files {
            let keep_alive = head.keep_alive && self.client_side(ctx).may_keep_alive;
            match files.lookup(&head, keep_alive, ctx.now) {
                Lookup::App => {}
                Lookup::Serve(mut reply) => {
                    ctx.shared.count_response(reply.status());
                    if let Some(hsts) = &ctx.shared.config.hsts
                        && self.scheme == Scheme::Https
                    {
                        reply.add_header("Strict-Transport-Security", hsts);
                    }
                    reply.put_first(interim);
                    self.deadline = Some(ctx.now + ctx.shared.config.send_timeout);
                    return State::ServingFile { reply: Box::new(reply), leftover };
                }
                Lookup::Refuse(rejection) => return self.reject(rejection, ctx),
            }
        }
        let mut request = Box::new(BufferedRequest::new(head, body, interim, leftover));
        match ctx.shared.shares.admit_stream(&self.peer, self.id, self.http2_share_key()) {
            ShareAdmission::Uncounted => {}
            ShareAdmission::Admitted(slot) => self.share = Some(slot),
            ShareAdmission::Wait(ticket) => {
                // Its wait counts as the queue's: queue_timeout, $queue_time.
                let since = *request.queued_since.get_or_insert(ctx.now);
                self.deadline = Some(since + ctx.shared.config.queue_timeout);
                return State::AwaitingShare { request, ticket };
            }
            ShareAdmission::Full => {
                if ctx.shared.overload.allows(ctx.now) {
                    ctx.shared.log.warn(format!(
                        "request of client {} refused: {} requests already wait behind their own address's \
                         earlier ones (max_queued_requests); answered 503 (at most one such line a second)",
                        self.peer, ctx.shared.config.max_queued_requests
                    ));
                }
                return self.reply_with(Rejection::overloaded("too many requests wait for a worker"), ctx);
            }
        }
        let handoff = handoff::admit(request, self.client_side(ctx), ctx);
        self.follow(handoff, ctx)
    }
}

/// The sooner of client_body_timeout from now and the moment the body
/// falls below client_body_min_rate.
fn body_deadline(body: &BodyRead, ctx: &LoopContext) -> Instant {
    let config = &ctx.shared.config;
    let pause = ctx.now + config.client_body_timeout;
    body.rate_deadline(config.client_body_min_rate, config.client_body_timeout).map_or(pause, |rate| rate.min(pause))
}
