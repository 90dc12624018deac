//! The client's side of the session: the preface, then frames, each read
//! whole and checked before it acts on the streams, the header table or
//! the windows.

use std::time::Instant;

use super::stream::Stream;
use super::{
    BlockPurpose, CONTROL_BACKLOG, MAX_CONTINUATIONS, OUTPUT_HIGH_WATER, PREFACE, PendingBlock, Phase, Session,
};
use crate::http2::error_code::{ErrorCode, H2Error};
use crate::http2::frame::read::{Frame, check_length, read, settings};
use crate::http2::frame::{self, FrameHeader, HEADER_LEN, LARGEST_WINDOW, setting, write};
use crate::http2::request_head::FieldCollector;
use crate::http2::response_frames::ResponseFrames;

impl Session {
    /// Takes bytes the client sent. A connection error queues GOAWAY,
    /// resets every stream and is returned; the caller sends what is
    /// queued and closes.
    pub fn receive(&mut self, input: &[u8], now: Instant) -> Result<(), H2Error> {
        if self.phase == Phase::Failed {
            return Ok(());
        }
        // Read in place; only a frame cut by the read waits in `unread`.
        let mut unread = std::mem::take(&mut self.unread);
        let result = if unread.is_empty() {
            self.read_frames(input, now).map(|consumed| unread.extend_from_slice(&input[consumed..]))
        } else {
            unread.extend_from_slice(input);
            self.read_frames(&unread, now).map(|consumed| {
                unread.drain(..consumed);
            })
        };
        if let Err(error) = result {
            self.fail(error);
            return Err(error);
        }
        self.unread = unread;
        Ok(())
    }

    fn read_frames(&mut self, bytes: &[u8], now: Instant) -> Result<usize, H2Error> {
        let mut at = 0;
        if self.phase == Phase::Preface {
            let seen = bytes.len().min(PREFACE.len());
            if bytes[..seen] != PREFACE[..seen] {
                return Err(H2Error::connection(ErrorCode::PROTOCOL_ERROR, "not the HTTP/2 connection preface"));
            }
            if seen < PREFACE.len() {
                return Ok(0);
            }
            at = PREFACE.len();
            self.phase = Phase::FirstSettings;
        }
        while let Some(header) = FrameHeader::parse(&bytes[at..]) {
            check_length(&header, frame::DEFAULT_MAX_FRAME_SIZE)?;
            let end = at + HEADER_LEN + header.length as usize;
            if end > bytes.len() {
                break;
            }
            let payload = &bytes[at + HEADER_LEN..end];
            match self.on_frame(&header, payload, now) {
                Ok(()) => {}
                Err(H2Error::Stream { stream, code, .. }) => self.reset_stream(stream, code),
                Err(connection_error) => return Err(connection_error),
            }
            at = end;
            if self.output_backlog() > OUTPUT_HIGH_WATER + CONTROL_BACKLOG {
                return Err(calm("the client does not read the frames it asks for"));
            }
        }
        Ok(at)
    }

