//! One client's HTTP/2 connection, without I/O (RFC 9113): bytes read from
//! the client go in, frames for it come out, and each stream's request
//! waits here for the stream's own connection to read it as an HTTP/1.1
//! client's, while that connection's response comes back to be framed.
//!
//! What a client can make it hold is bounded and counted: a frame (16 KiB)
//! and a header block (`max_header_list` and a quarter) being read; per
//! stream, request bytes within the window announced and response bytes
//! within `stream_buffer` (past it the stream's connection waits while the
//! socket and windows take everything, else spools to its temp file, as
//! for a slow HTTP/1.1 reader); frames waiting for the
//! socket, DATA only up to a high-water mark and control frames until the
//! client is found not reading them; streams up to `max_concurrent_streams`
//! counted until their connection (and so their worker) is done. Resets,
//! PINGs, SETTINGS and empty frames have allowances; past one, the client
//! gets GOAWAY ENHANCE_YOUR_CALM.

mod allowance;
mod output;
mod receive;
mod stream;

use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

use crate::http2::error_code::{ErrorCode, H2Error};
use crate::http2::frame::{self, setting, write};
use crate::http2::hpack::Decoder;
use allowance::Allowance;
use stream::Stream;

/// What a client's connection says first (§3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The front's HPACK table for the client's encoder: the RFC's default.
const HEADER_TABLE_SIZE: usize = 4096;
/// DATA is framed while fewer bytes than this wait for the socket.
const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Frames the client asked for (acks, resets) while this much more than
/// the high-water mark waits for it: it is not reading them.
const CONTROL_BACKLOG: usize = 64 * 1024;
/// CONTINUATION frames one header block may take (CVE-2024-27316 sent
/// endless empty ones).
const MAX_CONTINUATIONS: usize = 32;

#[derive(Debug, Clone)]
pub struct Config {
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: what a client may send on a stream
    /// before the front has passed it on.
    pub stream_window: u32,
    /// The same for the whole connection.
    pub connection_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: past it a request gets 431.
    pub max_header_list: usize,
    pub max_response_head: usize,
    /// Response bytes a stream's connection may write before it is told
    /// to wait (and spools instead).
    pub stream_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrent_streams: 128,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
            max_header_list: 32 * 1024,
            max_response_head: 64 * 1024,
            stream_buffer: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preface,
    FirstSettings,
    Frames,
    /// A connection error was answered with GOAWAY: nothing more is read.
    Failed,
}

/// Why the header block being read was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockPurpose {
    NewStream,
    Trailers,
    /// Decoded only to keep the table in step, then the stream gets this.
    Refuse(Option<ErrorCode>),
}

#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    purpose: BlockPurpose,
    fragment: Vec<u8>,
    frames: usize,
}

/// What happened that the front counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub streams_opened: u64,
    pub streams_reset_by_client: u64,
    pub streams_refused: u64,
    pub goaways_sent: u64,
}

pub struct Session {
    config: Config,
    phase: Phase,
    unread: Vec<u8>,
    decoder: Decoder,
    pending_block: Option<PendingBlock>,
    streams: BTreeMap<u32, Stream>,
    last_client_stream: u32,
    /// The last stream id in the GOAWAY the front sent, if it did.
    going_away: Option<u32>,
    client_going_away: bool,
    peer_initial_window: i64,
    peer_max_frame: u32,
    send_window: i64,
    recv_window: i64,
    credit_owed: u64,
    output: Vec<u8>,
    output_sent: usize,
    opened: Vec<u32>,
    wakes: Vec<u32>,
    /// Framing goes round the streams from the one after this.
    cursor: u32,
    /// Something may be framed that was not: a stream's connection wrote
    /// or ended, or a window opened. Spares walking every stream on each
    /// call for output.
    framing_due: bool,
    /// The client's socket took no more at the last try: a stream's
    /// connection then spools what its buffer cannot take.
    socket_blocked: bool,
    resets: Allowance,
    pings: Allowance,
    settings_frames: Allowance,
    empty_frames: Allowance,
    tally: Tally,
    failure: Option<H2Error>,
}

