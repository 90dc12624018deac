//! Keeps what a slow reader leaves in the kernel small, so it waits in the
//! front's temp files instead of kernel memory.
//!
//! Linux grows a socket's send buffer up to `tcp_wmem`'s maximum (4 MiB;
//! on loopback the first one is already megabytes): a client that stops
//! reading leaves that much queued in the kernel. 500 such readers took
//! kernel TCP memory past `tcp_mem`'s pressure mark, where Linux starts
//! refusing memory to every socket, and fresh clients timed out (nginx
//! alike). `TCP_NOTSENT_LOWAT` bounds the bytes queued but not yet sent:
//! the socket takes more only while fewer wait, whatever its buffer's size.
//! Bytes in flight are left alone, so a fast client on a long path keeps
//! its full window and the kernel's buffer sizing.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Lets at most about `bytes` wait unsent in the socket's queue.
pub fn limit_unsent(socket: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: TCP_NOTSENT_LOWAT takes one int, given by pointer with its length.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    /// Bytes a server socket queues for a client that reads nothing.
    fn queued_for_a_stalled_reader(limit: Option<usize>) -> usize {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        if let Some(bytes) = limit {
            limit_unsent(server.as_fd(), bytes).unwrap();
        }
        server.set_nonblocking(true).unwrap();
        let piece = [7u8; 65536];
        let mut written = 0;
        while let Ok(n) = server.write(&piece) {
            written += n;
        }
        let mut queued: libc::c_int = 0;
        assert_eq!(unsafe { libc::ioctl(server.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut queued) }, 0);
        drop(client);
        assert!(written >= queued as usize);
        queued as usize
    }

    #[test]
    fn a_stalled_reader_leaves_no_more_than_the_limit_unsent() {
        let unlimited = queued_for_a_stalled_reader(None);
        let limited = queued_for_a_stalled_reader(Some(128 * 1024));
        assert!(
            limited <= 128 * 1024 + 2 * 65536,
            "{limited} bytes queued with the limit: the limit and a write or two"
        );
        assert!(unlimited > 2 * limited, "{unlimited} bytes queued without it");
    }
}
