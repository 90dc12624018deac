//! Every read, write and sendfile of the front goes through here, so each
//! syscall outcome is classified once: data, would block, the peer went away
//! (not our fault, not logged as an error), or a real failure.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

/// What the kernel last said about one socket. Sockets are registered
/// edge-triggered; these flags remember the hints until a syscall answers
/// `WouldBlock`, or a read shows the socket drained.
#[derive(Clone, Copy, Debug, Default)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer hung up or the socket failed: no further edge will come,
    /// so reading must go on until it says so itself.
    pub hung_up: bool,
}

impl Readiness {
    pub fn note(&mut self, event: &mio::event::Event) {
        let failed = event.is_error();
        self.hung_up |= event.is_read_closed() || failed;
        self.readable |= event.is_readable() || event.is_read_closed() || failed;
        self.writable |= event.is_writable() || event.is_write_closed() || failed;
    }

    /// A read filled less than it asked for: the socket is drained, and new
    /// bytes will raise a new edge, so the read that would only say
    /// `WouldBlock` is saved (nginx does the same). Not after a hang-up,
    /// whose EOF is still to be read.
    pub fn note_short_read(&mut self, got: usize, asked: usize) {
        if got < asked && !self.hung_up {
            self.readable = false;
        }
    }
}

#[derive(Debug)]
pub enum ReadOutcome {
    Data(usize),
    /// The peer shut down its sending side.
    Eof,
    WouldBlock,
    /// The peer reset the connection or is otherwise unreachable.
    Gone,
    Failed(io::Error),
}

#[derive(Debug)]
pub enum WriteOutcome {
    Wrote(usize),
    WouldBlock,
    Gone,
    Failed(io::Error),
}

/// Errors that mean "the other side is gone", which is the other side's doing.
pub fn is_peer_gone(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNRESET | libc::EPIPE | libc::ENOTCONN | libc::ECONNABORTED | libc::ETIMEDOUT)
    )
}

pub fn read_some(source: &mut impl Read, buf: &mut [u8]) -> ReadOutcome {
    loop {
        return match source.read(buf) {
            Ok(0) => ReadOutcome::Eof,
            Ok(n) => ReadOutcome::Data(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
            Err(e) if is_peer_gone(&e) => ReadOutcome::Gone,
            Err(e) => ReadOutcome::Failed(e),
        };
    }
}

pub fn write_some(sink: &mut impl Write, bytes: &[u8]) -> WriteOutcome {
    loop {
        return match sink.write(bytes) {
            // A socket never accepts zero bytes of a non-empty buffer unless
            // it cannot take more now.
            Ok(0) => WriteOutcome::WouldBlock,
            Ok(n) => WriteOutcome::Wrote(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => WriteOutcome::WouldBlock,
            Err(e) if is_peer_gone(&e) => WriteOutcome::Gone,
            Err(e) => WriteOutcome::Failed(e),
        };
    }
}

/// Files at least this large are sent corked.
const CORK_FROM: usize = 64 * 1024;

/// Copies up to `count` bytes of `file` from `*offset` to `socket` in the
/// kernel, advancing `offset`.
pub fn send_file(socket: BorrowedFd, file: BorrowedFd, offset: &mut u64, count: u64) -> WriteOutcome {
    // sendfile moves at most 0x7ffff000 bytes per call anyway.
    let count = count.min(0x7fff_f000) as usize;
    loop {
        let mut kernel_offset = *offset as libc::off_t;
        // sendfile pushes what it has each time it refills its 64 KiB pipe,
        // which the MSS does not divide (65483 on loopback): a full segment
        // and a small one, every 64 KiB. A 100 MiB file went 30% slower
        // than nginx's, which corks (tcp_nopush). Corked, only full
        // segments leave until the cork comes off with the tail.
        let corked = count >= CORK_FROM && set_cork(socket, true);
        // SAFETY: both descriptors are open for the duration of the call and
        // kernel_offset is a valid, exclusively borrowed off_t.
        let sent = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut kernel_offset, count) };
        let failure = (sent < 0).then(io::Error::last_os_error);
        if corked {
            set_cork(socket, false);
        }
        if sent > 0 {
            *offset = kernel_offset as u64;
            return WriteOutcome::Wrote(sent as usize);
        }
        if sent == 0 {
            // The file ended before `count` bytes: the caller's idea of its
            // length is wrong, and waiting for writability would wait forever.
            return WriteOutcome::Failed(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than expected"));
        }
        let error = failure.unwrap_or_else(io::Error::last_os_error);
        return match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => WriteOutcome::WouldBlock,
            _ if is_peer_gone(&error) => WriteOutcome::Gone,
            _ => WriteOutcome::Failed(error),
        };
    }
}

/// TCP_CORK on or off; false when the socket is not TCP (a UNIX client).
fn set_cork(socket: BorrowedFd, on: bool) -> bool {
    let value = libc::c_int::from(on);
    // SAFETY: TCP_CORK takes one int, given by pointer with its length.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    done == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;

    #[test]
    fn a_short_read_drains_the_hint_unless_the_peer_hung_up() {
        let mut ready = Readiness { readable: true, writable: true, hung_up: false };
        ready.note_short_read(100, 100);
        assert!(ready.readable, "a full read may leave more behind");
        ready.note_short_read(10, 100);
        assert!(!ready.readable);
        let mut ending = Readiness { readable: true, writable: true, hung_up: true };
        ending.note_short_read(10, 100);
        assert!(ending.readable, "the EOF after the data must still be read");
    }
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn read_classifies_data_would_block_and_eof() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut buf = [0; 16];
        assert!(matches!(read_some(&mut a, &mut buf), ReadOutcome::WouldBlock));
        b.write_all(b"hi").unwrap();
        assert!(matches!(read_some(&mut a, &mut buf), ReadOutcome::Data(2)));
        drop(b);
        assert!(matches!(read_some(&mut a, &mut buf), ReadOutcome::Eof));
    }

    #[test]
    fn write_to_a_closed_peer_is_gone() {
        let (mut a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert!(matches!(write_some(&mut a, b"x"), WriteOutcome::Gone));
    }

    #[test]
    fn send_file_copies_from_the_offset() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        file.rewind().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut offset = 3;
        assert!(matches!(send_file(a.as_fd(), file.as_fd(), &mut offset, 5), WriteOutcome::Wrote(5)));
        assert_eq!(offset, 8);
        let mut got = [0; 5];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"34567");
    }

    #[test]
    fn a_large_file_goes_corked_and_the_cork_comes_off_with_every_byte_sent() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&payload).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let reader = std::thread::spawn(move || {
            let mut client = client;
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        let mut offset = 0;
        while offset < payload.len() as u64 {
            let left = payload.len() as u64 - offset;
            match send_file(server.as_fd(), file.as_fd(), &mut offset, left) {
                WriteOutcome::Wrote(_) | WriteOutcome::WouldBlock => {}
                other => panic!("{other:?}"),
            }
        }
        let mut corked: libc::c_int = 1;
        let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: TCP_CORK is one int; both pointers are valid for the call.
        let done = unsafe {
            libc::getsockopt(
                server.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&raw mut corked).cast(),
                &raw mut length,
            )
        };
        assert_eq!((done, corked), (0, 0), "no cork left on");
        drop(server);
        assert_eq!(reader.join().unwrap(), payload, "every byte, in order");
    }
}
