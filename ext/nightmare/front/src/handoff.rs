//! The channel between the front and the workers: a `SOCK_SEQPACKET` socket
//! pair made by the master. For each buffered request the front makes a
//! fresh stream socket pair and sends one end over the channel with
//! `SCM_RIGHTS`, plus a small record of what the worker cannot see for itself.
//! Each `recvmsg` takes exactly one message, so idle workers share the channel
//! the way they would share a listener, and a busy worker takes nothing.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

const RECORD_VERSION: u8 = 1;
/// Version, scheme, arrival time, then the address: far below this.
const MAX_RECORD: usize = 256;

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

/// What travels with the worker's socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffRecord {
    /// The client's IP address as text, "127.0.0.1" for UNIX socket clients
    /// (what Unicorn itself reports for them).
    pub client_addr: String,
    pub scheme: Scheme,
    /// When the request was complete in the front, in microseconds since the epoch.
    pub arrived_usec: u64,
}

impl HandoffRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.client_addr.len());
        out.push(RECORD_VERSION);
        out.push(match self.scheme {
            Scheme::Http => 0,
            Scheme::Https => 1,
        });
        out.extend_from_slice(&self.arrived_usec.to_le_bytes());
        out.extend_from_slice(self.client_addr.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<HandoffRecord> {
        let (&[version, scheme], rest) = bytes.split_first_chunk::<2>()?;
        if version != RECORD_VERSION {
            return None;
        }
        let scheme = match scheme {
            0 => Scheme::Http,
            1 => Scheme::Https,
            _ => return None,
        };
        let (usec, addr) = rest.split_first_chunk::<8>()?;
        Some(HandoffRecord {
            client_addr: String::from_utf8(addr.to_vec()).ok()?,
            scheme,
            arrived_usec: u64::from_le_bytes(*usec),
        })
    }
}

/// The per-request stream pair: (front's end, worker's end). Both are
/// non-blocking and close-on-exec; Unicorn's kgio reads cope with EAGAIN.
pub fn request_socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: fds is a valid array of two ints for socketpair to fill.
    if unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both descriptors are open and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `socket` and `record` as one message. Never blocks: `WouldBlock`
/// means the channel is full and the caller retries later.
pub fn send(channel: BorrowedFd, socket: BorrowedFd, record: &HandoffRecord) -> io::Result<()> {
    let payload = record.encode();
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
    let mut control = ControlBuffer::new();
    let fd_bytes = mem::size_of::<RawFd>() as u32;
    // SAFETY: msghdr is plain data; every pointer set below outlives sendmsg.
    let mut message: libc::msghdr = unsafe { mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.bytes.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: CMSG_SPACE only computes a size.
    message.msg_controllen = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    // SAFETY: the control buffer holds CMSG_SPACE(one fd) bytes, aligned, so
    // the first header and its data fit.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(fd_bytes) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut RawFd, socket.as_raw_fd());
    }
    loop {
        // SAFETY: message points at live buffers set up above.
        let sent = unsafe { libc::sendmsg(channel.as_raw_fd(), &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Takes one request from the channel, or `None` when there is none (another
/// worker was quicker). Never blocks.
pub fn receive(channel: BorrowedFd) -> io::Result<Option<(OwnedFd, HandoffRecord)>> {
    let mut payload = [0u8; MAX_RECORD];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr() as *mut libc::c_void, iov_len: payload.len() };
    let mut control = ControlBuffer::new();
    // SAFETY: msghdr is plain data; every pointer set below outlives recvmsg.
    let mut message: libc::msghdr = unsafe { mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.bytes.as_mut_ptr() as *mut libc::c_void;
    message.msg_controllen = control.bytes.len();
    let received = loop {
        // SAFETY: message points at live buffers set up above.
        let n =
            unsafe { libc::recvmsg(channel.as_raw_fd(), &mut message, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(error),
        }
    };
    let mut sockets = received_descriptors(&message);
    if message.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated handoff message"));
    }
    if received == 0 && sockets.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "handoff channel closed"));
    }
    let record = HandoffRecord::decode(&payload[..received])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed handoff record"))?;
    match (sockets.pop(), sockets.is_empty()) {
        (Some(socket), true) => Ok(Some((socket, record))),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "handoff message without exactly one socket")),
    }
}

/// Takes ownership of every descriptor in the message's SCM_RIGHTS headers,
/// so none leaks whatever else is wrong with the message.
fn received_descriptors(message: &libc::msghdr) -> Vec<OwnedFd> {
    let mut descriptors = Vec::new();
    // SAFETY: the control buffer was filled by recvmsg and msg_controllen
    // says how much of it is valid; the CMSG macros stay within it.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let data_len = (*header).cmsg_len - (data as usize - header as usize);
                let count = data_len / mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned((data as *const RawFd).add(i));
                    descriptors.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(message, header);
        }
    }
    descriptors
}

/// Room for a few descriptors, aligned for cmsghdr: a sender that puts in
/// more than one is caught, not silently truncated.
#[repr(C, align(8))]
struct ControlBuffer {
    bytes: [u8; 64],
}

impl ControlBuffer {
    fn new() -> Self {
        ControlBuffer { bytes: [0; 64] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0 as RawFd; 2];
        let flags = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) }, 0);
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn record() -> HandoffRecord {
        HandoffRecord { client_addr: "2001:db8::7".into(), scheme: Scheme::Https, arrived_usec: 1_700_000_000_123_456 }
    }

    #[test]
    fn record_round_trips_and_rejects_garbage() {
        assert_eq!(HandoffRecord::decode(&record().encode()), Some(record()));
        assert_eq!(HandoffRecord::decode(b""), None);
        assert_eq!(HandoffRecord::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(HandoffRecord::decode(&[1, 7, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn socket_and_record_cross_the_channel() {
        let (front, worker) = seqpacket_pair();
        let (front_end, worker_end) = request_socket_pair().unwrap();
        send(front.as_fd(), worker_end.as_fd(), &record()).unwrap();
        drop(worker_end);

        let (received, got) = receive(worker.as_fd()).unwrap().expect("a message");
        assert_eq!(got, record());
        let mut at_worker = UnixStream::from(received);
        let mut at_front = UnixStream::from(front_end);
        at_front.set_nonblocking(false).unwrap();
        at_worker.set_nonblocking(false).unwrap();
        at_front.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let mut buf = [0; 16];
        at_worker.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn each_receive_takes_one_message() {
        let (front, worker) = seqpacket_pair();
        for port in 0..3 {
            let (_, worker_end) = request_socket_pair().unwrap();
            let record = HandoffRecord { client_addr: format!("10.0.0.{port}"), ..record() };
            send(front.as_fd(), worker_end.as_fd(), &record).unwrap();
        }
        for port in 0..3 {
            let (_, got) = receive(worker.as_fd()).unwrap().unwrap();
            assert_eq!(got.client_addr, format!("10.0.0.{port}"));
        }
        assert!(receive(worker.as_fd()).unwrap().is_none());
    }

    #[test]
    fn message_without_socket_is_refused() {
        let (front, worker) = seqpacket_pair();
        let payload = record().encode();
        let sent = unsafe { libc::send(front.as_raw_fd(), payload.as_ptr() as *const libc::c_void, payload.len(), 0) };
        assert_eq!(sent as usize, payload.len());
        assert_eq!(receive(worker.as_fd()).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
