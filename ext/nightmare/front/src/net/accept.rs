//! A worker's accept, for the listeners the gem stands between Unicorn and
//! (the workers' private socket, proxy_protocol listeners): one connection
//! off the listener, without blocking, and the peer's IP address for a TCP
//! one. Done here rather than by the listener's Ruby class, which differs
//! between Unicorns (kgio's servers, or plain `::Socket`s since Unicorn
//! dropped kgio), so the gem hands every Unicorn the same client.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The next connection on `listener` and, for TCP, its peer's address
/// (IPv4 clients of a dual-stack listener as IPv4); `None` when none is
/// waiting (another worker took it) or it was gone before it could be
/// taken. The descriptor is close-on-exec; Ruby sets the blocking mode it
/// wants when it wraps it.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<(OwnedFd, Option<IpAddr>)>> {
    loop {
        let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: the address buffer is a sockaddr_storage of the length given.
        let fd =
            unsafe { libc::accept4(listener.as_raw_fd(), (&raw mut address).cast(), &mut length, libc::SOCK_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            let socket = unsafe { OwnedFd::from_raw_fd(fd) };
            return Ok(Some((socket, peer_ip(&address))));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN | libc::ECONNABORTED | libc::EPROTO) => return Ok(None),
            _ => return Err(error),
        }
    }
}

fn peer_ip(address: &libc::sockaddr_storage) -> Option<IpAddr> {
    match libc::c_int::from(address.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4 = unsafe { &*(address as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6 = unsafe { &*(address as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(Ipv6Addr::from(v6.sin6_addr.s6_addr).to_canonical())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn takes_a_waiting_connection_with_its_address_and_none_when_nothing_waits() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        assert!(accept(listener.as_fd()).unwrap().is_none(), "nothing waits");
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, peer) = accept(listener.as_fd()).unwrap().expect("a connection");
        assert_eq!(peer, Some(IpAddr::from([127, 0, 0, 1])));
        let flags = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec");
    }

    #[test]
    fn a_unix_connection_has_no_ip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (_, peer) = accept(listener.as_fd()).unwrap().expect("a connection");
        assert_eq!(peer, None);
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_ipv4() {
        let Ok(listener) = std::net::TcpListener::bind("[::]:0") else { return };
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_, peer) = accept(listener.as_fd()).unwrap().expect("a connection");
        assert_eq!(peer, Some(IpAddr::from([127, 0, 0, 1])));
    }
}
