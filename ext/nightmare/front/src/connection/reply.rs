//! The front's own answers (a 4xx for a bad request, a 5xx when no worker
//! can answer), and the lingering close after them.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::{Connection, State, Step};
use crate::http::error_response::Rejection;
use crate::loop_context::LoopContext;
use crate::net::socket_io::{ReadOutcome, WriteOutcome, read_some, write_some};

/// A canned reply must not keep a connection open for long.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Before closing on a client that may still be sending, read and drop
/// what it sends for a while: closing with unread data resets the
/// connection, and the reset can destroy the reply before the client reads
/// it (nginx's lingering close).
const LINGER_TOTAL: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    bytes: Vec<u8>,
    sent: usize,
    head_length: usize,
}

impl Reply {
    /// Bytes sent so far: all, and the body's.
    pub(super) fn sent(&self) -> (u64, u64) {
        (self.sent as u64, self.sent.saturating_sub(self.head_length) as u64)
    }
}

impl Connection {
    /// Answers a bad request itself; the log line blames the client at info
    /// level, since the front and its workers are fine.
    pub(super) fn reject(&mut self, rejection: Rejection, ctx: &mut LoopContext) -> State {
        ctx.shared.log.info(format!("client {}: {}; answered {}", self.peer, rejection.reason, rejection.status));
        self.reply_with(rejection, ctx)
    }

    /// Answers with `rejection` (the site's page for it, to a browser),
    /// then closes (lingering).
    pub(super) fn reply_with(&mut self, rejection: Rejection, ctx: &mut LoopContext) -> State {
        let bytes = ctx.shared.config.error_pages.reply(rejection, self.html_errors);
        self.reply_and_close(rejection.status, bytes, ctx)
    }

    /// Sends `bytes`, a whole response of `status` the front wrote, then
    /// closes (lingering).
    pub(super) fn reply_and_close(&mut self, status: u16, bytes: Vec<u8>, ctx: &mut LoopContext) -> State {
        ctx.shared.count_response(status);
        let timeout = ctx.shared.config.send_timeout.min(REPLY_TIMEOUT);
        self.deadline = Some(ctx.now + timeout);
        let head_length = bytes.windows(4).position(|window| window == b"\r\n\r\n").map_or(bytes.len(), |at| at + 4);
        State::Replying(Reply { status, bytes, sent: 0, head_length })
    }

    pub(super) fn reply(&mut self, mut reply: Reply, ctx: &mut LoopContext) -> (State, Step) {
        if !self.client_ready.writable {
            return (State::Replying(reply), Step::Wait);
        }
        match write_some(&mut self.client, &reply.bytes[reply.sent..]) {
            WriteOutcome::Wrote(n) => {
                reply.sent += n;
                if reply.sent < reply.bytes.len() {
                    (State::Replying(reply), Step::Again)
                } else {
                    self.end_entry(reply.status, reply.sent(), ctx);
                    (self.start_lingering(ctx), Step::Again)
                }
            }
            WriteOutcome::WouldBlock => {
                self.client_ready.writable = false;
                (State::Replying(reply), Step::Wait)
            }
            WriteOutcome::Gone | WriteOutcome::Failed(_) => {
                self.end_entry(reply.status, reply.sent(), ctx);
                (State::Closed, Step::Again)
            }
        }
    }

    pub(super) fn start_lingering(&mut self, ctx: &mut LoopContext) -> State {
        let _ = self.client.shutdown(Shutdown::Write);
        let until = ctx.now + LINGER_TOTAL;
        self.deadline = Some(until.min(ctx.now + LINGER_IDLE));
        State::Lingering { until }
    }

    pub(super) fn linger(&mut self, until: Instant, ctx: &mut LoopContext) -> (State, Step) {
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
}
