//! The preamble the front writes ahead of each request it hands to a worker:
//! a PROXY protocol v2 header (the convention HAProxy and nginx speak)
//! carrying the client's address, and a TLV with the master's secret, so a
//! worker serves only connections that came from its own front.
//!
//! Every preamble has the same length (a NOOP TLV pads the shorter address
//! families), so a worker knows where the request starts in what it reads.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::net::client_address::ClientAddress;

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const VERSION_2_PROXY: u8 = 0x21;
const FAMILY_UNSPEC: u8 = 0x00;
const FAMILY_TCP4: u8 = 0x11;
const FAMILY_TCP6: u8 = 0x21;
const TLV_NOOP: u8 = 0x04;
/// The first type the specification leaves to applications.
const TLV_SECRET: u8 = 0xE0;
pub const SECRET_LEN: usize = 16;

const FIXED_LEN: usize = 16;
const TCP4_LEN: usize = 12;
const TCP6_LEN: usize = 36;
const TLV_HEAD_LEN: usize = 3;
const SECRET_TLV_LEN: usize = TLV_HEAD_LEN + SECRET_LEN;
/// The largest address block (IPv6) and the secret; the others are padded to it.
pub const PREAMBLE_LEN: usize = FIXED_LEN + TCP6_LEN + SECRET_TLV_LEN;

pub type Secret = [u8; SECRET_LEN];

/// How long a worker waits for the preamble of a connection it accepted.
/// The front writes it together with the request right after connecting
/// (a remote front's comes with the handshake's last packet), so only a
/// stranger, or a front that died in between, makes a worker wait this
/// long: a worker held for it serves no one. Measured on 2 loaded cores
/// (64 fast clients and 500 slowloris, 326,000 requests): 0.8% of
/// accepts found the preamble not there yet, and waited 1.5 ms at the
/// 99th percentile of those and 50 ms at most; this is five times that.
pub const WORKER_PATIENCE: Duration = Duration::from_millis(250);

/// The same for a front on another host (a proxy_protocol listener): its
/// preamble comes right behind the handshake, but one lost segment costs
/// Linux's least retransmission timeout (200 ms) plus a round trip.
pub const REMOTE_FRONT_PATIENCE: Duration = Duration::from_secs(1);

/// The preamble for `client`, with the master's `secret` for its own
/// workers, or without (padding in its place) for a remote listener.
/// Destination addresses are left zero: Unicorn takes the server's name
/// and port from the Host header.
pub fn encode(client: &ClientAddress, secret: Option<&Secret>) -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    out[..12].copy_from_slice(&SIGNATURE);
    out[12] = VERSION_2_PROXY;
    out[14..16].copy_from_slice(&((PREAMBLE_LEN - FIXED_LEN) as u16).to_be_bytes());
    let addresses = &mut out[FIXED_LEN..];
    let address_len = match client {
        ClientAddress::Ip(SocketAddr::V4(v4)) => {
            addresses[..4].copy_from_slice(&v4.ip().octets());
            addresses[8..10].copy_from_slice(&v4.port().to_be_bytes());
            TCP4_LEN
        }
        ClientAddress::Ip(SocketAddr::V6(v6)) => {
            addresses[..16].copy_from_slice(&v6.ip().octets());
            addresses[32..34].copy_from_slice(&v6.port().to_be_bytes());
            TCP6_LEN
        }
        ClientAddress::Local => 0,
    };
    out[13] = match client {
        ClientAddress::Ip(SocketAddr::V4(_)) => FAMILY_TCP4,
        ClientAddress::Ip(SocketAddr::V6(_)) => FAMILY_TCP6,
        ClientAddress::Local => FAMILY_UNSPEC,
    };
    let mut at = FIXED_LEN + address_len;
    if let Some(secret) = secret {
        out[at] = TLV_SECRET;
        out[at + 1..at + 3].copy_from_slice(&(SECRET_LEN as u16).to_be_bytes());
        out[at + 3..at + SECRET_TLV_LEN].copy_from_slice(secret);
        at += SECRET_TLV_LEN;
    }
    if at < PREAMBLE_LEN {
        let padding = PREAMBLE_LEN - at - TLV_HEAD_LEN;
        out[at] = TLV_NOOP;
        out[at + 1..at + 3].copy_from_slice(&(padding as u16).to_be_bytes());
    }
    out
}

