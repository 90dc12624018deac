//! Connecting to an upstream without blocking: the workers' private
//! listener (a UNIX socket whose accept queue holds requests until a worker
//! takes one, exactly as behind nginx), another UNIX socket, or a TCP
//! listener on another host. A UNIX connect completes or fails at once; a
//! TCP connect is in progress until the socket turns writable.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::upstream::address::UpstreamAddress;

/// A connection to an upstream.
#[derive(Debug)]
pub enum UpstreamStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// A UNIX socket's accept queue is full (EAGAIN): the listener is
    /// there, its workers are all busy.
    Busy,
    /// Nothing listens there (refused, no such socket file).
    Absent(io::Error),
    Failed(io::Error),
}

impl ConnectError {
    fn of(error: io::Error) -> ConnectError {
        match error.raw_os_error() {
            Some(libc::EAGAIN) => ConnectError::Busy,
            Some(libc::ECONNREFUSED | libc::ENOENT) => ConnectError::Absent(error),
            _ => ConnectError::Failed(error),
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Busy => f.write_str("its accept queue is full"),
            ConnectError::Absent(error) | ConnectError::Failed(error) => error.fmt(f),
        }
    }
}

/// Starts connecting to `address`. `pending` is true while a TCP connect
/// is in progress: wait for the socket to turn writable, then `finished`.
pub fn connect(address: &UpstreamAddress) -> Result<(UpstreamStream, bool), ConnectError> {
    match address {
        UpstreamAddress::Unix(path) => {
            UnixStream::connect(path).map(|stream| (UpstreamStream::Unix(stream), false)).map_err(ConnectError::of)
        }
        UpstreamAddress::Tcp(address) => {
            let stream = TcpStream::connect(*address).map_err(ConnectError::of)?;
            // The request goes out in one write and the answer comes back
            // at once: no Nagle delay on either.
            let _ = stream.set_nodelay(true);
            Ok((UpstreamStream::Tcp(stream), true))
        }
    }
}

impl UpstreamStream {
    /// After a writable event on a pending connect: `true` once connected,
    /// `false` while the connect is still in progress, or why it failed.
    /// The event alone is not proof: one meant for an earlier socket of the
    /// same token (a connection closed and its slot reused within one
    /// batch of events) finds this connect pending, and taking it for done
    /// would leave a request to a vanished host with no deadline at all.
    pub fn finished(&self) -> Result<bool, ConnectError> {
        let UpstreamStream::Tcp(stream) = self else { return Ok(true) };
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(error)) | Err(error) => return Err(ConnectError::of(error)),
        }
        match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(error) if error.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
            Err(error) => Err(ConnectError::of(error)),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            UpstreamStream::Unix(stream) => stream.shutdown(how),
            UpstreamStream::Tcp(stream) => stream.shutdown(how),
        }
    }
}

impl Read for UpstreamStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            UpstreamStream::Unix(stream) => stream.read(buf),
            UpstreamStream::Tcp(stream) => stream.read(buf),
        }
    }
}

impl Write for UpstreamStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            UpstreamStream::Unix(stream) => stream.write(buf),
            UpstreamStream::Tcp(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for UpstreamStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            UpstreamStream::Unix(stream) => stream.as_fd(),
            UpstreamStream::Tcp(stream) => stream.as_fd(),
        }
    }
}

impl Source for UpstreamStream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            UpstreamStream::Unix(stream) => stream.register(registry, token, interests),
            UpstreamStream::Tcp(stream) => stream.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            UpstreamStream::Unix(stream) => stream.reregister(registry, token, interests),
            UpstreamStream::Tcp(stream) => stream.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            UpstreamStream::Unix(stream) => stream.deregister(registry),
            UpstreamStream::Tcp(stream) => stream.deregister(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    fn listen(path: &Path, backlog: libc::c_int) -> std::os::unix::net::UnixListener {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        // SAFETY: listen on a socket we own, to shrink its backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), backlog) }, 0);
        listener
    }

    #[test]
    fn a_unix_connect_tells_a_full_queue_from_an_absent_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workers.sock");
        let address = UpstreamAddress::Unix(path.clone());
        assert!(matches!(connect(&address), Err(ConnectError::Absent(_))), "no socket file");

        let listener = listen(&path, 0);
        let mut held = Vec::new();
        let busy = loop {
            match connect(&address) {
                Ok((stream, pending)) => {
                    assert!(!pending, "a UNIX connect is done at once");
                    held.push(stream);
                }
                Err(error) => break error,
            }
            assert!(held.len() < 16, "a backlog of 0 fills within a few connections");
        };
        assert!(matches!(busy, ConnectError::Busy), "{busy:?}");
        assert!(listener.accept().is_ok(), "queued connections are real");

        drop(listener);
        assert!(matches!(connect(&address), Err(ConnectError::Absent(_))), "a socket file nobody listens on");
    }

    #[test]
    fn a_tcp_connect_finishes_or_is_refused_later() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = UpstreamAddress::Tcp(listener.local_addr().unwrap());
        let writable = |stream: &mut UpstreamStream| {
            let mut poll = mio::Poll::new().unwrap();
            poll.registry().register(stream, Token(1), Interest::WRITABLE).unwrap();
            let mut events = mio::Events::with_capacity(4);
            poll.poll(&mut events, Some(std::time::Duration::from_secs(5))).unwrap();
            assert!(!events.is_empty(), "the connect completes, one way or the other");
        };
        let (mut stream, pending) = connect(&address).unwrap();
        assert!(pending);
        writable(&mut stream);
        assert!(matches!(stream.finished(), Ok(true)), "connected");
        let refused = UpstreamAddress::Tcp(listener.local_addr().unwrap());
        drop(listener);
        let (mut stream, _) = connect(&refused).unwrap();
        writable(&mut stream);
        let outcome = stream.finished();
        assert!(matches!(outcome, Err(ConnectError::Absent(_))), "{outcome:?}");
    }

    #[test]
    fn a_connect_still_in_progress_is_never_taken_for_done() {
        // TEST-NET-1 (RFC 5737): nothing answers there, so the connect stays
        // pending (or fails at once where there is no route).
        let address = UpstreamAddress::Tcp(([192, 0, 2, 1], 9).into());
        let Ok((stream, _)) = connect(&address) else { return };
        let outcome = stream.finished();
        assert!(!matches!(outcome, Ok(true)), "a connect nobody answered is not done: {outcome:?}");
    }
}
