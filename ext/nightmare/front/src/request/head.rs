//! Reads and judges a request head: limits while it arrives, httparse once it
//! is whole, then the framing rules that keep requests from being smuggled
//! (RFC 9112 §6). What passes is rebuilt, not copied, for the worker.

use crate::http::error_response::Rejection;

/// Limits on a request head, in the spirit of nginx's
/// `large_client_header_buffers number size`: the request line and each
/// header line must fit in `line_size` bytes, the whole head in
/// `line_count * line_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    pub line_size: usize,
    pub head_size: usize,
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits { line_size: 8 * 1024, head_size: 4 * 8 * 1024, max_headers: 100 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
}

impl HttpVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub version: HttpVersion,
    /// Headers passed on to the worker, in arrival order; framing, hop-by-hop
    /// and forwarding headers are not among them.
    forwarded_headers: Vec<(String, Vec<u8>)>,
    pub framing: BodyFraming,
    pub expects_continue: bool,
    pub keep_alive: bool,
    /// The protocol the client asked to switch to (`Connection: Upgrade`
    /// with `Upgrade: ...`, HTTP/1.1 only).
    pub upgrade: Option<Vec<u8>>,
}

/// What the front vouches for when it passes a request on. The client's
/// address travels in the preamble, not in a header.
pub struct ForwardingFacts<'a> {
    pub https: bool,
    /// The `X-Accel-Mapping` the front offers the app (`sendfile_root`),
    /// with `X-Sendfile-Type: X-Accel-Redirect`.
    pub accel_mapping: Option<&'a str>,
    /// When the request was complete in the front, in microseconds since the epoch.
    pub request_start_usec: u64,
    /// For a server that gets no PROXY preamble: the client's address, in
    /// X-Forwarded-For (the front's own, since client-sent ones are removed).
    pub forwarded_for: Option<crate::net::client_address::ClientAddress>,
}

