//! One thread's event loop: accepts clients on its copies of the listeners,
//! routes readiness events to connections, delivers worker slots granted by
//! other threads, and checks deadlines on a short tick.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use std::collections::VecDeque;

use crate::connection::{Connection, FollowUp, Spawn};
use crate::connection_id::ConnectionId;
use crate::connection_permit::ConnectionPermit;
use crate::counters::{Counters, PhaseCount};
use crate::http::error_response::Rejection;
use crate::loop_context::{FIRST_LISTENER_TOKEN, LoopContext, TokenOwner, Verdict, client_token};
use crate::net::client_address::ClientAddress;
use crate::net::client_stream::ClientStream;
use crate::net::listener::{Listener, Scheme};
use crate::shared::{Shared, StopMode};
use crate::spool_writer::SpoolWriter;
use crate::upstream::pool::InFlight;

/// Deadlines are checked this often; timeouts are in seconds, so this is
/// precise enough and costs nothing when idle.
const TICK: Duration = Duration::from_millis(100);
/// After accept fails for lack of descriptors or memory, wait this long
/// before trying again instead of spinning on a listener that stays ready.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Reading buffer shared by the loop's connections.
const SCRATCH_SIZE: usize = 64 * 1024;

pub struct EventLoop {
    index: usize,
    poll: Poll,
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    connections: Slab<Connection>,
    scratch: Box<[u8]>,
    next_serial: u64,
    /// Clients may be waiting in a backlog we stopped draining (at
    /// max_connections, or after an accept error): try again on the tick.
    accept_deferred: bool,
    accept_paused_until: Option<Instant>,
    last_accept_complaint: Option<Instant>,
    last_tick: Instant,
    /// This turn brought news that a host was found gone (see LoopContext).
    host_news: bool,
    stop_deadline: Option<Instant>,
    writer: SpoolWriter,
    /// The last request for room (see `Shared::want_room_for_newcomers`)
    /// this loop answered.
    room_asked_seen: u64,
    /// Connections an HTTP/2 link says have something to do (see
    /// `FollowUp`), run in turn rather than from inside one another.
    wake_queue: VecDeque<crate::connection_id::ConnectionId>,
    waking: bool,
}

