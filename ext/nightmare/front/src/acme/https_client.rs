//! Just enough HTTPS client for an ACME issuer: one request per connection,
//! blocking, bounded in time and size. The ACME thread makes a handful of
//! requests per certificate, so neither keep-alive nor an async runtime
//! would pay for itself.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::http::chunked::ChunkedDecoder;

/// Directory, orders and certificate chains are a few KiB; anything far
/// larger is not an ACME server's answer.
const MAX_RESPONSE: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(20);
/// A whole exchange, however the issuer paces its bytes.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(60);

pub struct HttpsClient {
    config: Arc<ClientConfig>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

impl HttpsClient {
    /// Trusts `ca_file` alone when given (a private issuer), else
    /// Mozilla's roots, which need no CA bundle on the machine.
    pub fn new(ca_file: Option<&Path>) -> Result<HttpsClient, String> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certificates = CertificateDer::pem_file_iter(path)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                    .map_err(|error| format!("ca_file {} cannot be read as PEM: {error}", path.display()))?;
                let (added, _) = roots.add_parsable_certificates(certificates);
                if added == 0 {
                    return Err(format!("ca_file {} holds no usable certificate", path.display()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let config = ClientConfig::builder_with_provider(crate::net::tls::provider::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpsClient { config: Arc::new(config) })
    }

    pub fn get(&self, url: &str) -> Result<Response, String> {
        self.request("GET", url, None)
    }

    pub fn head(&self, url: &str) -> Result<Response, String> {
        self.request("HEAD", url, None)
    }

    /// ACME's POSTs are all JWS.
    pub fn post(&self, url: &str, body: &[u8]) -> Result<Response, String> {
        self.request("POST", url, Some(body))
    }

    fn request(&self, method: &str, url: &str, body: Option<&[u8]>) -> Result<Response, String> {
        let target = Target::parse(url)?;
        let mut stream = self.connect(&target).map_err(|error| format!("{url}: {error}"))?;
        let mut request = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nightmare/{}\r\nAccept: */*\r\nConnection: close\r\n",
            target.path,
            target.authority,
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes();
        if let Some(body) = body {
            request
                .extend(format!("Content-Type: application/jose+json\r\nContent-Length: {}\r\n", body.len()).bytes());
        }
        request.extend(b"\r\n");
        request.extend(body.unwrap_or_default());
        stream.write_all(&request).and_then(|()| stream.flush()).map_err(|error| format!("{url}: {error}"))?;
        read_response(&mut stream, method == "HEAD").map_err(|error| format!("{url}: {error}"))
    }

    fn connect(&self, target: &Target) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", target.host));
        let addresses = (target.host.as_str(), target.port).to_socket_addrs()?;
        for address in addresses {
            match TcpStream::connect_timeout(&address, TIMEOUT) {
                Ok(socket) => {
                    // The handshake's last flight and the request are two
                    // writes: with Nagle, the request would wait out the
                    // issuer's delayed ACK (40 ms a request on loopback).
                    socket.set_nodelay(true)?;
                    socket.set_read_timeout(Some(TIMEOUT))?;
                    socket.set_write_timeout(Some(TIMEOUT))?;
                    let name = ServerName::try_from(target.host.clone())
                        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
                    let session = ClientConnection::new(Arc::clone(&self.config), name).map_err(io::Error::other)?;
                    return Ok(StreamOwned::new(session, socket));
                }
                Err(error) => last = error,
            }
        }
        Err(last)
    }
}

/// An `https://host[:port]/path` URL, split.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    /// As the Host header says it.
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let rest = url.strip_prefix("https://").ok_or_else(|| format!("{url} is not an https:// URL"))?;
        let (authority, path) = rest.find(['/', '?']).map_or((rest, "/"), |at| rest.split_at(at));
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| format!("{url} has a bad port"))?)
            }
            _ => (authority, 443),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(format!("{url} has no usable host"));
        }
        Ok(Target { host: host.to_owned(), port, authority: authority.to_owned(), path })
    }
}

fn read_response(stream: &mut impl Read, head_only: bool) -> io::Result<Response> {
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if started.elapsed() > EXCHANGE_DEADLINE {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no whole response within 60 s"));
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // A server that closes without close_notify after a whole response.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(error) => return Err(error),
        };
        received.extend_from_slice(&chunk[..n]);
        if received.len() > MAX_RESPONSE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response larger than 1 MiB"));
        }
        if let Some((response, used)) = complete_response(&received, head_only, n == 0)? {
            if (100..200).contains(&response.status) {
                // An interim response: the final one follows.
                received.drain(..used);
                continue;
            }
            return Ok(response);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed before a whole response"));
        }
    }
}

/// The response at the start of `received` and the bytes it took, once it
/// is whole; `closed` says no more bytes will come.
fn complete_response(received: &[u8], head_only: bool, closed: bool) -> io::Result<Option<(Response, usize)>> {
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidData, message);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_length = match parsed.parse(received).map_err(|error| invalid(format!("bad response head: {error}")))? {
        httparse::Status::Complete(length) => length,
        httparse::Status::Partial => return Ok(None),
    };
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|header| (header.name.to_owned(), String::from_utf8_lossy(header.value).trim().to_owned()))
        .collect();
    let mut response = Response { status, headers, body: Vec::new() };
    let rest = &received[head_length..];
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some((response, head_length)));
    }
    let chunked = response.header("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut decoder = ChunkedDecoder::new(Some(MAX_RESPONSE as u64));
        let mut at = 0;
        while at < rest.len() && !decoder.is_done() {
            let decoded =
                decoder.decode(&rest[at..]).map_err(|error| invalid(format!("bad chunked body: {error:?}")))?;
            response.body.extend_from_slice(&rest[at..][decoded.data]);
            at += decoded.consumed;
        }
        return Ok(decoder.is_done().then_some((response, head_length + at)));
    }
    match response.header("content-length").map(str::parse::<usize>) {
        Some(Ok(length)) if rest.len() >= length => {
            response.body = rest[..length].to_vec();
            Ok(Some((response, head_length + length)))
        }
        Some(Ok(_)) => Ok(None),
        Some(Err(_)) => Err(invalid("bad Content-Length".to_owned())),
        None if closed => {
            response.body = rest.to_vec();
            Ok(Some((response, received.len())))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        let target = Target::parse("https://acme.example:14000/dir?x=1").unwrap();
        assert_eq!((target.host.as_str(), target.port, target.path.as_str()), ("acme.example", 14000, "/dir?x=1"));
        assert_eq!(target.authority, "acme.example:14000");
        let target = Target::parse("https://[::1]/directory").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("::1", 443));
        assert_eq!(Target::parse("https://a.example").unwrap().path, "/");
        assert!(Target::parse("http://a.example/").is_err(), "ACME is HTTPS only");
        assert!(Target::parse("https://a.example:99999/").is_err());
        assert!(Target::parse("https:///x").is_err());
    }

    #[test]
    fn bodies_by_length_by_chunks_and_to_the_close() {
        let whole =
            |bytes: &[u8], closed| complete_response(bytes, false, closed).unwrap().map(|(response, _)| response);
        let sized = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nLocation: /o/1\r\n\r\nhello";
        assert!(whole(&sized[..sized.len() - 1], false).is_none(), "one byte short");
        let response = whole(sized, false).unwrap();
        assert_eq!((response.status, response.body.as_slice()), (201, &b"hello"[..]));
        assert_eq!(response.header("location"), Some("/o/1"));

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert!(whole(&chunked[..chunked.len() - 3], false).is_none());
        assert_eq!(whole(chunked, false).unwrap().body, b"abcde");

        let until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert!(whole(until_close, false).is_none());
        assert_eq!(whole(until_close, true).unwrap().body, b"all of it");

        let head = complete_response(b"HTTP/1.1 200 OK\r\nReplay-Nonce: abc\r\nContent-Length: 9\r\n\r\n", true, false);
        assert_eq!(head.unwrap().unwrap().0.header("replay-nonce"), Some("abc"));
        assert!(complete_response(b"junk\r\n\r\n", false, false).is_err());
    }

    #[test]
    fn an_interim_response_is_passed_over() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
        let response = read_response(&mut bytes.as_slice(), false).unwrap();
        assert_eq!((response.status, response.body.as_slice()), (200, &b"ok"[..]));
    }
}
