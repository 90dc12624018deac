//! One request's time with a worker: the buffered request goes out over a
//! fresh connection to the workers' private listener, the response comes
//! back as fast as the worker writes it and is framed for the client, and
//! the worker's room in flight is given back the moment its last byte has arrived.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use crate::byte_queue::ResponseSink;
use crate::config::FrontConfig;
use crate::mailbox::ConnectionId;
use crate::net::client_stream::ClientStream;
use crate::net::socket_io::{ReadOutcome, Readiness, WriteOutcome, read_some, send_file, write_some};
use crate::request::body_spool::SpooledBody;
use crate::response::framing::{ClientTerms, FramingError, ResponseFramer};
use crate::response::spool::ResponseSpool;
use crate::spool_writer::SpoolWriter;
use crate::temp_budget::{TempBudget, TempShare};
use crate::upstream::dispatch::InFlight;
use crate::upstream::tunnel::Tunnel;

/// The request as the worker will read it.
#[derive(Debug)]
struct Outbound {
    /// The preamble and the head, followed by the body when the body is in
    /// memory: one write for most requests.
    bytes: Vec<u8>,
    sent: usize,
    file: Option<(Arc<std::fs::File>, u64)>,
    file_sent: u64,
    /// The body file's part of the temp budget, held while the file is.
    _share: Option<TempShare>,
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
        let (file, share) = match body {
            SpooledBody::Memory(bytes) => {
                head.extend_from_slice(&bytes);
                (None, None)
            }
            SpooledBody::File { file, length, share } => (Some((file, length)), Some(share)),
        };
        Outbound { bytes: head, sent: 0, file, file_sent: 0, _share: share }
    }

    fn send(&mut self, upstream: &mut UnixStream) -> SendResult {
        loop {
            let outcome = if self.sent < self.bytes.len() {
                write_some(upstream, &self.bytes[self.sent..])
            } else if let Some((file, length)) = &self.file
                && self.file_sent < *length
            {
                let remaining = length - self.file_sent;
                match send_file(upstream.as_fd(), file.as_fd(), &mut self.file_sent, remaining) {
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

/// A request ready for its worker, and what the client side still needs.
#[derive(Debug)]
pub struct ForwardedRequest {
    /// The preamble and the head, as the worker reads them.
    pub head: Vec<u8>,
    pub body: SpooledBody,
    pub terms: ClientTerms,
    /// The rest of a half-sent `100 Continue`, owed to the client first.
    pub interim: &'static [u8],
    /// What the client sent after this request (pipelining).
    pub leftover: Vec<u8>,
}

/// Where an exchange stands after being pumped.
#[derive(Debug)]
pub enum Pump {
    /// Still going; `client_kept_up` is false when the client is what holds
    /// the response back (it took nothing, and the disk is not the reason).
    Working { client_kept_up: bool },
    /// The whole response reached the client.
    Finished { keep_alive: bool },
    /// The worker's answer cannot be passed on. If the client has had none
    /// of it yet, it can still be told 502. `worker_died` when it stopped
    /// short (killed, crashed), not when it wrote something malformed.
    Broken { problem: String, client_got_bytes: bool, worker_died: bool },
    /// Writing to the client failed: it went away.
    ClientGone,
    /// The worker switched protocols (101): the connection becomes a tunnel.
    Upgraded,
}

#[derive(Debug)]
pub struct Exchange {
    upstream: Option<UnixStream>,
    upstream_ready: Readiness,
    in_flight: Option<InFlight>,
    outbound: Option<Outbound>,
    framer: ResponseFramer,
    response: ResponseSpool,
    to_client: u64,
    /// Bytes the client sent after this request (pipelining), for the next.
    leftover: Vec<u8>,
}

impl Exchange {
    /// Starts the exchange on a fresh connection to the workers: watches it
    /// for the response, then writes as much of the request as it takes
    /// (usually all of it), so a worker finds its request waiting. Writes
    /// are watched for only when the request did not fit: a worker taking
    /// it would otherwise wake the loop for nothing.
    pub fn start(
        mut upstream: UnixStream,
        in_flight: InFlight,
        request: ForwardedRequest,
        config: &FrontConfig,
        budget: &Arc<TempBudget>,
        writer: (SpoolWriter, ConnectionId),
        watch: (&Registry, Token),
    ) -> io::Result<Exchange> {
        let (registry, token) = watch;
        // Watched before anything is written: if watching fails, no worker
        // runs a request whose client is told 503.
        registry.register(&mut upstream, token, Interest::READABLE)?;
        let ForwardedRequest { head, body, terms, interim, leftover } = request;
        let mut response = ResponseSpool::new(
            config.proxy_buffer_size,
            Arc::clone(&config.temp_path),
            config.max_temp_file_size,
            TempShare::new(budget),
            Some(writer),
        );
        response.push(interim);
        let mut exchange = Exchange {
            upstream: Some(upstream),
            upstream_ready: Readiness { readable: false, writable: true, hung_up: false },
            in_flight: Some(in_flight),
            outbound: Some(Outbound::new(head, body)),
            framer: ResponseFramer::new(terms, config.proxy_buffer_size),
            response,
            to_client: 0,
            leftover,
        };
        // A failure shows again, and is handled, when the exchange is pumped.
        let _ = exchange.send_request();
        if exchange.outbound.is_some()
            && let Some(upstream) = &mut exchange.upstream
        {
            registry.reregister(upstream, token, Interest::READABLE | Interest::WRITABLE)?;
        }
        Ok(exchange)
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
    pub fn has_pending_response(&mut self) -> bool {
        !self.response.is_empty()
    }

    pub fn worker_finished(&self) -> bool {
        self.upstream.is_none()
    }

    pub fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.leftover)
    }

    /// Why the response stopped going to a temp file, once (a full temp_path,
    /// most likely); the worker then waits for the client instead.
    pub fn take_spool_error(&mut self) -> Option<io::Error> {
        self.response.take_file_error()
    }

    /// Moves every byte that can move now, in both directions.
    pub fn pump(&mut self, client: &mut ClientStream, client_ready: &mut Readiness, scratch: &mut [u8]) -> Pump {
        let mut client_took = false;
        if let Some(broken) = self.send_request() {
            return broken;
        }
        if let Some(broken) = self.read_response(scratch) {
            return broken;
        }
        while !self.response.is_empty() && client_ready.writable {
            match self.response.write_to(client) {
                // Waiting for the spool writer; it wakes the loop when done.
                WriteOutcome::Wrote(0) => break,
                WriteOutcome::Wrote(n) => {
                    self.to_client += n as u64;
                    client_took = true;
                }
                WriteOutcome::WouldBlock => client_ready.writable = false,
                WriteOutcome::Gone | WriteOutcome::Failed(_) => return Pump::ClientGone,
            }
            // Room was made: the worker may have more for us.
            if let Some(broken) = self.read_response(scratch) {
                return broken;
            }
        }
        if self.worker_finished() && self.response.is_empty() {
            return Pump::Finished { keep_alive: self.framer.keep_alive() };
        }
        Pump::Working { client_kept_up: client_took || self.response.waiting_for_disk() }
    }

    /// After the client went away: drop whatever the worker still writes,
    /// until it closes its end and its room in flight can be given back.
    pub fn discard(&mut self, scratch: &mut [u8]) -> bool {
        self.outbound = None;
        // Nobody will read it: the temp file goes now, not when the worker ends.
        self.response.discard_all();
        while let Some(upstream) = &mut self.upstream
            && self.upstream_ready.readable
        {
            match read_some(upstream, scratch) {
                ReadOutcome::Data(_) => {}
                ReadOutcome::WouldBlock => self.upstream_ready.readable = false,
                ReadOutcome::Eof | ReadOutcome::Gone | ReadOutcome::Failed(_) => self.finish_worker(),
            }
        }
        self.worker_finished()
    }

    fn send_request(&mut self) -> Option<Pump> {
        let (Some(outbound), Some(upstream)) = (&mut self.outbound, &mut self.upstream) else {
            return None;
        };
        if !self.upstream_ready.writable {
            return None;
        }
        match outbound.send(upstream) {
            // Dropping the outbound request also frees its temp file now.
            SendResult::Done | SendResult::WorkerGone => self.outbound = None,
            SendResult::Blocked => self.upstream_ready.writable = false,
            SendResult::Failed(error) => return Some(self.broken(format!("writing the request: {error}"), true)),
        }
        None
    }

    fn read_response(&mut self, scratch: &mut [u8]) -> Option<Pump> {
        while let Some(upstream) = &mut self.upstream
            && self.upstream_ready.readable
        {
            let room = self.response.room().min(scratch.len());
            if room == 0 {
                break; // the worker waits for the client (or the disk)
            }
            let framed = match read_some(upstream, &mut scratch[..room]) {
                ReadOutcome::Data(n) => {
                    let framed = self.framer.feed(&scratch[..n], &mut self.response);
                    if self.framer.unbuffered() {
                        self.response.disable_file();
                    }
                    framed
                }
                ReadOutcome::WouldBlock => {
                    self.upstream_ready.readable = false;
                    continue;
                }
                ReadOutcome::Eof | ReadOutcome::Gone => {
                    self.finish_worker();
                    self.framer.finish(&mut self.response)
                }
                ReadOutcome::Failed(error) => return Some(self.broken(format!("reading the response: {error}"), true)),
            };
            if let Err(error) = framed {
                let died = matches!(error, FramingError::NoResponse | FramingError::Truncated);
                return Some(self.broken(error.describe().to_owned(), died));
            }
            if self.framer.status() == Some(101) {
                return Some(Pump::Upgraded);
            }
            // The framing says the response is whole: the worker has written
            // its last byte, so it is free now, before it even closes; its
            // room goes to the next request, which then waits for the
            // worker in the channel instead of the worker waiting for it.
            if self.framer.is_done() && self.upstream.is_some() {
                self.finish_worker();
            }
        }
        None
    }

    /// Turns an upgraded exchange into a tunnel, with what is still owed
    /// each way: the 101 and anything after it to the client, the rest of
    /// the request and the client's later bytes to the worker.
    pub fn into_tunnel(mut self, buffer_size: usize) -> Option<Tunnel> {
        let mut to_worker = Vec::new();
        if let Some(outbound) = &self.outbound {
            if outbound.file.is_some() {
                return None; // an upgrade request has no body to stream
            }
            to_worker.extend_from_slice(&outbound.bytes[outbound.sent..]);
        }
        to_worker.extend_from_slice(&self.leftover);
        let upstream = self.upstream.take()?;
        let in_flight = self.in_flight.take()?;
        Some(Tunnel::new(upstream, self.upstream_ready, in_flight, self.response, &to_worker, buffer_size))
    }

    /// The status of the worker's response, once its head was read.
    pub fn status(&self) -> Option<u16> {
        self.framer.status()
    }

    /// Bytes the client has taken so far: all of them, and the body's.
    pub fn sent_to_client(&self) -> (u64, u64) {
        (self.to_client, self.to_client.saturating_sub(self.framer.head_bytes()))
    }

    fn broken(&self, problem: String, worker_died: bool) -> Pump {
        Pump::Broken { problem, client_got_bytes: self.to_client > 0, worker_died }
    }

    /// The worker is done with this request: close our end (any late bytes
    /// of a worker writing past its own framing are dropped with it) and
    /// give its room in flight back.
    fn finish_worker(&mut self) {
        self.upstream = None;
        self.outbound = None;
        self.in_flight = None;
    }
}
