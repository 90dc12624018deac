//! A connection that switched protocols (a 101, e.g. a WebSocket served
//! through rack.hijack): bytes pass both ways between client and worker,
//! each way with back-pressure. An EOF from one side becomes a write
//! shutdown toward the other. A worker that closed its socket entirely is
//! free (its room in flight is given back at once) and the tunnel ends when its last
//! bytes have reached the client; a worker that only shut down its writing
//! still reads, so the tunnel then lasts until the client is done too.

use std::net::Shutdown;

use crate::upstream::connect::UpstreamStream;

use crate::byte_queue::{ByteQueue, ResponseSink};
use crate::net::client_stream::ClientStream;
use crate::net::socket_io::{ReadOutcome, Readiness, WriteOutcome, read_some, write_some};
use crate::response::spool::ResponseSpool;
use crate::upstream::pool::InFlight;

#[derive(Debug)]
pub enum TunnelStep {
    Open { moved: bool },
    Closed,
}

#[derive(Debug)]
pub struct Tunnel {
    upstream: UpstreamStream,
    upstream_ready: Readiness,
    in_flight: Option<InFlight>,
    to_worker: ByteQueue,
    to_client: ResponseSpool,
    client_done: bool,
    /// The worker will send nothing more (EOF).
    worker_done: bool,
    /// The worker closed its socket entirely: it reads nothing either.
    worker_gone: bool,
    upstream_shut: bool,
    client_shut: bool,
}

impl Tunnel {
    /// `to_client` starts with the 101 head (and whatever followed it);
    /// `to_worker` with bytes the client sent after its request.
    pub fn new(
        upstream: UpstreamStream,
        upstream_ready: Readiness,
        in_flight: InFlight,
        mut to_client: ResponseSpool,
        to_worker: &[u8],
        buffer_size: usize,
    ) -> Tunnel {
        to_client.disable_file();
        let mut buffer = ByteQueue::new(buffer_size);
        buffer.push(to_worker);
        Tunnel {
            upstream,
            upstream_ready,
            in_flight: Some(in_flight),
            to_worker: buffer,
            to_client,
            client_done: false,
            worker_done: false,
            worker_gone: false,
            upstream_shut: false,
            client_shut: false,
        }
    }

    /// The worker has closed its side: it is free, whatever the client
    /// still has to take.
    pub fn worker_finished(&self) -> bool {
        self.in_flight.is_none()
    }

    pub fn note_upstream_event(&mut self, event: &mio::event::Event) {
        self.upstream_ready.note(event);
        // A UNIX socket whose peer closed reports a hang-up; one whose peer
        // only shut down its writing reports a read hang-up alone.
        if event.is_write_closed() {
            self.worker_gone = true;
        }
    }

    /// Moves what can move, both ways; `moved` says whether anything did.
    pub fn pump(&mut self, client: &mut ClientStream, client_ready: &mut Readiness, scratch: &mut [u8]) -> TunnelStep {
        let mut moved = false;
        loop {
            let Some(progress) = self.step(client, client_ready, scratch) else { return TunnelStep::Closed };
            if self.worker_gone && self.worker_done {
                self.in_flight = None;
            }
            let worker_finished = self.worker_done && (self.worker_gone || self.client_done);
            if worker_finished && self.to_client.is_empty() {
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
        if !self.client_done && !self.worker_gone && client_ready.readable && self.to_worker.room() > 0 {
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
                // The worker closed: what the client sends has nowhere to
                // go, but what the worker wrote still goes to the client.
                WriteOutcome::Gone => {
                    self.worker_gone = true;
                    self.client_done = true;
                    self.to_worker = ByteQueue::new(0);
                    progress = true;
                }
                WriteOutcome::Failed(_) => return None,
            }
        }
        if self.client_done && self.to_worker.is_empty() && !self.upstream_shut {
            let _ = self.upstream.shutdown(Shutdown::Write);
            self.upstream_shut = true;
        }
        if !self.worker_done && self.upstream_ready.readable && self.to_client.room(true) > 0 {
            let room = self.to_client.room(true).min(scratch.len());
            match read_some(&mut self.upstream, &mut scratch[..room]) {
                ReadOutcome::Data(n) => {
                    self.to_client.push(&scratch[..n]);
                    progress = true;
                }
                ReadOutcome::WouldBlock => self.upstream_ready.readable = false,
                // A reset from a worker that closed with our bytes unread
                // ends its output like an EOF; what it wrote still goes out.
                ReadOutcome::Eof | ReadOutcome::Gone => {
                    self.worker_done = true;
                    progress = true;
                }
                ReadOutcome::Failed(_) => return None,
            }
        }
        if self.worker_done && self.to_client.is_empty() && !self.client_shut {
            let _ = client.shutdown(Shutdown::Write);
            self.client_shut = true;
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
