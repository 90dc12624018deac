//! A client's connection as the state machine sees it: a TCP or UNIX
//! socket, a TLS session over TCP, or one stream of an HTTP/2 connection.
//! All read and write plaintext (HTTP/1.1 for a stream, see
//! `http2::stream_end`); what TLS and streams add (bytes rustls holds for
//! the socket, a file that cannot leave by sendfile, no socket at all) is
//! answered here, so callers treat them alike.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use std::os::unix::fs::FileExt;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::http2::stream_end::StreamEnd;
use crate::net::socket_io::{WriteOutcome, send_file, write_some};
use crate::net::tls::TlsStream;

/// How much of a file one write through TLS takes: four records, which
/// rustls sends in one writev (one record per read cost a pread and a
/// writev per 16 KiB).
const TLS_FILE_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub enum ClientStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream>),
    Stream(Box<StreamEnd>),
}

impl ClientStream {
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        match self {
            ClientStream::Tcp(stream) => stream.shutdown(how),
            ClientStream::Unix(stream) => stream.shutdown(how),
            ClientStream::Tls(stream) => stream.shutdown(how),
            ClientStream::Stream(stream) => {
                if how != Shutdown::Read {
                    stream.end_response();
                }
                Ok(())
            }
        }
    }

    /// Ends the connection with a reset, dropping what the kernel still
    /// holds for it: a client cut for reading too slowly (or shed) would
    /// otherwise keep up to megabytes of socket buffers busy while it
    /// dribbles them out (nginx's `reset_timedout_connection`). Disconnecting
    /// the TCP socket (connect to AF_UNSPEC) resets it at once, while this
    /// connection keeps its descriptor until its worker is done.
    pub fn reset(&mut self) {
        let socket = match self {
            ClientStream::Unix(_) => {
                let _ = self.shutdown(Shutdown::Both);
                return;
            }
            ClientStream::Stream(stream) => {
                stream.cancel();
                return;
            }
            ClientStream::Tcp(stream) => stream.as_raw_fd(),
            ClientStream::Tls(stream) => stream.socket().as_raw_fd(),
        };
        let unspecified = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
        // SAFETY: the descriptor is this stream's, open for the call, and
        // the address is a valid sockaddr of the length given.
        unsafe {
            libc::connect(socket, &unspecified, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t);
        }
    }

    /// The TCP socket under the stream, if it is one (plain or TLS).
    pub fn tcp_socket(&self) -> Option<BorrowedFd<'_>> {
        match self {
            ClientStream::Tcp(stream) => Some(stream.as_fd()),
            ClientStream::Tls(stream) => Some(stream.socket().as_fd()),
            ClientStream::Unix(_) | ClientStream::Stream(_) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The client chose HTTP/2 when its TLS session began (ALPN `h2`).
    pub fn negotiated_h2(&self) -> bool {
        matches!(self, ClientStream::Tls(stream) if stream.negotiated_h2())
    }

    /// One stream of an HTTP/2 connection.
    pub fn is_stream(&self) -> bool {
        matches!(self, ClientStream::Stream(_))
    }

    /// Reads may be served from a buffer (TLS decrypts whole records): a
    /// read shorter than asked says nothing about the socket being drained.
    pub fn buffers_reads(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// A client of a TLS port that spoke plain HTTP.
    pub fn spoke_plain_http(&self) -> bool {
        matches!(self, ClientStream::Tls(stream) if stream.spoke_plain_http())
    }

    /// A write that would block now will soon not, with nothing asked of
    /// the client: an HTTP/2 stream whose connection is about to send its
    /// buffer on. A socket's would-block is the client's doing.
    pub fn drains_soon(&self) -> bool {
        matches!(self, ClientStream::Stream(stream) if stream.drains_soon())
    }

    /// Mid-handshake, a failure is the handshake's.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, ClientStream::Tls(stream) if stream.is_handshaking())
    }

    /// Bytes already written that still wait for the socket (TLS only).
    pub fn has_pending_output(&self) -> bool {
        matches!(self, ClientStream::Tls(stream) if stream.has_pending_output())
    }

    pub fn flush_pending(&mut self) -> WriteOutcome {
        let ClientStream::Tls(stream) = self else { return WriteOutcome::Wrote(0) };
        match stream.flush_pending() {
            Ok(()) => WriteOutcome::Wrote(0),
            Err(error) => classify_write_error(error),
        }
    }

    /// Writes bytes that more will follow at once (a head before its
    /// sendfile body): on TCP the kernel holds them back for the body, so
    /// both leave in one segment instead of two (MSG_MORE).
    pub fn write_before_more(&mut self, bytes: &[u8]) -> WriteOutcome {
        let ClientStream::Tcp(stream) = self else { return write_some(self, bytes) };
        loop {
            // SAFETY: bytes is a valid buffer for the length given; the
            // descriptor is the stream's own, open for the call.
            let sent = unsafe {
                libc::send(stream.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_MORE | libc::MSG_NOSIGNAL)
            };
            if sent >= 0 {
                return if sent == 0 && !bytes.is_empty() {
                    WriteOutcome::WouldBlock
                } else {
                    WriteOutcome::Wrote(sent as usize)
                };
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return classify_write_error(error);
            }
        }
    }

    /// Sends up to `count` bytes of `file` from `*offset`, advancing it:
    /// by sendfile on a plain socket, through the session for TLS.
    pub fn send_file(&mut self, file: &File, offset: &mut u64, count: u64) -> WriteOutcome {
        match self {
            ClientStream::Stream(_) => self.copy_file(file, offset, count),
            ClientStream::Tls(stream) if !stream.spoke_plain_http() => {
                // Nothing is read from the file while the socket is full.
                if let Err(error) = stream.flush_pending() {
                    return classify_write_error(error);
                }
                // Exactly what is wanted: zeroing a whole 64 KiB chunk for a
                // 1 KiB stylesheet measured 10% of small-file HTTPS req/s.
                let wanted = count.min(TLS_FILE_CHUNK as u64) as usize;
                let mut chunk = vec![0u8; wanted];
                let read = match file.read_at(&mut chunk, *offset) {
                    Ok(0) => {
                        let error = io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than expected");
                        return WriteOutcome::Failed(error);
                    }
                    Ok(read) => read,
                    Err(error) => return WriteOutcome::Failed(error),
                };
                let outcome = write_some(stream.as_mut(), &chunk[..read]);
                if let WriteOutcome::Wrote(taken) = outcome {
                    *offset += taken as u64;
                }
                outcome
            }
            ClientStream::Tcp(stream) => send_file(stream.as_fd(), file.as_fd(), offset, count),
            ClientStream::Unix(stream) => send_file(stream.as_fd(), file.as_fd(), offset, count),
            ClientStream::Tls(stream) => send_file(stream.socket().as_fd(), file.as_fd(), offset, count),
        }
    }

    /// A file read straight into a stream's buffer: it has no socket.
    fn copy_file(&mut self, file: &File, offset: &mut u64, count: u64) -> WriteOutcome {
        let ClientStream::Stream(stream) = self else { return WriteOutcome::Wrote(0) };
        match stream.send_file(file, offset, count) {
            Ok(written) => WriteOutcome::Wrote(written),
            Err(error) => classify_write_error(error),
        }
    }
}