impl EventLoop {
    pub fn new(index: usize, poll: Poll, shared: Arc<Shared>, mut listeners: Vec<Listener>) -> io::Result<Self> {
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry().register(listener, Token(FIRST_LISTENER_TOKEN + i), Interest::READABLE)?;
        }
        let writer = SpoolWriter::start(format!("nightmare-{index}-disk"), Arc::clone(&shared.mailboxes))?;
        let room_asked_seen = shared.room_wanted();
        Ok(EventLoop {
            index,
            poll,
            shared,
            listeners,
            connections: Slab::new(),
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            next_serial: 0,
            accept_deferred: false,
            accept_paused_until: None,
            last_accept_complaint: None,
            last_tick: Instant::now(),
            host_news: false,
            stop_deadline: None,
            room_asked_seen,
            writer,
            wake_queue: VecDeque::new(),
            waking: false,
        })
    }

    pub fn run(mut self) {
        self.shared.mailboxes.0[self.index].claim_for_this_thread();
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(error) = self.poll.poll(&mut events, Some(TICK)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.shared.log.error(format!("event loop {} cannot poll: {error}", self.index));
                break;
            }
            let now = Instant::now();
            for event in events.iter() {
                match TokenOwner::of(event.token()) {
                    TokenOwner::Waker => {}
                    TokenOwner::Connection { slot, upstream } => self.connection_event(slot, upstream, event, now),
                    TokenOwner::Listener(index) => self.accept_clients(index, now),
                }
            }
            // News of a gone host is acted on at once: requests waiting on
            // it go elsewhere.
            let host_lost = self.shared.mailboxes.0[self.index].take_host_lost();
            if host_lost || now.duration_since(self.last_tick) >= TICK {
                self.last_tick = now;
                self.host_news = host_lost;
                self.tick(now);
                self.host_news = false;
            }
            self.make_room_if_asked(now);
            self.deliver_written(now);
            // Last before polling: grants and turns this thread posted to
            // itself came without a wakeup.
            self.deliver_grants(now);
            if self.should_exit(now) {
                break;
            }
        }
        // Dropping the loop (see Drop) closes its connections and its mailbox.
    }

    fn context(&mut self, now: Instant) -> (LoopContext<'_>, &mut Slab<Connection>) {
        let ctx = LoopContext {
            shared: &self.shared,
            registry: self.poll.registry(),
            scratch: &mut self.scratch,
            now,
            writer: &self.writer,
            host_news: self.host_news,
        };
        (ctx, &mut self.connections)
    }

    fn connection_event(&mut self, slot: usize, upstream: bool, event: &mio::event::Event, now: Instant) {
        // Events are hints: one for a connection that just closed is dropped.
        self.run_connection(slot, None, now, |connection, ctx| {
            if upstream { connection.on_upstream_event(event, ctx) } else { connection.on_client_event(event, ctx) }
        });
    }

    /// Runs `handler` on the connection in `slot` (if it is still the one
    /// with `serial`, when given), closing it when the handler says so.
    /// Returns false when there is no such connection.
    fn run_connection(
        &mut self,
        slot: usize,
        serial: Option<u64>,
        now: Instant,
        handler: impl FnOnce(&mut Connection, &mut LoopContext) -> Verdict,
    ) -> bool {
        let (mut ctx, connections) = self.context(now);
        let Some(connection) = connections.get_mut(slot).filter(|c| serial.is_none_or(|s| c.serial() == s)) else {
            return false;
        };
        let closing = guarded(&mut ctx, |ctx| handler(connection, ctx)) == Verdict::Close;
        let follow_up = connection.take_follow_up(closing);
        if closing {
            connections.remove(slot);
            self.resume_accepting(now);
        }
        self.follow(follow_up, now);
        true
    }

    /// Makes the connections an HTTP/2 client's streams need, and runs the
    /// ones its link woke, until none is left to run.
    fn follow(&mut self, follow_up: FollowUp, now: Instant) {
        if let Some(spawn) = follow_up.spawn {
            for &stream in &spawn.streams {
                self.add_stream(&spawn, stream, now);
            }
        }
        self.wake_queue.extend(follow_up.wake);
        if self.waking {
            return;
        }
        self.waking = true;
        while let Some(id) = self.wake_queue.pop_front() {
            self.run_connection(id.slot, Some(id.serial), now, Connection::on_wake);
        }
        self.waking = false;
    }

    fn add_stream(&mut self, spawn: &Spawn, stream: u32, now: Instant) {
        let slot = self.connections.vacant_key();
        self.next_serial += 1;
        let id = ConnectionId { loop_index: self.index, slot, serial: self.next_serial };
        let deadline = now + self.shared.config.client_header_timeout;
        let connection = Connection::for_stream(id, spawn.link.clone(), stream, spawn.peer, spawn.scheme, deadline);
        spawn.link.lock().streams.insert(stream, id);
        self.connections.insert(connection);
        self.wake_queue.push_back(id);
    }

    fn accept_clients(&mut self, listener_index: usize, now: Instant) {
        if self.listeners.get(listener_index).is_none() || self.shared.stop_mode() != StopMode::Running {
            return;
        }
        loop {
            let permit = match ConnectionPermit::try_acquire(&self.shared.clients) {
                Some(permit) => Some(permit),
                // Room can be made by closing idle keep-alive connections,
                // but only once a client is really there to take it.
                None if self.connections.iter().any(|(_, connection)| connection.idle_until().is_some()) => None,
                None => {
                    if !self.accept_deferred {
                        // Another loop may hold idle ones: it is asked to
                        // close a few, and this loop tries again on its tick.
                        self.shared.want_room_for_newcomers();
                    }
                    self.accept_deferred = true;
                    self.complain_about_accept(now, || {
                        "max_connections reached; new clients wait in the listen backlog".into()
                    });
                    return;
                }
            };
            let listener = &self.listeners[listener_index];
            let scheme = listener.scheme();
            match listener.accept() {
                Ok((client, peer)) => {
                    Counters::add(&self.shared.counters.accepted);
                    let permit = permit.or_else(|| {
                        self.close_idle_keep_alive(now);
                        ConnectionPermit::try_acquire(&self.shared.clients)
                    });
                    match permit {
                        Some(mut permit) => {
                            if permit.claim_address(&peer) {
                                self.add_connection(client, peer, scheme, permit, now)
                            } else {
                                self.refuse_for_its_address(client, peer, now)
                            }
                        }
                        // Another loop took the room made here: rare, and
                        // the client may retry.
                        None => drop(client),
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error)
                    if error.kind() == io::ErrorKind::Interrupted
                        || matches!(error.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM)) =>
                {
                    // The client gave up (or a firewall said no) between SYN and accept.
                    continue;
                }
                Err(error) => {
                    self.accept_deferred = true;
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    self.complain_about_accept(now, || format!("cannot accept clients: {error}; retrying shortly"));
                    return;
                }
            }
        }
    }

    /// At max_connections, closes this loop's idle keep-alive connections
    /// that would time out soonest (nginx does the same), a few at a time.
    /// A client whose next request is on its way sees the close and
    /// retries, as it would after keepalive_timeout.
    fn close_idle_keep_alive(&mut self, now: Instant) {
        // A few at once, as nginx does, so a stream of newcomers does not
        // scan every connection for each one.
        const AT_ONCE: usize = 16;
        let mut idle: Vec<(Instant, usize)> = self
            .connections
            .iter()
            .filter_map(|(slot, connection)| connection.idle_until().map(|until| (until, slot)))
            .collect();
        if idle.is_empty() {
            return;
        }
        let count = idle.len().min(AT_ONCE);
        idle.select_nth_unstable(count - 1);
        for &(_, slot) in &idle[..count] {
            self.connections.remove(slot);
        }
        if self.shared.idle_closed_for_room.allows(now) {
            self.shared
                .log
                .info(format!("max_connections reached: closed {count} idle keep-alive connections for new clients"));
        }
    }

    /// Another loop at max_connections found no idle connection of its own
    /// to close for a newcomer: this one closes a few of its own.
    fn make_room_if_asked(&mut self, now: Instant) {
        let asked = self.shared.room_wanted();
        if asked != self.room_asked_seen {
            self.room_asked_seen = asked;
            self.close_idle_keep_alive(now);
        }
    }

    /// An address over max_connections_per_address: told so in plain HTTP
    /// where it can be (nginx's limit_conn answers 503), then closed at
    /// once. What it already sent is read first and dropped, since closing
    /// a socket with unread bytes sends a reset that would destroy the 503.
    fn refuse_for_its_address(&mut self, mut client: ClientStream, peer: ClientAddress, now: Instant) {
        if !client.is_tls() {
            let refusal = Rejection::new(503, "too many connections from your address").to_response();
            let _ = crate::net::socket_io::write_some(&mut client, &refusal);
            let _ = client.shutdown(std::net::Shutdown::Write);
            let _ = crate::net::socket_io::read_some(&mut client, &mut self.scratch);
        }
        if self.shared.address_over_share.allows(now) {
            self.shared.log.info(format!(
                "client {peer} refused: its address holds max_connections_per_address ({}) already",
                self.shared.clients.per_address()
            ));
        }
    }

    /// At most one line a second about accept trouble, however hard it hits.
    fn complain_about_accept(&mut self, now: Instant, message: impl FnOnce() -> String) {
        if self.last_accept_complaint.is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1)) {
            self.last_accept_complaint = Some(now);
            self.shared.log.warn(message());
        }
    }

    fn add_connection(
        &mut self,
        mut client: ClientStream,
        peer: ClientAddress,
        scheme: Scheme,
        permit: ConnectionPermit,
        now: Instant,
    ) {
        let lowat = self.shared.config.tcp_notsent_lowat;
        if lowat > 0
            && let Some(socket) = client.tcp_socket()
        {
            // Failing that is no reason to drop the client.
            let _ = crate::net::send_buffer::limit_unsent(socket, lowat);
        }
        let slot = self.connections.vacant_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self.poll.registry().register(&mut client, client_token(slot), interest) {
            self.shared.log.error(format!("cannot watch client {peer}: {error}"));
            return;
        }
        self.next_serial += 1;
        let deadline = now + self.shared.config.client_header_timeout;
        let id = ConnectionId { loop_index: self.index, slot, serial: self.next_serial };
        let connection = Connection::new(id, client, peer, scheme, Some(permit), deadline);
        self.connections.insert(connection);
        self.run_connection(slot, None, now, Connection::drive);
    }

    /// Connections whose temp file has more written: they may send it now.
    fn deliver_written(&mut self, now: Instant) {
        let written = self.shared.mailboxes.0[self.index].take_written();
        for owner in written {
            self.run_connection(owner.slot, Some(owner.serial), now, Connection::drive);
        }
    }

    /// Until the mailbox stays empty: handling a grant can release a slot
    /// that this very loop is granted next, and a request that ends can
    /// pass its address's turn to another of this loop's connections.
    fn deliver_grants(&mut self, now: Instant) {
        loop {
            let mailbox = &self.shared.mailboxes.0[self.index];
            let (grants, shares) = (mailbox.take_grants(), mailbox.take_shares());
            if grants.is_empty() && shares.is_empty() {
                return;
            }
            self.handle_grants(grants, now);
            // A turn whose connection left is dropped here, and passes on.
            for (id, slot) in shares {
                self.run_connection(id.slot, Some(id.serial), now, |connection, ctx| connection.on_share(slot, ctx));
            }
        }
    }

    fn handle_grants(&mut self, grants: Vec<(ConnectionId, InFlight)>, now: Instant) {
        for (id, room) in grants {
            let waiting = self.connections.get(id.slot).is_some_and(|c| c.serial() == id.serial && c.is_queued());
            if waiting {
                self.run_connection(id.slot, Some(id.serial), now, |connection, ctx| connection.on_grant(room, ctx));
            }
            // Otherwise the connection left (or stopped waiting) before its
            // turn came: the room, dropped, goes on to the next one.
        }
    }

    fn tick(&mut self, now: Instant) {
        self.shared.pool.tick(now);
        let (mut ctx, connections) = self.context(now);
        let mut phases = PhaseCount::default();
        let mut follow_ups = Vec::new();
        connections.retain(|_, connection| {
            let keep = guarded(&mut ctx, |ctx| connection.on_tick(ctx)) == Verdict::Keep;
            if keep {
                phases.add(connection.phase());
            }
            follow_ups.push(connection.take_follow_up(!keep));
            keep
        });
        self.shared.phases[self.index].publish(phases, self.writer.unconfirmed());
        for follow_up in follow_ups {
            self.follow(follow_up, now);
        }
        self.resume_accepting(now);
    }

    fn resume_accepting(&mut self, now: Instant) {
        if !self.accept_deferred || self.accept_paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.accept_deferred = false;
        self.accept_paused_until = None;
        for index in 0..self.listeners.len() {
            self.accept_clients(index, now);
        }
    }

    fn should_exit(&mut self, now: Instant) -> bool {
        match self.shared.stop_mode() {
            StopMode::Running => false,
            StopMode::Immediate => true,
            StopMode::Graceful => {
                if self.stop_deadline.is_none() {
                    // Closing our copies of the listeners leaves new clients
                    // in the backlog for the next front (the master keeps
                    // the sockets open).
                    self.listeners.clear();
                    self.stop_deadline = Some(now + self.shared.config.shutdown_timeout);
                }
                self.connections.is_empty() || self.stop_deadline.is_some_and(|deadline| now >= deadline)
            }
        }
    }
}

