//! A stream's end of the link, read and written like a client socket by
//! the stream's connection: reads give its request as an HTTP/1.1 client
//! would send it, writes take its response up to the stream's buffer and
//! then block (so the connection spools the rest, as for a slow reader),
//! shutting the write side ends the response, and a reset cancels the
//! stream.

use std::io::{self, Read, Write};

use crate::http2::error_code::ErrorCode;
use crate::http2::link::Link;

#[derive(Debug)]
pub struct StreamEnd {
    link: Link,
    stream: u32,
}

impl StreamEnd {
    pub fn new(link: Link, stream: u32) -> Self {
        StreamEnd { link, stream }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The stream was reset (by the client, or its connection ended).
    pub fn is_reset(&self) -> bool {
        self.link.lock().session.is_reset(self.stream)
    }

    /// A full buffer will be sent on without the client's help (see
    /// `Session::drains_soon`): the connection waits instead of spooling.
    pub fn drains_soon(&self) -> bool {
        self.link.lock().session.drains_soon(self.stream)
    }

    /// The connection is done with its response.
    pub fn end_response(&mut self) {
        let mut state = self.link.lock();
        state.session.end_response(self.stream);
        state.client_wanted = true;
    }

    /// Sends up to `count` bytes of `file` from `*offset`, advancing it.
    pub fn send_file(&mut self, file: &std::fs::File, offset: &mut u64, count: u64) -> io::Result<usize> {
        let mut state = self.link.lock();
        let written = state.session.write_response_from(self.stream, file, *offset, count)?;
        *offset += written as u64;
        if written > 0 {
            state.client_wanted = true;
        }
        Ok(written)
    }

    /// The connection cut the client (a slow reader, shed): RST_STREAM.
    pub fn cancel(&mut self) {
        let mut state = self.link.lock();
        state.session.cancel(self.stream, ErrorCode::CANCEL);
        state.client_wanted = true;
    }
}

impl Read for StreamEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.link.lock();
        let read = state.session.read_request(self.stream, buf);
        // Reading may have opened the client's window: WINDOW_UPDATE waits.
        if state.session.has_output() {
            state.client_wanted = true;
        }
        read
    }
}

impl Write for StreamEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.link.lock();
        let written = state.session.write_response(self.stream, buf);
        if matches!(written, Ok(count) if count > 0) {
            state.client_wanted = true;
        }
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        let mut state = self.link.lock();
        state.session.release(self.stream);
        state.streams.remove(&self.stream);
        state.client_wanted = true;
    }
}