impl Session {
    pub fn new(config: Config, now: Instant) -> Self {
        let mut session = Session {
            phase: Phase::Preface,
            unread: Vec::new(),
            decoder: Decoder::new(HEADER_TABLE_SIZE),
            pending_block: None,
            streams: BTreeMap::new(),
            last_client_stream: 0,
            going_away: None,
            client_going_away: false,
            peer_initial_window: 65_535,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            send_window: 65_535,
            recv_window: i64::from(config.connection_window),
            credit_owed: 0,
            output: Vec::new(),
            output_sent: 0,
            opened: Vec::new(),
            wakes: Vec::new(),
            cursor: 0,
            framing_due: false,
            socket_blocked: false,
            resets: Allowance::new(2 * config.max_concurrent_streams, config.max_concurrent_streams, now),
            pings: Allowance::new(64, 8, now),
            settings_frames: Allowance::new(64, 8, now),
            empty_frames: Allowance::new(256, 64, now),
            tally: Tally::default(),
            failure: None,
            config,
        };
        let ours = [
            (setting::HEADER_TABLE_SIZE, HEADER_TABLE_SIZE as u32),
            (setting::ENABLE_PUSH, 0),
            (setting::MAX_CONCURRENT_STREAMS, session.config.max_concurrent_streams),
            (setting::INITIAL_WINDOW_SIZE, session.config.stream_window),
            (setting::MAX_FRAME_SIZE, frame::DEFAULT_MAX_FRAME_SIZE),
            (setting::MAX_HEADER_LIST_SIZE, session.config.max_header_list as u32),
        ];
        write::settings(&mut session.output, &ours);
        let more = session.config.connection_window.saturating_sub(65_535);
        if more > 0 {
            write::window_update(&mut session.output, 0, more);
        }
        session
    }

    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// What was counted since the last call.
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    /// The connection error that ended the session, if one did.
    pub fn failure(&self) -> Option<H2Error> {
        self.failure
    }

    /// Stops taking new streams (graceful shutdown): GOAWAY names the last
    /// stream that will be served.
    pub fn go_away(&mut self) {
        if self.going_away.is_none() {
            write::goaway(&mut self.output, self.last_client_stream, ErrorCode::NO_ERROR);
            self.going_away = Some(self.last_client_stream);
            self.tally.goaways_sent += 1;
        }
    }

