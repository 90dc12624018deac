//! A static file's response on its way to the client: the head the front
//! wrote, then the file's bytes (all of them, or one range) by sendfile on
//! a plain socket, through the session for TLS.

use std::fs::File;

use crate::net::client_stream::ClientStream;
use crate::net::socket_io::{WriteOutcome, write_some};

#[derive(Debug)]
pub struct FileReply {
    head: Vec<u8>,
    sent: usize,
    body: Option<FileBody>,
    body_sent: u64,
    /// The client connection stays open for its next request.
    pub keep_alive: bool,
}

#[derive(Debug)]
struct FileBody {
    file: File,
    offset: u64,
    /// One past the last byte to send.
    end: u64,
}

#[derive(Debug)]
pub enum SendStep {
    Done,
    /// The client takes no more now; `moved` says whether it took any.
    Blocked {
        moved: bool,
    },
    Gone,
    Failed(std::io::Error),
}

impl FileReply {
    /// `body` is the file and the byte range to send after `head`.
    pub fn new(head: Vec<u8>, body: Option<(File, u64, u64)>, keep_alive: bool) -> Self {
        let body = body.filter(|(_, start, end)| end > start).map(|(file, offset, end)| FileBody { file, offset, end });
        FileReply { head, sent: 0, body, body_sent: 0, keep_alive }
    }

    /// Bytes sent so far, all of them and the body's.
    pub fn sent(&self) -> (u64, u64) {
        (self.sent as u64 + self.body_sent, self.body_sent)
    }

    /// The status its head announces (`HTTP/1.1 206 ...`).
    pub fn status(&self) -> u16 {
        self.head.get(9..12).and_then(|code| std::str::from_utf8(code).ok()?.parse().ok()).unwrap_or(0)
    }

    /// One more header line, at the end of the head (before anything was
    /// sent, and before `put_first`).
    pub fn add_header(&mut self, name: &str, value: &str) {
        let end = self.head.len().saturating_sub(2);
        let line = format!("{name}: {value}\r\n");
        self.head.splice(end..end, line.bytes());
    }

    /// The header `name` says `value`: a line of that name the front wrote
    /// goes (Set-Cookie, which may repeat, is only added).
    pub fn set_header(&mut self, name: &str, value: &str) {
        if !name.eq_ignore_ascii_case("set-cookie") {
            let marker = format!("\r\n{}:", name.to_ascii_lowercase());
            let lower = self.head.to_ascii_lowercase();
            if let Some(at) = lower.windows(marker.len()).position(|window| window == marker.as_bytes()) {
                let line_end =
                    lower[at + 2..].windows(2).position(|w| w == b"\r\n").map_or(lower.len(), |end| at + 2 + end);
                self.head.drain(at..line_end);
            }
        }
        self.add_header(name, value);
    }

    /// Bytes owed to the client before this response (the rest of a
    /// `100 Continue`).
    pub fn put_first(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.head.splice(0..0, bytes.iter().copied());
        }
    }

    pub fn head(&self) -> &[u8] {
        &self.head
    }

    pub fn send(&mut self, client: &mut ClientStream) -> SendStep {
        let mut moved = false;
        while self.sent < self.head.len() {
            let head = &self.head[self.sent..];
            let outcome = if self.body.is_some() { client.write_before_more(head) } else { write_some(client, head) };
            match outcome {
                WriteOutcome::Wrote(n) => {
                    self.sent += n;
                    moved = true;
                }
                WriteOutcome::WouldBlock => return SendStep::Blocked { moved },
                WriteOutcome::Gone => return SendStep::Gone,
                WriteOutcome::Failed(error) => return SendStep::Failed(error),
            }
        }
        while let Some(body) = &mut self.body {
            if body.offset >= body.end {
                self.body = None;
                break;
            }
            let remaining = body.end - body.offset;
            let before = body.offset;
            let outcome = client.send_file(&body.file, &mut body.offset, remaining);
            self.body_sent += body.offset - before;
            match outcome {
                WriteOutcome::Wrote(_) => moved = true,
                WriteOutcome::WouldBlock => return SendStep::Blocked { moved },
                WriteOutcome::Gone => return SendStep::Gone,
                // A file truncated while it was sent: the response cannot
                // be finished as announced.
                WriteOutcome::Failed(error) => return SendStep::Failed(error),
            }
        }
        SendStep::Done
    }
}