/// Why a preamble was refused; a worker drops such a connection unanswered.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotProxyV2,
    Malformed,
    WrongSecret,
    /// The peer closed or sent too little within the time allowed.
    Incomplete,
    /// The peer closed without sending a byte: a front checking that the
    /// host is there, not a request.
    Probe,
}

impl Refusal {
    pub fn describe(&self) -> &'static str {
        match self {
            Refusal::NotProxyV2 => "no PROXY protocol v2 preamble",
            Refusal::Malformed => "a malformed PROXY preamble",
            Refusal::WrongSecret => "a preamble without this master's secret",
            Refusal::Incomplete => "an incomplete preamble",
            Refusal::Probe => "a connection closed before sending a byte",
        }
    }
}

/// Checks a whole preamble and returns the client it names; with `secret`,
/// only a preamble that carries it passes.
pub fn decode(bytes: &[u8; PREAMBLE_LEN], secret: Option<&Secret>) -> Result<ClientAddress, Refusal> {
    if bytes[..12] != SIGNATURE || bytes[12] != VERSION_2_PROXY {
        return Err(Refusal::NotProxyV2);
    }
    if usize::from(u16::from_be_bytes([bytes[14], bytes[15]])) != PREAMBLE_LEN - FIXED_LEN {
        return Err(Refusal::Malformed);
    }
    let rest = &bytes[FIXED_LEN..];
    let (client, tlvs) = match bytes[13] {
        FAMILY_TCP4 => {
            let ip = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            let port = u16::from_be_bytes([rest[8], rest[9]]);
            (ClientAddress::Ip(SocketAddr::new(IpAddr::V4(ip), port)), &rest[TCP4_LEN..])
        }
        FAMILY_TCP6 => {
            let octets: [u8; 16] = rest[..16].try_into().map_err(|_| Refusal::Malformed)?;
            let port = u16::from_be_bytes([rest[32], rest[33]]);
            (ClientAddress::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port)), &rest[TCP6_LEN..])
        }
        FAMILY_UNSPEC => (ClientAddress::Local, rest),
        _ => return Err(Refusal::Malformed),
    };
    let found = secret_in(tlvs)?;
    match secret {
        Some(secret) if !found.is_some_and(|found| same_secret(found, secret)) => Err(Refusal::WrongSecret),
        _ => Ok(client),
    }
}

/// The secret TLV's value, walking the TLVs that must fill `tlvs` exactly.
fn secret_in(mut tlvs: &[u8]) -> Result<Option<&[u8]>, Refusal> {
    let mut found = None;
    while !tlvs.is_empty() {
        let [kind, high, low, ..] = *tlvs else { return Err(Refusal::Malformed) };
        let end = TLV_HEAD_LEN + usize::from(u16::from_be_bytes([high, low]));
        let value = tlvs.get(TLV_HEAD_LEN..end).ok_or(Refusal::Malformed)?;
        if kind == TLV_SECRET {
            found = Some(value);
        }
        tlvs = &tlvs[end..];
    }
    Ok(found)
}