    /// Nothing more will happen: the session went away (or the client
    /// did) and every stream is done and sent.
    pub fn is_finished(&self) -> bool {
        (self.going_away.is_some() || self.client_going_away) && self.streams.is_empty() && self.output_backlog() == 0
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Streams whose requests have begun since the last call: each needs a
    /// connection to read it.
    pub fn take_opened(&mut self) -> Vec<u32> {
        let mut opened = std::mem::take(&mut self.opened);
        // Reset before anything read them: nothing needs to serve them.
        opened.retain(|stream| match self.streams.get(stream) {
            Some(open) if open.reset => {
                self.streams.remove(stream);
                false
            }
            Some(_) => true,
            None => false,
        });
        opened
    }

    /// Streams whose connections may read or write now.
    pub fn take_wakes(&mut self) -> Vec<u32> {
        let mut wakes = std::mem::take(&mut self.wakes);
        wakes.sort_unstable();
        wakes.dedup();
        wakes
    }

    fn wake(&mut self, stream: u32) {
        self.wakes.push(stream);
    }

    /// A stream's connection reads its request: `WouldBlock` while the
    /// client has sent no more, end of file once the response is out.
    pub fn read_request(&mut self, stream: u32, buf: &mut [u8]) -> io::Result<usize> {
        let Some(open) = self.streams.get_mut(&stream) else { return Ok(0) };
        if open.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        open.stage_chunk();
        if open.inbound_len() == 0 {
            return if open.response_ended { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let read = open.read_inbound(buf);
        if open.inbound_len() == 0 {
            // All the body the client sent so far has been passed on: its
            // windows open again, in steps of at least half.
            let body = std::mem::take(&mut open.body_unread);
            open.credit_owed += body;
            if !open.request_ended && open.credit_owed >= u64::from(self.config.stream_window / 2) {
                write::window_update(&mut self.output, stream, open.credit_owed as u32);
                open.recv_window += open.credit_owed as i64;
                open.credit_owed = 0;
            }
            self.credit_connection(body);
        }
        Ok(read)
    }

    fn credit_connection(&mut self, bytes: u64) {
        self.credit_owed += bytes;
        if self.credit_owed >= u64::from(self.config.connection_window / 2) {
            write::window_update(&mut self.output, 0, self.credit_owed as u32);
            self.recv_window += self.credit_owed as i64;
            self.credit_owed = 0;
        }
    }

    /// A stream's connection writes its response (HTTP/1.1, as to any
    /// client): taken up to `stream_buffer` bytes ahead of the client.
    pub fn write_response(&mut self, stream: u32, bytes: &[u8]) -> io::Result<usize> {
        let Some(open) = self.streams.get_mut(&stream) else { return Err(io::ErrorKind::BrokenPipe.into()) };
        if open.reset || open.response_ended {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let room = self.config.stream_buffer.saturating_sub(open.outbound().len());
        if room == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = room.min(bytes.len());
        open.push_outbound(&bytes[..taken]);
        self.framing_due |= taken > 0;
        Ok(taken)
    }

    /// Whether a stream's full buffer will be sent on at once (the client's
    /// socket takes bytes and the windows have room for all of it), so its
    /// connection should wait to be woken rather than spool to disk. A
    /// client that trickles window updates or reads slowly gets no wait.
    pub fn drains_soon(&self, stream: u32) -> bool {
        let buffer = self.config.stream_buffer as i64;
        // The connection's window is shared: it must cover what every
        // stream holds, or some would wait on room another takes.
        let held: usize = self.streams.values().map(|open| open.outbound().len()).sum();
        !self.socket_blocked
            && self.send_window >= buffer.max(held as i64)
            && self
                .streams
                .get(&stream)
                .is_some_and(|open| !open.reset && !open.response_ended && open.send_window >= buffer)
    }

    /// The client's socket took what was offered (`false`) or would block
    /// (`true`). When it blocks, streams waiting on their buffers are woken:
    /// their connections spool from then on, and their workers go free.
    pub fn note_socket_blocked(&mut self, blocked: bool) {
        if blocked && !self.socket_blocked {
            let waiting: Vec<u32> =
                self.streams.iter().filter(|(_, open)| !open.outbound().is_empty()).map(|(id, _)| *id).collect();
            self.wakes.extend(waiting);
        }
        self.socket_blocked = blocked;
    }

    /// The client's connection ended: every stream still open is reset, so
    /// that its connection stops too (and gives its worker back).
    pub fn client_gone(&mut self) {
        let streams: Vec<u32> = self.streams.keys().copied().collect();
        for stream in streams {
            if let Some(open) = self.streams.get_mut(&stream).filter(|open| !open.is_closed()) {
                open.reset = true;
            }
            self.wake(stream);
        }
        self.client_going_away = true;
    }

    /// Whether a stream was reset (an unknown one counts as reset).
    pub fn is_reset(&self, stream: u32) -> bool {
        self.streams.get(&stream).is_none_or(|open| open.reset)
    }

    /// A stream's connection cut its client (too slow, or shed): the
    /// stream is reset and what it held is dropped.
    pub fn cancel(&mut self, stream: u32, code: ErrorCode) {
        if self.streams.get(&stream).is_some_and(|open| !open.is_closed()) {
            self.reset_stream(stream, code);
        }
    }

    /// The same from a file (see `write_response`): bytes go from the file
    /// to the stream's buffer with no copy between.
    pub fn write_response_from(
        &mut self,
        stream: u32,
        file: &std::fs::File,
        offset: u64,
        count: u64,
    ) -> io::Result<usize> {
        let Some(open) = self.streams.get_mut(&stream) else { return Err(io::ErrorKind::BrokenPipe.into()) };
        if open.reset || open.response_ended {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let room = self.config.stream_buffer.saturating_sub(open.outbound().len());
        if room == 0 && count > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match open.read_outbound_from(file, offset, room.min(count as usize))? {
            0 if count > 0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than expected")),
            read => {
                self.framing_due = true;
                Ok(read)
            }
        }
    }

    /// A stream's connection closed its side: its response is complete.
    pub fn end_response(&mut self, stream: u32) {
        if let Some(open) = self.streams.get_mut(&stream) {
            open.response_written = true;
            self.framing_due = true;
        }
    }

    /// A stream's connection is gone; its stream stays until what it wrote
    /// is framed.
    pub fn release(&mut self, stream: u32) {
        let Some(open) = self.streams.get_mut(&stream) else { return };
        open.connection_gone = true;
        // Its closing ends the response as a close ends one from a worker:
        // complete if its framing says so, cut short (reset) if not.
        open.response_written = true;
        self.framing_due = true;
        self.forget_if_done(stream);
    }

    fn forget_if_done(&mut self, stream: u32) {
        let Some(open) = self.streams.get(&stream) else { return };
        if open.connection_gone && (open.reset || open.response_ended) {
            let unread = open.body_unread;
            self.streams.remove(&stream);
            self.credit_connection(unread);
        }
    }

    /// What the client has made the session hold, in bytes.
    pub fn held_bytes(&self) -> usize {
        self.unread.capacity()
            + self.decoder.held_bytes()
            + self.output.capacity()
            + self.pending_block.as_ref().map_or(0, |pending| pending.fragment.capacity())
            + self.streams.values().map(Stream::held_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests;
