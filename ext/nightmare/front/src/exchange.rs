//! One request's time with a worker: the buffered request goes out over the
//! per-request socket pair, the response comes back as fast as the worker
//! writes it, and the worker's slot is given back the moment it closes its end.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use crate::dispatch::Slot;
use crate::listener::ClientStream;
use crate::relay::RelayBuffer;
use crate::socket_io::{ReadOutcome, Readiness, WriteOutcome, read_some, send_file, write_some};
use crate::spool::SpooledBody;

/// The request as the worker will read it.
#[derive(Debug)]
struct Outbound {
    /// The head, followed by the body when the body is in memory.
    bytes: Vec<u8>,
    sent: usize,
    file: Option<(std::fs::File, u64)>,
    file_sent: u64,
}

enum SendResult {
    Done,
    Blocked,
    /// The worker stopped reading: it answered early, or died.
    WorkerGone,
    Failed(io::Error),
}

impl Outbound {
    fn new(mut head: Vec<u8>, body: SpooledBody) -> Self {
        let file = match body {
            SpooledBody::Memory(bytes) => {
                head.extend_from_slice(&bytes);
                None
            }
            SpooledBody::File { file, length } => Some((file, length)),
        };
        Outbound {
            bytes: head,
            sent: 0,
            file,
            file_sent: 0,
        }
    }

    fn send(&mut self, upstream: &mut UnixStream) -> SendResult {
        loop {
            let outcome = if self.sent < self.bytes.len() {
                write_some(upstream, &self.bytes[self.sent..])
            } else if let Some((file, length)) = &self.file
                && self.file_sent < *length
            {
                let before = self.file_sent;
                match send_file(
                    upstream.as_fd(),
                    file.as_fd(),
                    &mut self.file_sent,
                    length - before,
                ) {
                    // send_file advanced file_sent itself.
                    WriteOutcome::Wrote(_) => continue,
                    other => other,
                }
            } else {
                return SendResult::Done;
            };
            match outcome {
                WriteOutcome::Wrote(n) => self.sent += n,
                WriteOutcome::WouldBlock => return SendResult::Blocked,
                WriteOutcome::Gone => return SendResult::WorkerGone,
                WriteOutcome::Failed(error) => return SendResult::Failed(error),
            }
        }
    }
}

/// Where an exchange stands after being pumped.
#[derive(Debug)]
pub enum Pump {
    /// Still going; `progressed` says whether anything moved.
    Working { progressed: bool },
    /// The whole response reached the client.
    Finished,
    /// The worker closed its end without writing a byte.
    NoResponse,
    /// Writing to the client failed: it went away.
    ClientGone,
    /// The worker's end failed in a way that is the front's or the worker's fault.
    UpstreamFailed(io::Error),
}

#[derive(Debug)]
pub struct Exchange {
    upstream: Option<UnixStream>,
    upstream_ready: Readiness,
    slot: Option<Slot>,
    outbound: Option<Outbound>,
    response: RelayBuffer,
    from_worker: u64,
    to_client: u64,
}

