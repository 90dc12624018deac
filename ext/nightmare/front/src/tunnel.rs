//! A connection that switched protocols (a 101, e.g. a WebSocket served
//! through rack.hijack): bytes pass both ways between client and worker,
//! each way with back-pressure. A client's EOF becomes a write shutdown
//! toward the worker; the tunnel ends when the worker has closed and its
//! last bytes have reached the client. The worker is busy (it holds the
//! hijacked socket) until it closes, and its slot is given back then.

use std::net::Shutdown;

use mio::net::UnixStream;

use crate::dispatch::Slot;
use crate::listener::ClientStream;
use crate::relay::{RelayBuffer, ResponseSink};
use crate::response_spool::ResponseSpool;
use crate::socket_io::{ReadOutcome, Readiness, WriteOutcome, read_some, write_some};

#[derive(Debug)]
pub enum TunnelStep {
    Open { moved: bool },
    Closed,
}

#[derive(Debug)]
pub struct Tunnel {
    upstream: UnixStream,
    upstream_ready: Readiness,
    slot: Option<Slot>,
    to_worker: RelayBuffer,
    to_client: ResponseSpool,
    client_done: bool,
    worker_done: bool,
    upstream_shut: bool,
}

impl Tunnel {
    /// `to_client` starts with the 101 head (and whatever followed it);
    /// `to_worker` with bytes the client sent after its request.
    pub fn new(
        upstream: UnixStream,
        upstream_ready: Readiness,
        slot: Slot,
        mut to_client: ResponseSpool,
        to_worker: &[u8],
        buffer_size: usize,
    ) -> Tunnel {
        to_client.disable_file();
        let mut buffer = RelayBuffer::new(buffer_size);
        buffer.push(to_worker);
        Tunnel {
            upstream,
            upstream_ready,
            slot: Some(slot),
            to_worker: buffer,
            to_client,
            client_done: false,
            worker_done: false,
            upstream_shut: false,
        }
    }

    pub fn note_upstream_event(&mut self, event: &mio::event::Event) {
        self.upstream_ready.note(event);
    }

    /// Moves what can move, both ways; `moved` says whether anything did.
    pub fn pump(&mut self, client: &mut ClientStream, client_ready: &mut Readiness, scratch: &mut [u8]) -> TunnelStep {
        let mut moved = false;
        loop {
            let Some(progress) = self.step(client, client_ready, scratch) else { return TunnelStep::Closed };
            if self.worker_done && self.to_client.is_empty() {
                return TunnelStep::Closed;
            }
            moved |= progress;
            if !progress {
                return TunnelStep::Open { moved };
            }
        }
    }

    /// One round in each direction; `None` when either side failed.
    fn step(&mut self, client: &mut ClientStream, client_ready: &mut Readiness, scratch: &mut [u8]) -> Option<bool> {
        let mut progress = false;
        if !self.client_done && client_ready.readable && self.to_worker.room() > 0 {
            let room = self.to_worker.room().min(scratch.len());
            match read_some(client, &mut scratch[..room]) {
                ReadOutcome::Data(n) => {
                    self.to_worker.push(&scratch[..n]);
                    progress = true;
                }
                ReadOutcome::WouldBlock => client_ready.readable = false,
                ReadOutcome::Eof => {
                    self.client_done = true;
                    progress = true;
                }
                ReadOutcome::Gone | ReadOutcome::Failed(_) => return None,
            }
        }
        if !self.to_worker.is_empty() && self.upstream_ready.writable {
            match write_some(&mut self.upstream, self.to_worker.pending()) {
                WriteOutcome::Wrote(n) => {
                    self.to_worker.consumed(n);
                    progress = true;
                }
                WriteOutcome::WouldBlock => self.upstream_ready.writable = false,
                WriteOutcome::Gone | WriteOutcome::Failed(_) => return None,
            }
        }
        if self.client_done && self.to_worker.is_empty() && !self.upstream_shut {
            let _ = self.upstream.shutdown(Shutdown::Write);
            self.upstream_shut = true;
        }
        if !self.worker_done && self.upstream_ready.readable && self.to_client.room() > 0 {
            let room = self.to_client.room().min(scratch.len());
            match read_some(&mut self.upstream, &mut scratch[..room]) {
                ReadOutcome::Data(n) => {
                    self.to_client.push(&scratch[..n]);
                    progress = true;
                }
                ReadOutcome::WouldBlock => self.upstream_ready.readable = false,
                ReadOutcome::Eof => {
                    self.worker_done = true;
                    self.slot = None;
                    progress = true;
                }
                ReadOutcome::Gone | ReadOutcome::Failed(_) => return None,
            }
        }
        if !self.to_client.is_empty() && client_ready.writable {
            match self.to_client.write_to(client) {
                WriteOutcome::Wrote(n) => progress |= n > 0,
                WriteOutcome::WouldBlock => client_ready.writable = false,
                WriteOutcome::Gone | WriteOutcome::Failed(_) => return None,
            }
        }
        Some(progress)
    }
}
