//! Unicorn's listening sockets as the front sees them (inherited descriptors,
//! TCP or UNIX, plain or TLS), and the client connections they yield.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};

use crate::net::client_address::ClientAddress;
use crate::net::client_stream::ClientStream;
use crate::net::tls::{TlsContext, TlsStream};

/// What a listener's clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug)]
enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

#[derive(Debug)]
pub struct Listener {
    socket: ListenSocket,
    /// Set for the listeners of an `ssl` block: their clients speak TLS.
    tls: Option<Arc<TlsContext>>,
}

impl Listener {
    /// Takes a listening socket passed down by the master.
    pub fn from_inherited(fd: OwnedFd) -> io::Result<Listener> {
        Ok(Listener { socket: ListenSocket::from_inherited(fd)?, tls: None })
    }

    /// Its clients speak TLS, with `context`'s certificates; TCP only.
    pub fn with_tls(self, context: Arc<TlsContext>) -> io::Result<Listener> {
        if let ListenSocket::Unix(_) = self.socket {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS is for TCP listeners only"));
        }
        Ok(Listener { tls: Some(context), ..self })
    }

    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() { Scheme::Https } else { Scheme::Http }
    }

    /// Each loop thread accepts on its own duplicate of the descriptor.
    pub fn duplicate(&self) -> io::Result<Listener> {
        let socket = ListenSocket::from_inherited(self.as_fd().try_clone_to_owned()?)?;
        Ok(Listener { socket, tls: self.tls.clone() })
    }

    /// The next client and its address as the worker will see it.
    pub fn accept(&self) -> io::Result<(ClientStream, ClientAddress)> {
        match &self.socket {
            ListenSocket::Tcp(listener) => {
                let (stream, peer) = listener.accept()?;
                // Responses are relayed as the worker writes them; Nagle
                // would hold back the tail of each one. Failing that is no
                // reason to drop the client.
                let _ = stream.set_nodelay(true);
                // An IPv4 client of a dual-stack listener is reported as IPv4.
                let peer = ClientAddress::Ip(SocketAddr::new(peer.ip().to_canonical(), peer.port()));
                let client = match &self.tls {
                    Some(context) => ClientStream::Tls(Box::new(TlsStream::new(stream, context.current())?)),
                    None => ClientStream::Tcp(stream),
                };
                Ok((client, peer))
            }
            ListenSocket::Unix(listener) => Ok((ClientStream::Unix(listener.accept()?.0), ClientAddress::Local)),
        }
    }

    /// The TCP port it listens on (None for a UNIX socket).
    pub fn port(&self) -> Option<u16> {
        match &self.socket {
            ListenSocket::Tcp(listener) => listener.local_addr().ok().map(|address| address.port()),
            ListenSocket::Unix(_) => None,
        }
    }

    pub fn describe(&self) -> String {
        let name = match &self.socket {
            ListenSocket::Tcp(listener) => listener.local_addr().map(|a| a.to_string()),
            ListenSocket::Unix(listener) => listener.local_addr().map(|a| match a.as_pathname() {
                Some(path) => path.display().to_string(),
                None => "unix socket".into(),
            }),
        };
        name.unwrap_or_else(|_| "unknown".into())
    }
}

impl ListenSocket {
    fn from_inherited(fd: OwnedFd) -> io::Result<ListenSocket> {
        if socket_option(fd.as_fd(), libc::SO_ACCEPTCONN)? == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "descriptor is not a listening socket"));
        }
        match socket_option(fd.as_fd(), libc::SO_DOMAIN)? {
            libc::AF_INET | libc::AF_INET6 => {
                let listener = std::net::TcpListener::from(fd);
                listener.set_nonblocking(true)?;
                Ok(ListenSocket::Tcp(TcpListener::from_std(listener)))
            }
            libc::AF_UNIX => {
                let listener = std::os::unix::net::UnixListener::from(fd);
                listener.set_nonblocking(true)?;
                Ok(ListenSocket::Unix(UnixListener::from_std(listener)))
            }
            domain => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unsupported socket family {domain}"))),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            ListenSocket::Tcp(listener) => listener.as_fd(),
            ListenSocket::Unix(listener) => listener.as_fd(),
        }
    }
}

impl Source for Listener {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match &mut self.socket {
            ListenSocket::Tcp(listener) => listener.register(registry, token, interests),
            ListenSocket::Unix(listener) => listener.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match &mut self.socket {
            ListenSocket::Tcp(listener) => listener.reregister(registry, token, interests),
            ListenSocket::Unix(listener) => listener.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match &mut self.socket {
            ListenSocket::Tcp(listener) => listener.deregister(registry),
            ListenSocket::Unix(listener) => listener.deregister(registry),
        }
    }
}

fn socket_option(fd: BorrowedFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and length are valid for getsockopt to write an int into.
    let result = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut length,
        )
    };
    if result == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_unix_listeners_are_recognised() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = tcp.local_addr().unwrap();
        let listener = Listener::from_inherited(OwnedFd::from(tcp)).unwrap();
        assert_eq!(listener.scheme(), Scheme::Http);
        assert_eq!(listener.describe(), address.to_string());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let listener = Listener::from_inherited(OwnedFd::from(unix)).unwrap();
        assert_eq!(listener.describe(), path.display().to_string());
    }

    #[test]
    fn a_connected_socket_is_not_a_listener() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(Listener::from_inherited(OwnedFd::from(a)).is_err());
    }

    #[test]
    fn accept_reports_the_client_address_and_would_block_when_idle() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = tcp.local_addr().unwrap();
        let listener = Listener::from_inherited(OwnedFd::from(tcp)).unwrap().duplicate().unwrap();
        assert_eq!(listener.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let _client = std::net::TcpStream::connect(address).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.to_string(), "127.0.0.1");
    }
}
