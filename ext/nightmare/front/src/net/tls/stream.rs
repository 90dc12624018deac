//! A client's TLS session beside its TCP socket, read and written like a
//! plain socket: `read` gives plaintext (or `WouldBlock` once the socket is
//! drained), `write` takes plaintext. What rustls has encrypted but the
//! socket has not taken yet stays in rustls and leaves on the next write,
//! or on `flush_pending` when the socket says it is writable again, so the
//! connection's state machine works on plaintext and never waits for an
//! edge that will not come: `WouldBlock` is only returned after the socket
//! itself said so.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speech {
    /// Nothing read yet.
    Unknown,
    Tls,
    /// The client sent plain HTTP to the TLS port: bytes pass as they are,
    /// so that it can be told so in words it reads (nginx's 497 page).
    PlainHttp,
}

pub struct TlsStream {
    socket: TcpStream,
    session: ServerConnection,
    speech: Speech,
    /// A write shutdown waits for the encrypted bytes (and the close_notify)
    /// ahead of it.
    shutdown_pending: bool,
    /// Writing failed for good: nothing pending will ever leave.
    broken: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("speech", &self.speech).field("broken", &self.broken).finish()
    }
}

impl TlsStream {
    pub fn new(socket: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let session = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream { socket, session, speech: Speech::Unknown, shutdown_pending: false, broken: false })
    }

    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// The client spoke plain HTTP to this TLS port.
    pub fn spoke_plain_http(&self) -> bool {
        self.speech == Speech::PlainHttp
    }

    pub fn is_handshaking(&self) -> bool {
        self.speech == Speech::Tls && self.session.is_handshaking()
    }

    /// The client and the front agreed on HTTP/2 (ALPN).
    pub fn negotiated_h2(&self) -> bool {
        self.session.alpn_protocol() == Some(b"h2")
    }

    /// The name the client asked for (SNI), once the handshake has begun.
    pub fn server_name(&self) -> Option<&str> {
        self.session.server_name()
    }

    /// Encrypted bytes wait for the socket.
    pub fn has_pending_output(&self) -> bool {
        !self.broken && (self.session.wants_write() || self.shutdown_pending)
    }

    /// Sends what waits; `WouldBlock` when the socket takes no more.
    pub fn flush_pending(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    if error.kind() != io::ErrorKind::WouldBlock {
                        self.broken = true;
                    }
                    return Err(error);
                }
            }
        }
        if self.shutdown_pending {
            self.shutdown_pending = false;
            self.socket.shutdown(Shutdown::Write)?;
        }
        Ok(())
    }

    /// Ends the sending side: a close_notify, then the TCP shutdown once
    /// everything before it has left.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if self.speech != Speech::Tls || how == Shutdown::Both {
            return self.socket.shutdown(how);
        }
        if how == Shutdown::Write {
            self.session.send_close_notify();
            self.shutdown_pending = true;
            return match self.flush_pending() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
                other => other,
            };
        }
        self.socket.shutdown(how)
    }

    /// Decides from the first byte whether the client speaks TLS at all.
    fn sniff(&mut self) -> io::Result<()> {
        let mut first = [0u8; 1];
        loop {
            return match self.socket.peek(&mut first) {
                Ok(0) => Ok(()), // EOF: the read after says so
                Ok(_) => {
                    self.speech = if first[0] == TLS_HANDSHAKE_RECORD { Speech::Tls } else { Speech::PlainHttp };
                    Ok(())
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => Err(error),
            };
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.speech == Speech::Unknown {
            self.sniff()?;
            if self.speech == Speech::Unknown {
                return self.socket.read(buf);
            }
        }
        if self.speech == Speech::PlainHttp {
            return self.socket.read(buf);
        }
        loop {
            match self.session.reader().read(buf) {
                // 0 after the client's close_notify: a clean end.
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // The TCP connection ended without a close_notify, as many
                // clients end theirs: an end all the same for HTTP, whose
                // own framing tells a cut message from a whole one.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(error) => return Err(error),
            }
            match self.session.read_tls(&mut self.socket) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            if let Err(error) = self.session.process_new_packets() {
                // rustls queued an alert saying why; it goes if it can.
                let _ = self.flush_pending();
                let stage = if self.session.is_handshaking() { "TLS handshake failed" } else { "TLS failed" };
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{stage}: {error}")));
            }
            // Handshake replies and session tickets leave now if they can;
            // otherwise on the socket's next writable edge.
            match self.flush_pending() {
                Err(error) if error.kind() != io::ErrorKind::WouldBlock => return Err(error),
                _ => {}
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.speech == Speech::PlainHttp {
            return self.socket.write(buf);
        }
        // Older bytes first; while the socket cannot take them, take no
        // more plaintext, so memory stays bounded by one write.
        self.flush_pending()?;
        let taken = self.session.writer().write(buf)?;
        match self.flush_pending() {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock => Err(error),
            // What did not leave goes on the next write or writable edge.
            _ => Ok(taken),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::test_certificates::Certificate;
    use crate::net::tls::{TlsSettings, server_config};
    use std::time::{Duration, Instant};

    /// A server-side TlsStream and a blocking rustls client, over loopback.
    fn connected(
        dir: &std::path::Path,
    ) -> (TlsStream, rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>) {
        let certificate = Certificate::make(dir, "server", &["localhost"]);
        let settings = TlsSettings {
            certificates: vec![crate::net::tls::CertificatePair {
                certificate: certificate.chain_path.clone(),
                key: certificate.key_path.clone(),
            }],
            ..TlsSettings::default()
        };
        let config = Arc::new(server_config(&settings, None, &Arc::default()).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client_socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_socket, _) = listener.accept().unwrap();
        server_socket.set_nonblocking(true).unwrap();
        let server = TlsStream::new(TcpStream::from_std(server_socket), config).unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(certificate.client_config(), name).unwrap();
        (server, rustls::StreamOwned::new(session, client_socket))
    }

    /// Reads from the non-blocking server until `wanted` bytes came.
    fn read_all(server: &mut TlsStream, wanted: usize) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < wanted {
            assert!(Instant::now() < deadline, "only {} of {wanted} bytes arrived", got.len());
            match server.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                Err(error) => panic!("read failed: {error}"),
            }
        }
        got
    }

    #[test]
    fn plaintext_passes_both_ways_after_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, mut client) = connected(dir.path());
        let talker = std::thread::spawn(move || {
            client.write_all(b"ping").unwrap();
            let mut answer = [0u8; 4];
            client.read_exact(&mut answer).unwrap();
            answer
        });
        assert_eq!(read_all(&mut server, 4), b"ping");
        assert!(!server.spoke_plain_http());
        assert_eq!(server.server_name(), Some("localhost"));
        assert_eq!(server.write(b"pong").unwrap(), 4);
        while server.has_pending_output() {
            let _ = server.flush_pending();
        }
        assert_eq!(&talker.join().unwrap(), b"pong");
    }

    #[test]
    fn plain_http_on_the_tls_port_is_read_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, client) = connected(dir.path());
        let mut raw = client.sock;
        raw.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert_eq!(read_all(&mut server, 16), b"GET / HTTP/1.1\r\n");
        assert!(server.spoke_plain_http());
        assert_eq!(server.write(b"HTTP/1.1 400").unwrap(), 12, "the answer goes back unencrypted");
        let mut answer = [0u8; 12];
        raw.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 400");
    }

    #[test]
    fn a_full_socket_holds_back_plaintext_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, mut client) = connected(dir.path());
        // The client blocks in its handshake until the server reads.
        let greeter = std::thread::spawn(move || {
            client.write_all(b"go").unwrap();
            client
        });
        assert_eq!(read_all(&mut server, 2), b"go");
        let mut client = greeter.join().unwrap();
        // The client reads nothing yet: writes fill the socket, then stop.
        let piece = [7u8; 16 * 1024];
        let mut accepted = 0usize;
        let blocked = loop {
            match server.write(&piece) {
                Ok(n) => accepted += n,
                Err(error) => break error,
            }
            assert!(accepted < 64 << 20, "the socket never filled");
        };
        assert_eq!(blocked.kind(), io::ErrorKind::WouldBlock);
        assert!(server.has_pending_output(), "what rustls holds waits for the socket");
        let reader = std::thread::spawn(move || {
            let mut received = vec![0u8; accepted];
            client.read_exact(&mut received).unwrap();
            received.iter().all(|&byte| byte == 7)
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.has_pending_output() {
            assert!(Instant::now() < deadline, "pending bytes never left");
            if let Err(error) = server.flush_pending() {
                assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(reader.join().unwrap(), "every accepted byte arrived, in order");
    }
}