impl RequestHead {
    pub fn is_head_method(&self) -> bool {
        self.method == "HEAD"
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.forwarded_headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// Appends the head the worker reads to `out`: always `Connection:
    /// close` (Unicorn answers one request per connection), a Content-Length
    /// in place of chunked framing, and only the forwarding headers the
    /// application reads (X-Request-Start, X-Forwarded-Proto for HTTPS),
    /// which the client could not have forged. Every byte counts against
    /// Unicorn's own head limit.
    pub fn write_upstream_head(&self, out: &mut Vec<u8>, body_length: Option<u64>, facts: &ForwardingFacts<'_>) {
        use std::io::Write;
        out.reserve(256 + self.forwarded_headers.len() * 48);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.version.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.forwarded_headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        // Writing into a Vec cannot fail.
        if let Some(length) = body_length {
            let _ = write!(out, "Content-Length: {length}\r\n");
        }
        if let Some(client) = &facts.forwarded_for {
            let _ = write!(out, "X-Forwarded-For: {client}\r\n");
            let scheme: &[u8] = if facts.https { b"https" } else { b"http" };
            out.extend_from_slice(b"X-Forwarded-Proto: ");
            out.extend_from_slice(scheme);
            out.extend_from_slice(b"\r\n");
        } else if facts.https {
            out.extend_from_slice(b"X-Forwarded-Proto: https\r\n");
        }
        let _ = write!(out, "X-Request-Start: t={}\r\n", facts.request_start_usec);
        if let Some(mapping) = facts.accel_mapping {
            // Rack::Sendfile (Rails' send_file) then answers with a path.
            let _ = write!(out, "X-Sendfile-Type: X-Accel-Redirect\r\nX-Accel-Mapping: {mapping}\r\n");
        }
        match &self.upgrade {
            // The worker may switch protocols (rack.hijack); the front then
            // tunnels the connection.
            Some(protocol) => {
                out.extend_from_slice(b"Upgrade: ");
                out.extend_from_slice(protocol);
                out.extend_from_slice(b"\r\nConnection: Upgrade\r\n\r\n");
            }
            None => out.extend_from_slice(b"Connection: close\r\n\r\n"),
        }
    }
}

/// Accumulates a head across reads. Each byte is scanned once, so a client
/// that sends its head a byte at a time costs linear work, not quadratic.
#[derive(Debug)]
pub struct HeadReader {
    buf: Vec<u8>,
    scanned: usize,
    line_start: usize,
    in_request_line: bool,
    end: Option<usize>,
}

impl Default for HeadReader {
    fn default() -> Self {
        HeadReader::with_leftover(Vec::new())
    }
}

impl HeadReader {
    /// Starts with bytes already read past the previous request (pipelining).
    pub fn with_leftover(leftover: Vec<u8>) -> Self {
        HeadReader { buf: leftover, scanned: 0, line_start: 0, in_request_line: true, end: None }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// What has arrived so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes not yet looked at (left over from a pipelined batch).
    pub fn has_unscanned(&self) -> bool {
        self.scanned < self.buf.len()
    }

    /// How many more bytes may be read before the head limit is hit; the
    /// caller reads no more than this, so the buffer never outgrows the limit.
    pub fn room(&self, limits: &HeadLimits) -> usize {
        (limits.head_size + 1).saturating_sub(self.buf.len())
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the parsed head and the bytes after it once the blank line
    /// has arrived, `None` while it hasn't.
    pub fn poll(&mut self, limits: &HeadLimits) -> Result<Option<(RequestHead, Vec<u8>)>, Rejection> {
        self.scan(limits)?;
        let Some(end) = self.end else {
            return Ok(None);
        };
        let head = parse_complete_head(&self.buf[..end], limits)?;
        let leftover = self.buf.split_off(end);
        Ok(Some((head, leftover)))
    }

    fn scan(&mut self, limits: &HeadLimits) -> Result<(), Rejection> {
        while self.end.is_none() && self.scanned < self.buf.len() {
            let Some(offset) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                break;
            };
            let newline = self.scanned + offset;
            let line = &self.buf[self.line_start..newline];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > limits.line_size {
                return Err(self.line_too_long());
            }
            if line.is_empty() {
                if self.in_request_line {
                    // RFC 9112 §2.2: empty lines before the request line
                    // (left by clients after a body) are ignored.
                } else {
                    self.end = Some(newline + 1);
                }
            } else {
                if self.in_request_line && !line.windows(6).any(|window| window == b" HTTP/") {
                    // An HTTP/0.9 request line (`GET /` alone) has no head
                    // to wait for: answering now beats a 408 a minute later.
                    return Err(Rejection::new(400, "request line without an HTTP version (HTTP/0.9 is not served)"));
                }
                self.in_request_line = false;
            }
            self.scanned = newline + 1;
            self.line_start = self.scanned;
        }
        if self.end.is_none() {
            if self.buf.len() - self.line_start > limits.line_size {
                return Err(self.line_too_long());
            }
            if self.buf.len() > limits.head_size {
                return Err(Rejection::new(431, "request head too large"));
            }
        } else if self.end.is_some_and(|end| end > limits.head_size) {
            return Err(Rejection::new(431, "request head too large"));
        }
        Ok(())
    }

    fn line_too_long(&self) -> Rejection {
        if self.in_request_line {
            Rejection::new(414, "request line too long")
        } else {
            Rejection::new(431, "header line too long")
        }
    }
}

fn parse_complete_head(bytes: &[u8], limits: &HeadLimits) -> Result<RequestHead, Rejection> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut request = httparse::Request::new(&mut storage);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Rejection::new(400, "malformed request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::new(431, "too many header fields"));
        }
        Err(httparse::Error::Version) => return Err(version_rejection(bytes)),
        Err(httparse::Error::HeaderName) => {
            return Err(Rejection::new(400, "invalid header name (obs-fold or control character)"));
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(Rejection::new(400, "invalid header value (control character)"));
        }
        Err(_) => return Err(Rejection::new(400, "malformed request line")),
    }
    let method = request.method.unwrap_or_default().to_owned();
    let target = request.path.unwrap_or_default().to_owned();
    let version = match request.version {
        Some(0) => HttpVersion::Http10,
        _ => HttpVersion::Http11,
    };
    check_target(&method, &target)?;
    let (target, authority) = origin_form(target)?;
    let mut head = judge_headers(method, target, version, request.headers)?;
    if let Some(authority) = authority {
        // RFC 9112 §3.2.2: the target's authority is the request's host,
        // whatever Host said; Unicorn would read it from the URI anyway.
        head.forwarded_headers.retain(|(name, _)| !name.eq_ignore_ascii_case("host"));
        head.forwarded_headers.insert(0, ("Host".to_owned(), authority.into_bytes()));
    }
    Ok(head)
}