/// Compares in time that does not depend on where the bytes differ.
fn same_secret(found: &[u8], secret: &Secret) -> bool {
    found.len() == secret.len() && found.iter().zip(secret).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Reads the preamble of a freshly accepted socket into the start of
/// `buffer` (at least `PREAMBLE_LEN` long) and, in the same reads, whatever
/// of the request has arrived, up to the buffer's end: the front sends both
/// at once, so one read usually takes the preamble and the whole head, and
/// the worker saves the read Unicorn would make next. Returns the client
/// and how many request bytes follow the preamble in `buffer`. Waits at
/// most `patience` for a preamble that is late (only a stranger's, or a
/// front's that died in between, is). Every read is non-blocking, whatever
/// the socket's own mode.
pub fn read(
    socket: BorrowedFd,
    secret: Option<&Secret>,
    patience: Duration,
    buffer: &mut [u8],
) -> io::Result<Result<(ClientAddress, usize), Refusal>> {
    assert!(buffer.len() >= PREAMBLE_LEN, "a buffer too small for the preamble");
    let deadline = Instant::now() + patience;
    let mut got = 0;
    while got < PREAMBLE_LEN {
        let free = &mut buffer[got..];
        // SAFETY: the pointer and length describe the writable tail of `buffer`.
        let n = unsafe { libc::recv(socket.as_raw_fd(), free.as_mut_ptr().cast(), free.len(), libc::MSG_DONTWAIT) };
        if n > 0 {
            got += n as usize;
            // A stranger that sends a request instead is dropped at once.
            let known = got.min(SIGNATURE.len());
            if buffer[..known] != SIGNATURE[..known] {
                return Ok(Err(Refusal::NotProxyV2));
            }
            continue;
        }
        if n == 0 {
            return Ok(Err(if got == 0 { Refusal::Probe } else { Refusal::Incomplete }));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Err(Refusal::Incomplete));
                }
                wait_readable(socket, left)?;
            }
            _ if crate::net::socket_io::is_peer_gone(&error) => return Ok(Err(Refusal::Incomplete)),
            _ => return Err(error),
        }
    }
    let preamble: &[u8; PREAMBLE_LEN] = buffer[..PREAMBLE_LEN].try_into().expect("checked above");
    Ok(decode(preamble, secret).map(|client| (client, got - PREAMBLE_LEN)))
}