fn classify_write_error(error: io::Error) -> WriteOutcome {
    match error.kind() {
        io::ErrorKind::WouldBlock => WriteOutcome::WouldBlock,
        _ if crate::net::socket_io::is_peer_gone(&error) => WriteOutcome::Gone,
        io::ErrorKind::BrokenPipe => WriteOutcome::Gone,
        _ => WriteOutcome::Failed(error),
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(stream) => stream.read(buf),
            ClientStream::Unix(stream) => stream.read(buf),
            ClientStream::Tls(stream) => stream.read(buf),
            ClientStream::Stream(stream) => stream.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(stream) => stream.write(buf),
            ClientStream::Unix(stream) => stream.write(buf),
            ClientStream::Tls(stream) => stream.write(buf),
            ClientStream::Stream(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for ClientStream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ClientStream::Tcp(stream) => stream.register(registry, token, interests),
            ClientStream::Unix(stream) => stream.register(registry, token, interests),
            ClientStream::Tls(stream) => stream.socket_mut().register(registry, token, interests),
            // No socket: the stream's connection is woken through its link.
            ClientStream::Stream(_) => Ok(()),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ClientStream::Tcp(stream) => stream.reregister(registry, token, interests),
            ClientStream::Unix(stream) => stream.reregister(registry, token, interests),
            ClientStream::Tls(stream) => stream.socket_mut().reregister(registry, token, interests),
            ClientStream::Stream(_) => Ok(()),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            ClientStream::Tcp(stream) => stream.deregister(registry),
            ClientStream::Unix(stream) => stream.deregister(registry),
            ClientStream::Tls(stream) => stream.socket_mut().deregister(registry),
            ClientStream::Stream(_) => Ok(()),
        }
    }
}