/// An absolute-form target (`http://host/path`) becomes origin-form
/// (`/path`) and its authority, which must be a valid host.
fn origin_form(target: String) -> Result<(String, Option<String>), Rejection> {
    if target.starts_with('/') || target == "*" {
        return Ok((target, None));
    }
    let after_scheme = target.find("://").map_or(target.as_str(), |at| &target[at + 3..]);
    let end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let (authority, rest) = after_scheme.split_at(end);
    check_host(authority.as_bytes())?;
    let path = match rest.as_bytes().first() {
        Some(b'/') => rest.to_owned(),
        Some(_) => format!("/{rest}"),
        None => "/".to_owned(),
    };
    Ok((path, Some(authority.to_owned())))
}

/// A Host value as RFC 9110 §7.2 allows it, and as nginx checks it: a name
/// (or an IPv4 address, or an IPv6 one in brackets) and an optional port;
/// no userinfo, path, list, spaces or backslashes.
fn check_host(host: &[u8]) -> Result<(), Rejection> {
    let bad = Err(Rejection::new(400, "invalid Host"));
    let (name, port) = if let Some(bracketed) = host.strip_prefix(b"[") {
        let Some(close) = bracketed.iter().position(|&b| b == b']') else { return bad };
        let (address, after) = bracketed.split_at(close);
        if address.is_empty() || !address.iter().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')) {
            return bad;
        }
        match &after[1..] {
            [] => (address, None),
            [b':', port @ ..] => (address, Some(port)),
            _ => return bad,
        }
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
            None => (host, None),
        }
    };
    let name_ok = !name.is_empty()
        && (host.starts_with(b"[")
            || name.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    let port_ok = port.is_none_or(|port| {
        !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit) && {
            port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65_535
        }
    });
    if name_ok && port_ok { Ok(()) } else { bad }
}

/// `HTTP/2.0` and friends are well-formed but unsupported; anything else
/// httparse calls a version error (`HTTP/01.1`, `HTTP/1.`) is just a bad
/// request line (RFC 9112 §2.3: one digit, a dot, one digit).
fn version_rejection(bytes: &[u8]) -> Rejection {
    let line_end = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
    let line = bytes[..line_end].strip_suffix(b"\r").unwrap_or(&bytes[..line_end]);
    let version = line.windows(6).rposition(|window| window == b" HTTP/").map(|at| &line[at + 6..]);
    match version {
        Some([major, b'.', minor]) if major.is_ascii_digit() && minor.is_ascii_digit() && *major >= b'2' => {
            Rejection::new(505, "only HTTP/1.0 and HTTP/1.1 are served")
        }
        _ => Rejection::new(400, "malformed request line"),
    }
}

fn check_target(method: &str, target: &str) -> Result<(), Rejection> {
    // RFC 9112 §3.2: the target is ASCII; raw UTF-8 must be percent-encoded.
    if !target.is_ascii() {
        return Err(Rejection::new(400, "bytes above 0x7f in the request target (percent-encode them)"));
    }
    let origin_form = target.starts_with('/');
    let asterisk_form = target == "*" && method == "OPTIONS";
    // Compared as bytes: the target may hold UTF-8, and slicing a str inside
    // a character would panic.
    let absolute_form = [&b"http://"[..], b"https://"]
        .iter()
        .any(|scheme| target.len() > scheme.len() && target.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme));
    if origin_form || asterisk_form || absolute_form { Ok(()) } else { Err(Rejection::new(400, "bad request target")) }
}