/// Waits until `socket` is readable or `patience` (rounded up to a
/// millisecond) has passed; the caller's next read tells which.
fn wait_readable(socket: BorrowedFd, patience: Duration) -> io::Result<()> {
    let mut poll_fd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let millis = patience.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut poll_fd, 1, millis) } < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    const SECRET: Secret = *b"0123456789abcdef";

    fn clients() -> [ClientAddress; 4] {
        [
            ClientAddress::Ip("203.0.113.7:51234".parse().unwrap()),
            ClientAddress::Ip("[2001:db8::1]:443".parse().unwrap()),
            ClientAddress::Ip("[::1]:1".parse().unwrap()),
            ClientAddress::Local,
        ]
    }

    #[test]
    fn every_family_round_trips_at_the_same_length() {
        for client in clients() {
            let bytes = encode(&client, Some(&SECRET));
            assert_eq!(decode(&bytes, Some(&SECRET)), Ok(client));
        }
    }

    #[test]
    fn a_wrong_or_missing_secret_is_refused() {
        let bytes = encode(&clients()[0], Some(&SECRET));
        assert_eq!(decode(&bytes, Some(b"0123456789abcdeX")), Err(Refusal::WrongSecret));
        let mut no_secret = bytes;
        no_secret[FIXED_LEN + TCP4_LEN] = TLV_NOOP;
        assert_eq!(decode(&no_secret, Some(&SECRET)), Err(Refusal::WrongSecret));
    }

    #[test]
    fn a_preamble_for_a_remote_listener_carries_the_address_and_no_secret() {
        for client in clients() {
            let bytes = encode(&client, None);
            assert_eq!(decode(&bytes, None), Ok(client), "read without a secret");
            assert_eq!(decode(&bytes, Some(&SECRET)), Err(Refusal::WrongSecret), "but never as the workers' own");
            assert!(!bytes.windows(SECRET.len()).any(|window| window == SECRET));
        }
    }

    #[test]
    fn what_is_not_our_preamble_is_refused() {
        let mut request = [b' '; PREAMBLE_LEN];
        request[..16].copy_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(decode(&request, Some(&SECRET)), Err(Refusal::NotProxyV2));

        let mut bad_family = encode(&clients()[0], Some(&SECRET));
        bad_family[13] = 0x31;
        assert_eq!(decode(&bad_family, Some(&SECRET)), Err(Refusal::Malformed));

        let mut overlong_tlv = encode(&clients()[0], Some(&SECRET));
        overlong_tlv[FIXED_LEN + TCP4_LEN + 2] = 200;
        assert_eq!(decode(&overlong_tlv, Some(&SECRET)), Err(Refusal::Malformed));
    }

    #[test]
    fn haproxy_style_headers_are_read_as_the_spec_says() {
        // Built by hand from the specification's layout, not by encode().
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\n\x21\x11");
        bytes.extend_from_slice(&55u16.to_be_bytes());
        bytes.extend_from_slice(&[192, 0, 2, 1, 10, 0, 0, 1, 0x1F, 0x90, 0, 80]);
        bytes.extend_from_slice(&[TLV_SECRET, 0, 16]);
        bytes.extend_from_slice(&SECRET);
        bytes.extend_from_slice(&[TLV_NOOP, 0, 21]);
        bytes.resize(PREAMBLE_LEN, 0);
        let bytes: [u8; PREAMBLE_LEN] = bytes.try_into().unwrap();
        assert_eq!(decode(&bytes, Some(&SECRET)), Ok(ClientAddress::Ip("192.0.2.1:8080".parse().unwrap())));
    }

    /// `read` with a buffer of `size`; the client and the request bytes read.
    fn read_sized(worker: &UnixStream, patience: Duration, size: usize) -> Result<(ClientAddress, Vec<u8>), Refusal> {
        let mut buffer = vec![0u8; size];
        let outcome = read(worker.as_fd(), Some(&SECRET), patience, &mut buffer).unwrap();
        outcome.map(|(client, length)| (client, buffer[PREAMBLE_LEN..PREAMBLE_LEN + length].to_vec()))
    }

    fn read_one(worker: &UnixStream, patience: Duration) -> Result<ClientAddress, Refusal> {
        read_sized(worker, patience, PREAMBLE_LEN).map(|(client, _)| client)
    }

    #[test]
    fn read_takes_the_preamble_and_as_much_of_the_request_as_fits() {
        let (mut front, worker) = UnixStream::pair().unwrap();
        front.write_all(&encode(&clients()[1], Some(&SECRET))).unwrap();
        front.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let (client, request) = read_sized(&worker, Duration::from_secs(1), PREAMBLE_LEN + 4).unwrap();
        assert_eq!((client, &request[..]), (clients()[1], &b"GET "[..]));
        let mut rest = [0u8; 14];
        std::io::Read::read_exact(&mut &worker, &mut rest).unwrap();
        assert_eq!(&rest, b"/ HTTP/1.1\r\n\r\n", "the rest stays in the socket");

        front.write_all(&encode(&clients()[0], Some(&SECRET))).unwrap();
        front.write_all(b"GET /all HTTP/1.1\r\n\r\n").unwrap();
        let (client, request) = read_sized(&worker, Duration::from_secs(1), 16 * 1024).unwrap();
        assert_eq!((client, &request[..]), (clients()[0], &b"GET /all HTTP/1.1\r\n\r\n"[..]));
    }

    #[test]
    fn read_waits_for_a_late_preamble_but_not_forever() {
        let (mut front, worker) = UnixStream::pair().unwrap();
        let bytes = encode(&clients()[0], Some(&SECRET));
        let writer = std::thread::spawn(move || {
            front.write_all(&bytes[..10]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            front.write_all(&bytes[10..]).unwrap();
            front
        });
        assert_eq!(read_one(&worker, Duration::from_secs(5)), Ok(clients()[0]));
        let _front = writer.join().unwrap();

        let (_silent, worker) = UnixStream::pair().unwrap();
        let started = Instant::now();
        assert_eq!(read_one(&worker, Duration::from_millis(100)), Err(Refusal::Incomplete));
        assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());

        let (closed, worker) = UnixStream::pair().unwrap();
        drop(closed);
        assert_eq!(read_one(&worker, Duration::from_secs(5)), Err(Refusal::Probe), "closed before a byte");

        let (mut half, worker) = UnixStream::pair().unwrap();
        half.write_all(&encode(&clients()[0], Some(&SECRET))[..10]).unwrap();
        drop(half);
        assert_eq!(read_one(&worker, Duration::from_secs(5)), Err(Refusal::Incomplete), "closed mid-preamble");
    }

    #[test]
    fn a_short_request_instead_of_a_preamble_is_refused_without_waiting() {
        let (mut stranger, worker) = UnixStream::pair().unwrap();
        stranger.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let started = Instant::now();
        assert_eq!(read_one(&worker, Duration::from_secs(5)), Err(Refusal::NotProxyV2));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
