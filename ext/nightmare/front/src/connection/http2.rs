//! A client that chose HTTP/2: this connection keeps the socket and the
//! session; each stream is served by a connection of its own (see
//! `http2::link`), which the loop makes when the session opens the stream.
//! Here: bytes in, frames out, the connection's own deadlines (the preface
//! and idle time, a client that takes no frames), and going away on a
//! graceful stop.

use std::time::Instant;

use super::{Connection, State, Step};
use crate::connection_id::ConnectionId;
use crate::counters::Counters;
use crate::http2::error_code::H2Error;
use crate::http2::link::Link;
use crate::http2::session::{Config as SessionConfig, Session, Tally};
use crate::http2::stream_end::StreamEnd;
use crate::loop_context::LoopContext;
use crate::net::client_address::ClientAddress;
use crate::net::client_stream::ClientStream;
use crate::net::listener::Scheme;
use crate::net::socket_io::{ReadOutcome, WriteOutcome, read_some, write_some};
use crate::shared::StopMode;

#[derive(Debug)]
pub(super) struct Http2Client {
    link: Link,
    /// Since when it has had no stream (None while it has some).
    idle_since: Option<Instant>,
    /// Since when frames have waited for a socket that takes none.
    blocked_since: Option<Instant>,
    /// Whether a stream was ever opened: before, the preface and the first
    /// request have client_header_timeout; after, idle time is keepalive.
    served: bool,
}

