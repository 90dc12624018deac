//! The front's side of the session: what the streams' connections wrote,
//! framed as the windows allow, a DATA frame per stream in turn, and the
//! bytes for the socket.

use super::{OUTPUT_HIGH_WATER, Session};
use crate::http2::error_code::ErrorCode;
use crate::http2::frame::write;
use crate::http2::response_frames::Piece;

impl Session {
    /// Bytes for the client's socket; `sent` says how many it took.
    pub fn output(&mut self) -> &[u8] {
        self.frame_responses();
        &self.output[self.output_sent..]
    }

    pub fn sent(&mut self, count: usize) {
        self.output_sent += count;
        if self.output_sent >= self.output.len() {
            self.output.clear();
            self.output_sent = 0;
            if self.output.capacity() > 2 * OUTPUT_HIGH_WATER {
                self.output.shrink_to(OUTPUT_HIGH_WATER);
            }
        }
    }

    /// Frames wait for the socket (DATA not yet framed does not count).
    pub fn has_output(&self) -> bool {
        self.output_backlog() > 0
    }

    pub(super) fn output_backlog(&self) -> usize {
        self.output.len() - self.output_sent
    }

    /// Frames what the streams' connections wrote: heads at once, DATA a
    /// frame per stream in turn while the windows and the high-water mark
    /// allow.
    fn frame_responses(&mut self) {
        if !self.framing_due {
            return;
        }
        loop {
            let order: Vec<u32> = self
                .streams
                .range(self.cursor + 1..)
                .chain(self.streams.range(..=self.cursor))
                .map(|(id, _)| *id)
                .collect();
            let mut progress = false;
            for stream in order {
                if self.output_backlog() >= OUTPUT_HIGH_WATER {
                    return;
                }
                progress |= self.frame_one(stream);
                self.forget_if_done(stream);
            }
            if !progress {
                // Stopped by the high-water mark above, it stays due.
                self.framing_due = false;
                self.wake_stalled();
                return;
            }
        }
    }

    /// Streams holding bytes that the windows will not let out now: their
    /// connections may be waiting for a drain that will not come (they
    /// chose to wait while the windows were open, see `drains_soon`), so
    /// they are woken to spool instead and free their workers.
    fn wake_stalled(&mut self) {
        let buffer = self.config.stream_buffer as i64;
        let connection_window = self.send_window;
        let stalled = self.streams.iter().filter(|(_, open)| {
            !open.reset && !open.outbound().is_empty() && open.send_window.min(connection_window) < buffer
        });
        let stalled: Vec<u32> = stalled.map(|(id, _)| *id).collect();
        self.wakes.extend(stalled);
    }

    /// Frames up to one DATA frame of a stream; true if anything was taken.
    fn frame_one(&mut self, stream: u32) -> bool {
        let peer_max_frame = self.peer_max_frame;
        let Some(open) = self.streams.get_mut(&stream) else { return false };
        if open.reset || open.response_ended {
            return false;
        }
        let mut progress = false;
        loop {
            let backlog = self.output.len() - self.output_sent;
            let room = open.send_window.min(self.send_window).max(0) as usize;
            let room = room.min(peer_max_frame as usize).min(OUTPUT_HIGH_WATER.saturating_sub(backlog));
            let Ok((used, piece)) = open.take_piece(room) else {
                open.reset_by_front();
                write::rst_stream(&mut self.output, stream, ErrorCode::INTERNAL_ERROR);
                progress = true;
                break;
            };
            let (mut framed, mut stop) = (true, false);
            match piece {
                Piece::Head { block, end_stream, .. } => {
                    write::headers(&mut self.output, stream, &block, end_stream, peer_max_frame);
                    open.response_ended = end_stream;
                }
                Piece::Data { range, end_stream } => {
                    let length = range.len();
                    write::data_header(&mut self.output, stream, length, end_stream);
                    self.output.extend_from_slice(&open.outbound()[range]);
                    open.send_window -= length as i64;
                    self.send_window -= length as i64;
                    open.response_ended = end_stream;
                    stop = true;
                }
                Piece::End => {
                    write::data_header(&mut self.output, stream, 0, true);
                    open.response_ended = true;
                }
                Piece::Nothing => {
                    framed = false;
                    if used == 0 {
                        stop = true;
                        // The connection closed its side: a body that runs
                        // until then ends; any other is cut short.
                        if open.response_written && open.outbound().is_empty() && !open.frames.is_done() {
                            framed = true;
                            if open.frames.finish() == Ok(Piece::End) {
                                write::data_header(&mut self.output, stream, 0, true);
                                open.response_ended = true;
                            } else {
                                open.reset_by_front();
                                write::rst_stream(&mut self.output, stream, ErrorCode::INTERNAL_ERROR);
                            }
                        }
                    }
                }
            }
            open.consume_outbound(used);
            progress |= framed || used > 0;
            if open.response_ended && !open.request_ended {
                // The answer is out before the request was: no more of it
                // is wanted (§8.1).
                write::rst_stream(&mut self.output, stream, ErrorCode::NO_ERROR);
                open.request_ended = true;
                open.front_reset = true;
            }
            if stop || open.response_ended || open.reset {
                break;
            }
        }
        if progress {
            self.cursor = stream;
            self.wakes.push(stream);
        }
        progress
    }
}