impl Drop for EventLoop {
    /// However the loop ends (a panic outside a connection's handler too):
    /// the connections close, which frees their rooms, turns and temp
    /// files, and the mailbox closes, so what is posted to it from now on
    /// goes back to the loops still running.
    fn drop(&mut self) {
        self.connections.clear();
        self.shared.mailboxes.0[self.index].close();
    }
}

/// Runs one connection's handler. A panic there is a bug; it closes that
/// connection only, so one client cannot take down every client of the
/// loop. (The panic's message and place go to stderr, i.e. stderr_path.)
fn guarded(ctx: &mut LoopContext, handler: impl FnOnce(&mut LoopContext) -> Verdict) -> Verdict {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&mut *ctx))) {
        Ok(verdict) => verdict,
        Err(_) => {
            ctx.shared.log.error("bug: the front panicked while handling a client; that connection was closed");
            Verdict::Close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FrontConfig;
    use crate::loop_context::WAKER;
    use crate::mailbox::{Mailbox, Mailboxes};
    use crate::shared::{Outputs, OwnAnswers};
    use crate::static_files::{StaticFiles, StaticSettings};
    use crate::upstream::pool::Pool;
    use crate::upstream::spec::UpstreamSpec;
    use mio::Waker;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::OwnedFd;

    /// Two loops, each accepting on a listener of its own (a front's loops
    /// share theirs; here a test chooses which loop a client reaches), and
    /// static files so requests need no worker.
    struct TwoLoops {
        shared: Arc<Shared>,
        threads: Vec<std::thread::JoinHandle<()>>,
        ports: [u16; 2],
        _site: tempfile::TempDir,
        _log: std::fs::File,
    }

    impl TwoLoops {
        fn start(config: FrontConfig) -> TwoLoops {
            let site = tempfile::tempdir().unwrap();
            std::fs::write(site.path().join("hello.txt"), "hello").unwrap();
            let polls = [Poll::new().unwrap(), Poll::new().unwrap()];
            let mailboxes =
                polls.iter().map(|poll| Mailbox::new(Waker::new(poll.registry(), WAKER).unwrap())).collect();
            let (log, log_reader) = crate::log::tests::readable_log();
            let static_files = StaticFiles::new(StaticSettings::new(site.path().to_path_buf())).unwrap();
            let mailboxes = Arc::new(Mailboxes(mailboxes));
            // No upstream at all: the files are all there is.
            let pool = Pool::new(None, &UpstreamSpec::default(), 16, Box::new(Arc::clone(&mailboxes)));
            let outputs = Outputs { log: Arc::new(log), access_log: None };
            let answers = OwnAnswers { static_files: Some(static_files), ..OwnAnswers::default() };
            let shared = Arc::new(Shared::new(config, pool, outputs, mailboxes, answers));
            let mut ports = [0; 2];
            let threads = polls
                .into_iter()
                .enumerate()
                .map(|(index, poll)| {
                    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
                    ports[index] = socket.local_addr().unwrap().port();
                    let listener = Listener::from_inherited(OwnedFd::from(socket)).unwrap();
                    let event_loop = EventLoop::new(index, poll, Arc::clone(&shared), vec![listener]).unwrap();
                    std::thread::spawn(move || event_loop.run())
                })
                .collect();
            TwoLoops { shared, threads, ports, _site: site, _log: log_reader }
        }

        /// A client of loop `index` that got its file and stays connected.
        fn fetch(&self, index: usize, patience: Duration) -> io::Result<TcpStream> {
            let mut client = TcpStream::connect(("127.0.0.1", self.ports[index]))?;
            client.set_read_timeout(Some(patience))?;
            client.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")?;
            let mut response = Vec::new();
            let mut buffer = [0; 1024];
            while !response.ends_with(b"\r\n\r\nhello") {
                match client.read(&mut buffer)? {
                    0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
                    n => response.extend_from_slice(&buffer[..n]),
                }
            }
            assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
            Ok(client)
        }
    }

    impl Drop for TwoLoops {
        fn drop(&mut self) {
            self.shared.request_stop(StopMode::Immediate);
            self.threads.drain(..).for_each(|thread| thread.join().unwrap());
        }
    }

    #[test]
    fn a_loop_with_no_idle_connections_gets_room_from_another() {
        let config = FrontConfig {
            threads: 2,
            max_connections: 4,
            keepalive_timeout: Duration::from_secs(120),
            ..FrontConfig::default()
        };
        let loops = TwoLoops::start(config);
        // Every connection is an idle keep-alive one of loop 1.
        let idle: Vec<TcpStream> = (0..4).map(|_| loops.fetch(1, Duration::from_secs(5)).unwrap()).collect();
        // Loop 0 holds none to close; without the other loop's help its
        // newcomer would wait for keepalive_timeout (120 s).
        let newcomer = loops.fetch(0, Duration::from_secs(3));
        assert!(newcomer.is_ok(), "the newcomer of loop 0 is served: {newcomer:?}");
        drop(idle);
    }
}