    fn on_frame(&mut self, header: &FrameHeader, payload: &[u8], now: Instant) -> Result<(), H2Error> {
        if let Some(pending) = &self.pending_block {
            if header.kind != frame::kind::CONTINUATION || header.stream != pending.stream {
                return Err(protocol("a frame between a header block's frames"));
            }
        }
        let frame = read(header, payload)?;
        if self.phase == Phase::FirstSettings {
            if !matches!(frame, Frame::Settings { .. }) {
                return Err(protocol("the first frame is not SETTINGS"));
            }
            self.phase = Phase::Frames;
        }
        match frame {
            Frame::Data { stream, data, end_stream, flow_controlled } => {
                self.on_data(stream, data, end_stream, flow_controlled, now)
            }
            Frame::Headers { stream, fragment, end_stream, end_headers } => {
                self.on_headers(stream, fragment, end_stream, end_headers)
            }
            Frame::Continuation { fragment, end_headers, .. } => self.on_continuation(fragment, end_headers),
            Frame::Priority { .. } | Frame::SettingsAck | Frame::Unknown { .. } => Ok(()),
            Frame::RstStream { stream, .. } => self.on_reset(stream, now),
            Frame::Settings { payload } => {
                if !self.settings_frames.take(now) {
                    return Err(calm("too many SETTINGS frames"));
                }
                self.apply_settings(payload)?;
                write::settings_ack(&mut self.output);
                Ok(())
            }
            Frame::PushPromise => Err(protocol("a client sent PUSH_PROMISE")),
            Frame::Ping { ack: true, .. } => Ok(()),
            Frame::Ping { ack: false, data } => {
                if !self.pings.take(now) {
                    return Err(calm("too many PINGs"));
                }
                write::ping_ack(&mut self.output, &data);
                Ok(())
            }
            Frame::GoAway { .. } => {
                self.client_going_away = true;
                Ok(())
            }
            Frame::WindowUpdate { stream: 0, increment } => {
                self.framing_due = true;
                self.send_window += i64::from(increment);
                if self.send_window > i64::from(LARGEST_WINDOW) {
                    return Err(H2Error::connection(
                        ErrorCode::FLOW_CONTROL_ERROR,
                        "the connection's window past 2^31-1",
                    ));
                }
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => {
                self.check_not_idle(stream)?;
                if let Some(open) = self.streams.get_mut(&stream).filter(|open| !open.is_closed()) {
                    self.framing_due = true;
                    open.send_window += i64::from(increment);
                    if open.send_window > i64::from(LARGEST_WINDOW) {
                        return Err(H2Error::stream(
                            stream,
                            ErrorCode::FLOW_CONTROL_ERROR,
                            "a stream's window past 2^31-1",
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// A stream the client has not opened yet.
    fn is_idle(&self, stream: u32) -> bool {
        stream > self.last_client_stream || (stream % 2 == 0 && !self.streams.contains_key(&stream))
    }

    fn check_not_idle(&self, stream: u32) -> Result<(), H2Error> {
        if self.is_idle(stream) { Err(protocol("a frame on a stream not yet opened")) } else { Ok(()) }
    }

    fn on_headers(&mut self, stream: u32, fragment: &[u8], end_stream: bool, end_headers: bool) -> Result<(), H2Error> {
        if stream % 2 == 0 {
            return Err(protocol("a client stream with an even id"));
        }
        let purpose = match self.streams.get(&stream) {
            // Frames the client sent before it learnt of the reset.
            Some(open) if open.front_reset => BlockPurpose::Refuse(None),
            Some(open) if open.is_closed() => {
                return Err(H2Error::connection(ErrorCode::STREAM_CLOSED, "HEADERS on a closed stream"));
            }
            Some(open) if open.request_ended => BlockPurpose::Refuse(Some(ErrorCode::STREAM_CLOSED)),
            Some(_) => BlockPurpose::Trailers,
            None if stream <= self.last_client_stream => return Err(protocol("HEADERS on a stream id already passed")),
            None => {
                self.last_client_stream = stream;
                if self.going_away.is_some() {
                    BlockPurpose::Refuse(None)
                } else if self.streams.len() >= self.config.max_concurrent_streams as usize {
                    self.tally.streams_refused += 1;
                    BlockPurpose::Refuse(Some(ErrorCode::REFUSED_STREAM))
                } else {
                    BlockPurpose::NewStream
                }
            }
        };
        self.pending_block = Some(PendingBlock { stream, end_stream, purpose, fragment: Vec::new(), frames: 0 });
        self.on_continuation(fragment, end_headers)
    }

    fn on_continuation(&mut self, fragment: &[u8], end_headers: bool) -> Result<(), H2Error> {
        let largest_block = self.config.max_header_list + self.config.max_header_list / 4;
        let Some(pending) = &mut self.pending_block else { return Err(protocol("CONTINUATION without HEADERS")) };
        pending.frames += 1;
        if pending.frames > MAX_CONTINUATIONS + 1 {
            return Err(calm("too many CONTINUATION frames"));
        }
        if pending.fragment.len() + fragment.len() > largest_block {
            return Err(calm("a header block past the header list limit"));
        }
        pending.fragment.extend_from_slice(fragment);
        if !end_headers {
            return Ok(());
        }
        let block = self.pending_block.take().expect("checked above");
        self.finish_block(block)
    }

    fn finish_block(&mut self, block: PendingBlock) -> Result<(), H2Error> {
        let mut collector = FieldCollector::default();
        let mut pseudo_in_trailers = false;
        let decoded = self
            .decoder
            .decode(&block.fragment, self.config.max_header_list, |name, value| {
                pseudo_in_trailers |= name.starts_with(b":");
                collector.add(name, value)
            })
            .map_err(|error| H2Error::connection(ErrorCode::COMPRESSION_ERROR, error.describe()))?;
        let stream = block.stream;
        match block.purpose {
            BlockPurpose::Refuse(None) => Ok(()),
            BlockPurpose::Refuse(Some(code)) => Err(H2Error::stream(stream, code, "a stream refused")),
            BlockPurpose::Trailers => {
                if !block.end_stream || pseudo_in_trailers {
                    return Err(H2Error::stream(
                        stream,
                        ErrorCode::PROTOCOL_ERROR,
                        "trailers without END_STREAM or with pseudo-headers",
                    ));
                }
                self.end_request(stream)
            }
            BlockPurpose::NewStream if !decoded.fits => {
                // As HTTP/1.1's 431, and no stream for it.
                let mut head = Vec::new();
                crate::http2::hpack::encode_status(&mut head, 431);
                write::headers(&mut self.output, stream, &head, true, self.peer_max_frame);
                if !block.end_stream {
                    write::rst_stream(&mut self.output, stream, ErrorCode::NO_ERROR);
                }
                Ok(())
            }
            BlockPurpose::NewStream => {
                let request = collector
                    .finish(!block.end_stream)
                    .map_err(|why| H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, why))?;
                let frames = ResponseFrames::new(request.head_request, self.config.max_response_head);
                let mut open = Stream::new(request.head, frames, self.config.stream_window, self.peer_initial_window);
                open.chunked = request.chunked;
                open.content_length = request.content_length;
                self.streams.insert(stream, open);
                self.tally.streams_opened += 1;
                self.opened.push(stream);
                if block.end_stream { self.end_request(stream) } else { Ok(()) }
            }
        }
    }

    fn on_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
        flow_controlled: u32,
        now: Instant,
    ) -> Result<(), H2Error> {
        self.recv_window -= i64::from(flow_controlled);
        if self.recv_window < 0 {
            return Err(H2Error::connection(ErrorCode::FLOW_CONTROL_ERROR, "DATA past the connection's window"));
        }
        if self.is_idle(stream) {
            return Err(protocol("DATA on a stream not yet opened"));
        }
        // Padding is given back at once; so is what no stream takes.
        let padding = u64::from(flow_controlled) - data.len() as u64;
        self.credit_connection(padding);
        let Some(open) = self.streams.get_mut(&stream).filter(|open| !open.is_closed() && !open.request_ended) else {
            self.credit_connection(data.len() as u64);
            let reset_by_front = self.streams.get(&stream).is_some_and(|open| open.front_reset);
            if reset_by_front {
                return Ok(());
            }
            return Err(H2Error::stream(stream, ErrorCode::STREAM_CLOSED, "DATA on a closed stream"));
        };
        open.recv_window -= i64::from(flow_controlled);
        if open.recv_window < 0 {
            return Err(H2Error::stream(stream, ErrorCode::FLOW_CONTROL_ERROR, "DATA past the stream's window"));
        }
        open.credit_owed += padding;
        open.received += data.len() as u64;
        if open.content_length.is_some_and(|length| open.received > length) {
            return Err(H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, "more DATA than content-length"));
        }
        if data.is_empty() && !end_stream && !self.empty_frames.take(now) {
            return Err(calm("too many empty DATA frames"));
        }
        open.push_body(data);
        self.wake(stream);
        if end_stream { self.end_request(stream) } else { Ok(()) }
    }

    fn end_request(&mut self, stream: u32) -> Result<(), H2Error> {
        let Some(open) = self.streams.get_mut(&stream) else { return Ok(()) };
        if open.content_length.is_some_and(|length| length != open.received) {
            return Err(H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, "DATA short of content-length"));
        }
        open.end_request();
        self.wake(stream);
        Ok(())
    }

    /// Every reset counts against the allowance, whatever the stream's
    /// state: opening and resetting streams in a loop costs the front work
    /// even when it refuses them.
    fn on_reset(&mut self, stream: u32, now: Instant) -> Result<(), H2Error> {
        self.check_not_idle(stream)?;
        self.tally.streams_reset_by_client += 1;
        if !self.resets.take(now) {
            return Err(calm("streams reset faster than they are served (rapid reset)"));
        }
        if let Some(open) = self.streams.get_mut(&stream).filter(|open| !open.is_closed()) {
            open.reset = true;
            self.wake(stream);
        }
        Ok(())
    }

    fn apply_settings(&mut self, payload: &[u8]) -> Result<(), H2Error> {
        // A window or a frame size may have grown.
        self.framing_due = true;
        for (id, value) in settings(payload) {
            match id {
                setting::ENABLE_PUSH if value > 1 => return Err(protocol("SETTINGS_ENABLE_PUSH other than 0 or 1")),
                setting::INITIAL_WINDOW_SIZE => {
                    if value > LARGEST_WINDOW {
                        return Err(H2Error::connection(
                            ErrorCode::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1",
                        ));
                    }
                    let change = i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                    // Smaller windows may stall streams that chose to wait:
                    // framing looks at them again (see `wake_stalled`).
                    self.framing_due = true;
                    for open in self.streams.values_mut() {
                        open.send_window += change;
                        if open.send_window > i64::from(LARGEST_WINDOW) {
                            return Err(H2Error::connection(
                                ErrorCode::FLOW_CONTROL_ERROR,
                                "a stream's window past 2^31-1",
                            ));
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..=frame::LARGEST_MAX_FRAME_SIZE).contains(&value) {
                        return Err(protocol("SETTINGS_MAX_FRAME_SIZE out of range"));
                    }
                    self.peer_max_frame = value;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A stream error: RST_STREAM, and the stream's connection learns of it.
    pub(super) fn reset_stream(&mut self, stream: u32, code: ErrorCode) {
        write::rst_stream(&mut self.output, stream, code);
        if let Some(open) = self.streams.get_mut(&stream) {
            open.reset_by_front();
            self.wake(stream);
        }
    }

    fn fail(&mut self, error: H2Error) {
        self.phase = Phase::Failed;
        self.failure = Some(error);
        write::goaway(&mut self.output, self.last_client_stream, error.code());
        self.going_away = Some(self.last_client_stream);
        self.tally.goaways_sent += 1;
        let streams: Vec<u32> = self.streams.keys().copied().collect();
        for stream in streams {
            if let Some(open) = self.streams.get_mut(&stream) {
                open.reset_by_front();
            }
            self.wake(stream);
        }
    }
}

fn protocol(why: &'static str) -> H2Error {
    H2Error::connection(ErrorCode::PROTOCOL_ERROR, why)
}

fn calm(why: &'static str) -> H2Error {
    H2Error::connection(ErrorCode::ENHANCE_YOUR_CALM, why)
}