impl Exchange {
    /// Registers the front's end of the pair; the worker's end is already on
    /// its way through the channel.
    pub fn start(
        front_end: OwnedFd,
        registry: &Registry,
        token: Token,
        slot: Slot,
        head: Vec<u8>,
        body: SpooledBody,
        buffer_size: usize,
    ) -> io::Result<Exchange> {
        let mut upstream = UnixStream::from_std(std::os::unix::net::UnixStream::from(front_end));
        registry.register(
            &mut upstream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(Exchange {
            upstream: Some(upstream),
            upstream_ready: Readiness {
                readable: false,
                writable: true,
            },
            slot: Some(slot),
            outbound: Some(Outbound::new(head, body)),
            response: RelayBuffer::new(buffer_size),
            from_worker: 0,
            to_client: 0,
        })
    }

    pub fn note_upstream_event(&mut self, event: &mio::event::Event) {
        self.upstream_ready.note(event);
    }

    /// True while the worker is still reading the request: abandoning the
    /// exchange then makes the worker fail fast on a short read.
    pub fn is_sending_request(&self) -> bool {
        self.outbound.is_some()
    }

    /// Response bytes the client has not taken yet.
    pub fn has_pending_response(&self) -> bool {
        !self.response.is_empty()
    }

    pub fn worker_finished(&self) -> bool {
        self.upstream.is_none()
    }

    /// Moves every byte that can move now, in both directions.
    pub fn pump(&mut self, client: &mut ClientStream, client_ready: &mut Readiness) -> Pump {
        let mut progressed = false;
        if let Some(failure) = self.send_request(&mut progressed) {
            return failure;
        }
        if let Some(failure) = self.read_response(&mut progressed) {
            return failure;
        }
        while !self.response.is_empty() && client_ready.writable {
            match write_some(client, self.response.pending()) {
                WriteOutcome::Wrote(n) => {
                    self.response.consumed(n);
                    self.to_client += n as u64;
                    progressed = true;
                }
                WriteOutcome::WouldBlock => client_ready.writable = false,
                WriteOutcome::Gone | WriteOutcome::Failed(_) => return Pump::ClientGone,
            }
            // Room was made: the worker may have more for us.
            if let Some(failure) = self.read_response(&mut progressed) {
                return failure;
            }
        }
        if self.worker_finished() && self.response.is_empty() {
            return if self.from_worker == 0 {
                Pump::NoResponse
            } else {
                Pump::Finished
            };
        }
        Pump::Working { progressed }
    }

    /// After the client went away: drop whatever the worker still writes,
    /// until it closes its end and its slot can be given back.
    pub fn discard(&mut self, scratch: &mut [u8]) -> bool {
        self.outbound = None;
        while let Some(upstream) = &mut self.upstream
            && self.upstream_ready.readable
        {
            match read_some(upstream, scratch) {
                ReadOutcome::Data(_) => {}
                ReadOutcome::WouldBlock => self.upstream_ready.readable = false,
                ReadOutcome::Eof | ReadOutcome::Gone | ReadOutcome::Failed(_) => {
                    self.finish_worker()
                }
            }
        }
        self.worker_finished()
    }

    fn send_request(&mut self, progressed: &mut bool) -> Option<Pump> {
        let (Some(outbound), Some(upstream)) = (&mut self.outbound, &mut self.upstream) else {
            return None;
        };
        if !self.upstream_ready.writable {
            return None;
        }
        let before = (outbound.sent, outbound.file_sent);
        let result = outbound.send(upstream);
        *progressed |= before != (outbound.sent, outbound.file_sent);
        match result {
            // Dropping the outbound request also frees its temp file now.
            SendResult::Done | SendResult::WorkerGone => self.outbound = None,
            SendResult::Blocked => self.upstream_ready.writable = false,
            SendResult::Failed(error) => return Some(Pump::UpstreamFailed(error)),
        }
        None
    }

    fn read_response(&mut self, progressed: &mut bool) -> Option<Pump> {
        while let Some(upstream) = &mut self.upstream
            && self.upstream_ready.readable
            && !self.response.is_full()
        {
            match read_some(upstream, self.response.space()) {
                ReadOutcome::Data(n) => {
                    self.response.filled(n);
                    self.from_worker += n as u64;
                    *progressed = true;
                }
                ReadOutcome::WouldBlock => self.upstream_ready.readable = false,
                ReadOutcome::Eof | ReadOutcome::Gone => {
                    self.finish_worker();
                    *progressed = true;
                }
                ReadOutcome::Failed(error) => return Some(Pump::UpstreamFailed(error)),
            }
        }
        None
    }

    /// The worker closed its end: it is free for the next request.
    fn finish_worker(&mut self) {
        self.upstream = None;
        self.outbound = None;
        self.slot = None;
    }
}
