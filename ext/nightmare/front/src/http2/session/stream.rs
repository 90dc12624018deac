//! One stream as the session keeps it: the request bytes on their way to
//! the stream's connection (which reads them as an HTTP/1.1 client's), the
//! response bytes on their way back, and the windows of both directions.
//! A stream stays until its connection is gone, even once HTTP/2 calls it
//! closed, so streams still holding a worker count against the limit.

use crate::http2::response_frames::{Malformed, Piece, ResponseFrames};

#[derive(Debug)]
pub struct Stream {
    /// Request bytes not yet read by the connection, from `inbound_read`.
    inbound: Vec<u8>,
    inbound_read: usize,
    /// The body's DATA is passed on as chunks (it has no length).
    pub chunked: bool,
    /// Body bytes of a chunked body not yet framed: what arrives between two
    /// reads by the connection becomes one chunk, so a client's 1-byte DATA
    /// frames do not cost chunk framing each.
    chunk_pending: Vec<u8>,
    /// The client ended its side: the last chunk follows what is pending.
    last_chunk_due: bool,
    pub content_length: Option<u64>,
    pub received: u64,
    /// The client ended its side (END_STREAM).
    pub request_ended: bool,
    /// What the client may still send on this stream.
    pub recv_window: i64,
    /// Body bytes passed on but not yet read by the connection.
    pub body_unread: u64,
    /// Body bytes the connection read, not yet given back as window.
    pub credit_owed: u64,
    /// Response bytes written by the connection, not yet framed.
    outbound: Vec<u8>,
    /// How much of `outbound` is framed already: taken from the front by
    /// moving this, not the bytes (a drain per frame moved the whole rest).
    outbound_framed: usize,
    pub frames: ResponseFrames,
    /// What the front may still send on this stream.
    pub send_window: i64,
    /// The connection closed its side: the response is all in `outbound`.
    pub response_written: bool,
    /// END_STREAM went out.
    pub response_ended: bool,
    /// Either side reset the stream.
    pub reset: bool,
    /// The front reset it (or answered before the request ended): what the
    /// client sent before it knew is ignored.
    pub front_reset: bool,
    /// The stream's connection is gone.
    pub connection_gone: bool,
}

impl Stream {
    pub fn new(head: Vec<u8>, frames: ResponseFrames, recv_window: u32, send_window: i64) -> Self {
        Stream {
            inbound: head,
            inbound_read: 0,
            chunked: false,
            chunk_pending: Vec::new(),
            last_chunk_due: false,
            content_length: None,
            received: 0,
            request_ended: false,
            recv_window: i64::from(recv_window),
            body_unread: 0,
            credit_owed: 0,
            outbound: Vec::new(),
            outbound_framed: 0,
            frames,
            send_window,
            response_written: false,
            response_ended: false,
            reset: false,
            front_reset: false,
            connection_gone: false,
        }
    }

    pub fn reset_by_front(&mut self) {
        self.reset = true;
        self.front_reset = true;
    }

    /// HTTP/2 has closed the stream: frames for it are errors or ignored.
    pub fn is_closed(&self) -> bool {
        self.reset || (self.request_ended && self.response_ended)
    }

    /// Appends body bytes for the connection (a chunked body's wait to be
    /// framed, see `stage_chunk`).
    pub fn push_body(&mut self, data: &[u8]) {
        self.body_unread += data.len() as u64;
        if self.chunked {
            self.chunk_pending.extend_from_slice(data);
        } else {
            self.inbound.extend_from_slice(data);
        }
    }

    /// The client's side ended: a chunked body gets its last chunk.
    pub fn end_request(&mut self) {
        self.request_ended = true;
        self.last_chunk_due = self.chunked;
    }

    /// Frames what a chunked body gathered since the connection last read
    /// as one chunk, and the last chunk once the client's side ended.
    pub fn stage_chunk(&mut self) {
        if !self.chunk_pending.is_empty() {
            self.inbound.extend_from_slice(format!("{:x}\r\n", self.chunk_pending.len()).as_bytes());
            self.inbound.extend_from_slice(&self.chunk_pending);
            self.inbound.extend_from_slice(b"\r\n");
            self.chunk_pending.clear();
            self.chunk_pending.shrink_to(64 * 1024);
        }
        if std::mem::take(&mut self.last_chunk_due) {
            self.inbound.extend_from_slice(b"0\r\n\r\n");
        }
    }

    pub fn inbound_len(&self) -> usize {
        self.inbound.len() - self.inbound_read
    }

    /// Copies request bytes out; gives how many, and how many of them
    /// were body bytes the client's window counted.
    pub fn read_inbound(&mut self, buf: &mut [u8]) -> usize {
        let available = &self.inbound[self.inbound_read..];
        let taken = available.len().min(buf.len());
        buf[..taken].copy_from_slice(&available[..taken]);
        self.inbound_read += taken;
        if self.inbound_read == self.inbound.len() {
            self.inbound.clear();
            self.inbound_read = 0;
            if self.inbound.capacity() > 64 * 1024 {
                self.inbound.shrink_to(64 * 1024);
            }
        }
        taken
    }

    pub fn outbound(&self) -> &[u8] {
        &self.outbound[self.outbound_framed..]
    }

    /// The next piece of the response, within `room` bytes of data.
    pub fn take_piece(&mut self, room: usize) -> Result<(usize, Piece), Malformed> {
        self.frames.take(&self.outbound[self.outbound_framed..], room)
    }

    /// Reads up to `count` bytes of `file` at `offset` straight into the
    /// response bytes (a spooled response, or try_files): no chunk between.
    pub fn read_outbound_from(&mut self, file: &std::fs::File, offset: u64, count: usize) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let start = self.outbound.len();
        self.outbound.resize(start + count, 0);
        let read = file.read_at(&mut self.outbound[start..], offset);
        self.outbound.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }

    pub fn push_outbound(&mut self, bytes: &[u8]) {
        self.outbound.extend_from_slice(bytes);
    }

    pub fn consume_outbound(&mut self, count: usize) {
        self.outbound_framed += count;
        if self.outbound_framed == self.outbound.len() {
            self.outbound.clear();
            self.outbound_framed = 0;
        } else if self.outbound_framed > self.outbound.len() / 2 {
            // Past half, moving what is left costs less than what was taken.
            self.outbound.drain(..self.outbound_framed);
            self.outbound_framed = 0;
        }
    }

    /// What the stream holds in memory for the client, in bytes.
    pub fn held_bytes(&self) -> usize {
        self.inbound.capacity()
            + self.chunk_pending.capacity()
            + self.outbound.capacity()
            + std::mem::size_of::<Stream>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_without_length_reaches_the_connection_as_one_chunk_per_read() {
        let mut stream = Stream::new(b"PUT / HTTP/1.1\r\n\r\n".to_vec(), ResponseFrames::new(false, 1024), 100, 100);
        stream.chunked = true;
        stream.push_body(b"hel");
        stream.push_body(b"");
        stream.push_body(b"lo");
        stream.end_request();
        stream.stage_chunk();
        let mut buf = [0u8; 64];
        let read = stream.read_inbound(&mut buf);
        assert_eq!(&buf[..read], b"PUT / HTTP/1.1\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(stream.inbound_len(), 0);
        assert!(!stream.is_closed(), "the response is still to come");
    }
}