/// Adds what a session counted to the front's figures.
fn count(tally: Tally, ctx: &LoopContext) {
    let counters = &ctx.shared.counters;
    for (counter, amount) in [
        (&counters.http2_streams, tally.streams_opened),
        (&counters.http2_streams_reset_by_client, tally.streams_reset_by_client),
        (&counters.http2_streams_refused, tally.streams_refused),
        (&counters.http2_goaways_sent, tally.goaways_sent),
    ] {
        counter.fetch_add(amount, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the loop does for a connection after running it: connections to
/// run next (a stream's connection has bytes to read, the client's has
/// frames to send), and streams that need a connection made.
#[derive(Default)]
pub struct FollowUp {
    pub wake: Vec<ConnectionId>,
    pub spawn: Option<Spawn>,
}

pub struct Spawn {
    pub link: Link,
    pub streams: Vec<u32>,
    pub peer: ClientAddress,
    pub scheme: Scheme,
}

impl Connection {
    /// The client chose HTTP/2; `first` is what it sent so far.
    pub(super) fn begin_http2(&mut self, first: &[u8], ctx: &mut LoopContext) -> State {
        let config = &ctx.shared.config;
        let session_config = SessionConfig {
            max_header_list: config.head_limits.head_size,
            max_response_head: config.proxy_buffer_size.max(64 * 1024),
            ..SessionConfig::default()
        };
        let link = Link::new(Session::new(session_config, ctx.now), self.id);
        self.http2 = true;
        Counters::add(&ctx.shared.counters.http2_connections);
        let client = Http2Client { link, idle_since: Some(ctx.now), blocked_since: None, served: false };
        self.receive_h2(&client, first, ctx);
        State::Http2(Box::new(client))
    }

    /// A stream's connection, made by the loop for a stream the session
    /// opened; it reads its request as from any client.
    pub fn for_stream(
        id: ConnectionId,
        link: Link,
        stream: u32,
        peer: ClientAddress,
        scheme: Scheme,
        deadline: Instant,
    ) -> Self {
        let client = ClientStream::Stream(Box::new(StreamEnd::new(link, stream)));
        let mut connection = Connection::new(id, client, peer, scheme, None, deadline);
        connection.http2 = true;
        connection
    }

    fn receive_h2(&self, client: &Http2Client, bytes: &[u8], ctx: &LoopContext) {
        let mut link = client.link.lock();
        if let Err(error) = link.session.receive(bytes, ctx.now) {
            let (code, why) = match error {
                H2Error::Connection { code, why } | H2Error::Stream { code, why, .. } => (code, why),
            };
            ctx.shared.log.info(format!("client {}: HTTP/2 {code}: {why}; sent GOAWAY", self.peer));
        }
        count(link.session.take_tally(), ctx);
    }

    pub(super) fn serve_http2(&mut self, mut client: Box<Http2Client>, ctx: &mut LoopContext) -> (State, Step) {
        while self.client_ready.readable && client.link.lock().session.failure().is_none() {
            match read_some(&mut self.client, ctx.scratch) {
                ReadOutcome::Data(n) => {
                    if !self.client.buffers_reads() {
                        self.client_ready.note_short_read(n, ctx.scratch.len());
                    }
                    self.receive_h2(&client, &ctx.scratch[..n], ctx);
                }
                ReadOutcome::WouldBlock => self.client_ready.readable = false,
                ReadOutcome::Eof | ReadOutcome::Gone | ReadOutcome::Failed(_) => {
                    return (self.end_http2(*client), Step::Again);
                }
            }
        }
        let mut link = client.link.lock();
        while self.client_ready.writable {
            let output = link.session.output();
            if output.is_empty() {
                break;
            }
            match write_some(&mut self.client, output) {
                WriteOutcome::Wrote(n) => {
                    link.session.sent(n);
                    client.blocked_since = None;
                }
                WriteOutcome::WouldBlock => self.client_ready.writable = false,
                WriteOutcome::Gone | WriteOutcome::Failed(_) => {
                    drop(link);
                    return (self.end_http2(*client), Step::Again);
                }
            }
        }
        // Would block, here or in a flush before the state ran.
        link.session.note_socket_blocked(!self.client_ready.writable);
        let waiting_output = !link.session.output().is_empty();
        let streams = link.session.stream_count();
        let done = link.session.is_finished() || (link.session.failure().is_some() && !waiting_output);
        drop(link);
        if done {
            return (self.end_http2(*client), Step::Again);
        }
        client.served |= streams > 0;
        client.idle_since = if streams > 0 { None } else { client.idle_since.or(Some(ctx.now)) };
        client.blocked_since = if waiting_output { client.blocked_since.or(Some(ctx.now)) } else { None };
        let config = &ctx.shared.config;
        let idle_limit = if client.served { config.keepalive_timeout } else { config.client_header_timeout };
        let idle = client.idle_since.map(|since| since + idle_limit);
        let blocked = client.blocked_since.map(|since| since + config.send_timeout);
        self.deadline = match (idle, blocked) {
            (Some(idle), Some(blocked)) => Some(idle.min(blocked)),
            (idle, blocked) => idle.or(blocked),
        };
        (State::Http2(client), Step::Wait)
    }

    /// The client is gone, or the session is over: every stream still open
    /// is reset, so their connections end too.
    fn end_http2(&mut self, client: Http2Client) -> State {
        client.link.lock().session.client_gone();
        self.ended_link = Some(client.link);
        State::Closed
    }

    /// An HTTP/2 connection that served streams and has none now: as an
    /// idle keep-alive one, it may be closed to make room for new clients.
    pub(super) fn is_idle_http2(&self) -> bool {
        matches!(&self.state, State::Http2(client) if client.served && client.idle_since.is_some())
    }

    /// A graceful stop: GOAWAY, and the streams in flight finish.
    pub(super) fn stop_http2(&mut self, ctx: &mut LoopContext) {
        if let State::Http2(client) = &self.state
            && ctx.shared.stop_mode() != StopMode::Running
        {
            let mut link = client.link.lock();
            link.session.go_away();
            count(link.session.take_tally(), ctx);
        }
    }

    /// The deadline of an HTTP/2 connection passed: idle too long, or its
    /// client took no frames for send_timeout.
    pub(super) fn expire_http2(&mut self, client: Http2Client, ctx: &LoopContext) -> State {
        if client.blocked_since.is_some() {
            ctx.shared.log.info(format!("HTTP/2 client {} took no frames for send_timeout; closed", self.peer));
        }
        let mut link = client.link.lock();
        link.session.go_away();
        count(link.session.take_tally(), ctx);
        let output = link.session.output().to_vec();
        drop(link);
        let _ = write_some(&mut self.client, &output);
        self.end_http2(client)
    }

    /// What the loop must do after this connection ran (see `FollowUp`).
    pub fn take_follow_up(&mut self, closing: bool) -> FollowUp {
        let mut follow_up = FollowUp::default();
        if let ClientStream::Stream(stream) = &self.client {
            let mut link = stream.link().lock();
            if closing || std::mem::take(&mut link.client_wanted) {
                follow_up.wake.push(link.client);
            }
            return follow_up;
        }
        let link = match &self.state {
            State::Http2(client) => &client.link,
            _ => match &self.ended_link {
                Some(link) => link,
                None => return follow_up,
            },
        };
        let mut state = link.lock();
        if closing {
            // However it ends (a write that failed before its state ran, or
            // an end below): its streams are reset and their connections
            // end, freeing their temp files, rather than wait for a client
            // that is gone.
            state.session.client_gone();
        }
        let opened = state.session.take_opened();
        for stream in state.session.take_wakes() {
            if let Some(id) = state.streams.get(&stream) {
                follow_up.wake.push(*id);
            }
        }
        if closing {
            follow_up.wake.extend(state.streams.values().copied());
        } else if !opened.is_empty() {
            follow_up.spawn = Some(Spawn { link: link.clone(), streams: opened, peer: self.peer, scheme: self.scheme });
        }
        follow_up
    }

    /// For a stream's connection: a number for its HTTP/2 connection that
    /// no other connection has (loop and serial), for the connection's
    /// share of the workers.
    pub(super) fn http2_share_key(&self) -> Option<u64> {
        let ClientStream::Stream(stream) = &self.client else { return None };
        let client = stream.link().lock().client;
        Some(((client.loop_index as u64) << 48) | client.serial)
    }

    /// Its link said it has something to do (see `FollowUp`).
    pub fn on_wake(&mut self, ctx: &mut LoopContext) -> crate::loop_context::Verdict {
        if let ClientStream::Stream(stream) = &self.client {
            // A stream reset while its request waits for a worker must not
            // cost one later (as a client gone from a queued HTTP/1.1
            // request, see on_client_event).
            let waiting =
                matches!(self.state, State::Queued(_) | State::AwaitingShare { .. } | State::StoringBody { .. });
            if waiting && stream.is_reset() {
                return crate::loop_context::Verdict::Close;
            }
            self.client_ready.readable = true;
            self.client_ready.writable = true;
        }
        self.drive(ctx)
    }
}