fn judge_headers(
    method: String,
    target: String,
    version: HttpVersion,
    headers: &[httparse::Header],
) -> Result<RequestHead, Rejection> {
    let mut forwarded_headers = Vec::with_capacity(headers.len());
    let mut host_count = 0;
    let mut content_length: Option<u64> = None;
    let mut transfer_codings: Vec<String> = Vec::new();
    let mut saw_transfer_encoding = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expects_continue = false;
    let mut connection_options: Vec<String> = Vec::new();
    let mut upgrade_protocol: Option<Vec<u8>> = None;

    for header in headers {
        let name = header.name;
        // nginx's `underscores_in_headers off`: `X_Forwarded_For` would reach
        // Rack as HTTP_X_FORWARDED_FOR and forge what the front vouches for.
        if name.contains('_') {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "host" => {
                host_count += 1;
                // An empty Host is allowed only for targets without an
                // authority (RFC 9112 §3.2); the front serves none of those.
                check_host(header.value.trim_ascii())?;
                forwarded_headers.push((name.to_owned(), header.value.trim_ascii().to_vec()));
            }
            "content-length" => {
                let length = parse_content_length(header.value)?;
                if content_length.is_some_and(|seen| seen != length) {
                    return Err(Rejection::new(400, "conflicting Content-Length headers"));
                }
                content_length = Some(length);
            }
            "transfer-encoding" => {
                saw_transfer_encoding = true;
                let value =
                    std::str::from_utf8(header.value).map_err(|_| Rejection::new(400, "bad Transfer-Encoding"))?;
                transfer_codings
                    .extend(value.split(',').map(|c| c.trim().to_ascii_lowercase()).filter(|c| !c.is_empty()));
            }
            "connection" => {
                for token in header.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    connection_close |= token.eq_ignore_ascii_case(b"close");
                    connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    if !token.is_empty() {
                        connection_options.push(String::from_utf8_lossy(token).to_ascii_lowercase());
                    }
                }
            }
            "expect" => {
                if version == HttpVersion::Http11 {
                    if header.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                        expects_continue = true;
                    } else {
                        return Err(Rejection::new(417, "only Expect: 100-continue is understood"));
                    }
                }
            }
            // Hop-by-hop (RFC 9110 §7.6.1) and what the front alone may say.
            "upgrade" => upgrade_protocol = Some(header.value.trim_ascii().to_vec()),
            "keep-alive" | "proxy-connection" | "te" | "trailer" => {}
            // What says who the client is, which only the front knows: Rails'
            // remote_ip reads Client-IP, other stacks X-Real-IP and
            // True-Client-IP (Cloudflare's name).
            "forwarded" | "x-request-start" | "client-ip" | "x-real-ip" | "true-client-ip" => {}
            // Only the front offers files: a client's would make the app
            // answer with paths the front was never asked to serve.
            "x-sendfile-type" | "x-accel-mapping" => {}
            _ if lower.starts_with("x-forwarded-") => {}
            _ => forwarded_headers.push((name.to_owned(), header.value.to_vec())),
        }
    }

    // Headers the client named in Connection are for this hop only (RFC 9110
    // §7.6.1); Host stays, the front being the first hop.
    forwarded_headers.retain(|(name, _)| {
        name.eq_ignore_ascii_case("host") || !connection_options.contains(&name.to_ascii_lowercase())
    });
    if version == HttpVersion::Http11 && host_count == 0 {
        return Err(Rejection::new(400, "missing Host header"));
    }
    if host_count > 1 {
        return Err(Rejection::new(400, "duplicate Host header"));
    }
    let framing = if saw_transfer_encoding {
        if version == HttpVersion::Http10 {
            return Err(Rejection::new(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        if content_length.is_some() {
            return Err(Rejection::new(400, "both Content-Length and Transfer-Encoding"));
        }
        chunked_framing(&transfer_codings)?
    } else {
        match content_length {
            Some(length) => BodyFraming::Length(length),
            None => BodyFraming::None,
        }
    };
    let has_body = framing != BodyFraming::None && framing != BodyFraming::Length(0);
    let keep_alive = match version {
        HttpVersion::Http11 => !connection_close,
        HttpVersion::Http10 => connection_keep_alive && !connection_close,
    };
    let wants_upgrade = version == HttpVersion::Http11 && connection_options.iter().any(|o| o == "upgrade");
    let upgrade = upgrade_protocol.filter(|protocol| wants_upgrade && !protocol.is_empty());
    Ok(RequestHead {
        method,
        target,
        version,
        forwarded_headers,
        framing,
        expects_continue: expects_continue && has_body,
        keep_alive,
        upgrade,
    })
}

fn chunked_framing(codings: &[String]) -> Result<BodyFraming, Rejection> {
    match codings {
        [] => Err(Rejection::new(400, "empty Transfer-Encoding")),
        [only] if only == "chunked" => Ok(BodyFraming::Chunked),
        [earlier @ .., last] if last == "chunked" => {
            if earlier.iter().any(|c| c == "chunked") {
                Err(Rejection::new(400, "chunked applied more than once"))
            } else {
                Err(Rejection::new(501, "only the chunked transfer coding is supported"))
            }
        }
        _ => Err(Rejection::new(400, "chunked is not the final transfer coding")),
    }
}

/// Digits only, as a list of equal values at most (RFC 9110 §8.6): no sign,
/// no spaces inside, no overflow.
pub(crate) fn parse_content_length(value: &[u8]) -> Result<u64, Rejection> {
    let bad = Rejection::new(400, "bad Content-Length");
    let mut result: Option<u64> = None;
    for element in value.split(|&b| b == b',') {
        let digits = element.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad);
        }
        let length = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if result.is_some_and(|seen| seen != length) {
            return Err(Rejection::new(400, "conflicting Content-Length headers"));
        }
        result = Some(length);
    }
    result.ok_or(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits { line_size: 64, head_size: 256, max_headers: 8 }
    }

    fn parse(bytes: &[u8]) -> Result<Option<(RequestHead, Vec<u8>)>, Rejection> {
        let mut reader = HeadReader::default();
        reader.push(bytes);
        reader.poll(&limits())
    }

    fn status_of(bytes: &[u8]) -> u16 {
        parse(bytes).expect_err("should be rejected").status
    }

    fn head_of(bytes: &[u8]) -> RequestHead {
        parse(bytes).expect("should parse").expect("should be complete").0
    }

    #[test]
    fn simple_get_is_complete_with_leftover() {
        let (head, leftover) = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /next").unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/a?b=1");
        assert_eq!(head.framing, BodyFraming::None);
        assert!(head.keep_alive);
        assert_eq!(leftover, b"GET /next");
    }

    #[test]
    fn partial_head_waits() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn head_sent_a_byte_at_a_time_completes() {
        let request = b"\r\nPOST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let mut reader = HeadReader::default();
        let mut result = None;
        for byte in request.iter() {
            reader.push(std::slice::from_ref(byte));
            if let Some(done) = reader.poll(&limits()).unwrap() {
                result = Some(done);
                break;
            }
        }
        let (head, leftover) = result.expect("complete");
        assert_eq!(head.framing, BodyFraming::Length(3));
        assert!(leftover.is_empty(), "the body's bytes are not read with the head");
    }

    #[test]
    fn long_request_line_is_414_even_before_it_ends() {
        let mut request = b"GET /".to_vec();
        request.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(status_of(&request), 414);
    }

    #[test]
    fn long_header_line_is_431() {
        let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 100));
        request.extend(b"\r\n\r\n");
        assert_eq!(status_of(&request), 431);
    }

    #[test]
    fn head_over_total_size_is_431() {
        let mut request = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..7 {
            request.extend(format!("X-H{i}: {}\r\n", "v".repeat(40)).as_bytes());
        }
        assert_eq!(status_of(&request), 431);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut request = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..9 {
            request.extend(format!("X-{i}: v\r\n").as_bytes());
        }
        request.extend(b"\r\n");
        assert_eq!(status_of(&request), 431);
    }

    #[test]
    fn framing_ambiguities_are_400() {
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"), 400);
        assert_eq!(status_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n"), 400);
        assert_eq!(status_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n"), 400);
        assert_eq!(status_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"), 400);
        assert_eq!(status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(status_of(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"), 400);
        assert_eq!(status_of(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
    }

    #[test]
    fn identical_content_lengths_merge() {
        let head = head_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(head.framing, BodyFraming::Length(5));
    }

    #[test]
    fn chunked_is_recognised_in_any_case() {
        let head = head_of(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(head.framing, BodyFraming::Chunked);
    }

    #[test]
    fn obs_fold_and_control_characters_are_400() {
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    }

    #[test]
    fn bad_request_lines_are_400_and_other_versions_505() {
        assert_eq!(status_of(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET noslash HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status_of(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
    }

    #[test]
    fn host_rules() {
        assert_eq!(status_of(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert!(!head_of(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    }

    #[test]
    fn expect_continue_only_matters_with_a_body() {
        let head = head_of(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n");
        assert!(head.expects_continue);
        let head = head_of(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert!(!head.expects_continue);
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n"), 417);
    }

    /// Valid heads the fuzzer edits, one per feature the front judges.
    const VALID_HEADS: [&[u8]; 7] = [
        b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /up HTTP/1.1\r\nHost: x:80\r\nContent-Length: 5\r\n\r\n",
        b"PUT /c HTTP/1.1\r\nHost: [::1]\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        b"GET http://h.test:8/p HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"HEAD /%2e%2E/x HTTP/1.0\r\nX-Forwarded-For: 1.2.3.4\r\nClient-IP: 5.6.7.8\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ];
    const HEAD_WORDS: [&[u8]; 22] = [
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"\t",
        b":",
        b",",
        b";",
        b"0",
        b"9",
        b"\x00",
        b"\xff",
        "\u{e9}".as_bytes(),
        b"Content-Length: 3\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Host: y\r\n",
        b"http://",
        b"HTTP/1.1",
        b"HTTP/0",
        b"Connection: close\r\n",
        b"%00",
        b"@",
    ];
    const STATUSES: [u16; 8] = [400, 413, 414, 417, 431, 501, 505, 408];

    /// For any bytes: no panic, a known status if refused, and if accepted a
    /// head for the worker that itself parses to the same request with the
    /// same framing and nothing after it: the worker can never be made to
    /// see a second request or a different body (request smuggling).
    #[test]
    fn fuzzed_heads_are_refused_cleanly_or_forwarded_unambiguously() {
        let make = |noise: &mut crate::test_support::Noise| {
            let valid = VALID_HEADS[noise.below(VALID_HEADS.len())];
            (noise.mutate(valid, &HEAD_WORDS), ())
        };
        crate::test_support::fuzz(7, 30_000, make, |raw, (), noise| {
            let mut reader = HeadReader::default();
            let mut outcome = Ok(None);
            for piece in noise.pieces(raw) {
                reader.push(piece);
                outcome = reader.poll(&limits());
                if !matches!(outcome, Ok(None)) {
                    break;
                }
            }
            let head = match outcome {
                Err(rejection) => return assert!(STATUSES.contains(&rejection.status), "{}", rejection.status),
                Ok(None) => return,
                Ok(Some((head, _))) => head,
            };
            let body_length = match head.framing {
                BodyFraming::None => None,
                BodyFraming::Length(length) => Some(length),
                BodyFraming::Chunked => Some(3),
            };
            let mut upstream = Vec::new();
            head.write_upstream_head(
                &mut upstream,
                body_length,
                &ForwardingFacts { https: true, accel_mapping: None, request_start_usec: 1, forwarded_for: None },
            );
            let mut reader = HeadReader::default();
            reader.push(&upstream);
            let (again, after) = match reader.poll(&HeadLimits::default()) {
                Ok(Some(parsed)) => parsed,
                other => panic!("the worker's head does not parse: {other:?}\n{}", String::from_utf8_lossy(&upstream)),
            };
            assert!(after.is_empty(), "bytes after the worker's head");
            assert_eq!((&again.method, &again.target, again.version), (&head.method, &head.target, head.version));
            let expected_framing = body_length.map_or(BodyFraming::None, BodyFraming::Length);
            assert_eq!(again.framing, expected_framing);
            assert_eq!(again.forwarded_headers, head.forwarded_headers, "what the front adds is its own");
        });
    }

    #[test]
    fn utf8_in_the_target_is_judged_not_panicked_on() {
        assert_eq!(status_of("GET /aaaaaé HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes()), 400, "raw bytes above 0x7f");
        assert_eq!(status_of("GET aaaaaaé HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes()), 400);
        assert_eq!(status_of("GET HTTPS://x/é HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes()), 400);
        assert_eq!(head_of(b"GET /caf%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n").target, "/caf%C3%A9");
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_the_uris_host() {
        let head = head_of(b"GET http://Example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: evil\r\n\r\n");
        assert_eq!(head.target, "/a/b?q=1");
        assert_eq!(head.header("host"), Some(&b"Example.com:8080"[..]));
        let mut out = Vec::new();
        head.write_upstream_head(
            &mut out,
            None,
            &ForwardingFacts { https: false, accel_mapping: None, request_start_usec: 1, forwarded_for: None },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /a/b?q=1 HTTP/1.1\r\nHost: Example.com:8080\r\n"), "{text}");
        assert!(!text.contains("evil"), "{text}");
        assert_eq!(head_of(b"GET https://x.test HTTP/1.1\r\nHost: x\r\n\r\n").target, "/");
        assert_eq!(head_of(b"GET http://x.test?q HTTP/1.0\r\n\r\n").target, "/?q");
        assert_eq!(status_of(b"GET http://user@x.test/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400, "userinfo");
        assert_eq!(status_of(b"GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n"), 400, "no host");
    }

    #[test]
    fn host_syntax_is_checked_as_nginx_does() {
        for good in ["x", "a.example.com", "a-b.test:8080", "127.0.0.1:1", "[::1]", "[::1]:443", "under_score"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
            assert_eq!(head_of(raw.as_bytes()).header("host"), Some(good.as_bytes()), "{good}");
        }
        for bad in ["", "a/b", "a\\b", "a b", "a,b", "u@h", "h:99999", "h:", "h:1x", "[::1", "[zz]", "h:8080/p"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(status_of(raw.as_bytes()), 400, "Host {bad:?}");
        }
    }

    #[test]
    fn versions_with_leading_zeros_are_bad_and_http_0_9_is_answered_at_once() {
        assert_eq!(status_of(b"GET / HTTP/01.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/1.10\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/3.0\r\nHost: x\r\n\r\n"), 505);
        let mut reader = HeadReader::default();
        reader.push(b"GET /\r\n");
        let rejection = reader.poll(&limits()).expect_err("no waiting for a head that will not come");
        assert_eq!(rejection.status, 400);
    }

    #[test]
    fn a_long_legal_url_passes_the_default_limits() {
        let target = format!("/{}", "a".repeat(8000));
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut reader = HeadReader::default();
        reader.push(raw.as_bytes());
        let (head, _) = reader.poll(&HeadLimits::default()).unwrap().expect("complete");
        assert_eq!(head.target, target);
    }

    #[test]
    fn client_said_addresses_are_dropped() {
        let head = head_of(
            b"GET / HTTP/1.1\r\nHost: x\r\nClient-IP: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\n\r\n",
        );
        for name in ["client-ip", "x-real-ip", "true-client-ip"] {
            assert_eq!(head.header(name), None, "{name}");
        }
    }

    #[test]
    fn upgrade_requests_reach_the_worker_as_such() {
        let head =
            head_of(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(head.upgrade.as_deref(), Some(&b"websocket"[..]));
        let mut out = Vec::new();
        head.write_upstream_head(
            &mut out,
            None,
            &ForwardingFacts { https: false, accel_mapping: None, request_start_usec: 1, forwarded_for: None },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), "{text}");
        let plain = head_of(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(plain.upgrade, None, "Upgrade without Connection: upgrade asks for nothing");
        let old = head_of(b"GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(old.upgrade, None);
    }

    #[test]
    fn headers_named_in_connection_stay_on_this_hop() {
        let head = head_of(b"GET / HTTP/1.1\r\nHost: x\r\nX-Hop: 1\r\nX-Keep: 2\r\nConnection: x-hop, host\r\n\r\n");
        assert_eq!(head.header("x-hop"), None);
        assert_eq!(head.header("x-keep"), Some(&b"2"[..]));
        assert_eq!(head.header("host"), Some(&b"x"[..]));
    }

    #[test]
    fn upstream_head_replaces_what_the_client_may_not_say() {
        let head = head_of(
            b"POST /u HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\n\
              X-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\n\
              X-Request-Start: t=1\r\nConnection: keep-alive\r\nCookie: a=b\r\n\r\n",
        );
        let mut out = b"preamble".to_vec();
        head.write_upstream_head(
            &mut out,
            Some(11),
            &ForwardingFacts { https: false, accel_mapping: None, request_start_usec: 42, forwarded_for: None },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "preamblePOST /u HTTP/1.1\r\nHost: x\r\nCookie: a=b\r\nContent-Length: 11\r\n\
             X-Request-Start: t=42\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn https_requests_say_so_to_the_worker() {
        let head = head_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut out = Vec::new();
        head.write_upstream_head(
            &mut out,
            None,
            &ForwardingFacts { https: true, accel_mapping: None, request_start_usec: 7, forwarded_for: None },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nX-Forwarded-Proto: https\r\n"), "{text}");
    }

    #[test]
    fn a_server_without_a_preamble_gets_the_clients_address_in_a_header() {
        let head = head_of(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n");
        let client = crate::net::client_address::ClientAddress::Ip("192.0.2.7:4000".parse().unwrap());
        let mut out = Vec::new();
        let facts =
            ForwardingFacts { https: false, accel_mapping: None, request_start_usec: 7, forwarded_for: Some(client) };
        head.write_upstream_head(&mut out, None, &facts);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n"), "{text}");
        assert!(!text.contains("6.6.6.6"), "the client's own claim is gone");
    }
}
