//! Frames a worker's response for its client. Unicorn answers one request
//! per connection and ends each response by closing it; the front keeps
//! client connections alive, so it must know where each response ends and
//! say so: Content-Length and chunked bodies pass as they are, a body that
//! ends at close is re-framed as chunked for an HTTP/1.1 client, and the
//! hop-by-hop headers are the front's own.

use std::sync::Arc;

#[cfg(test)]
use crate::byte_queue::ByteQueue;
use crate::byte_queue::ResponseSink;
use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::request::head::{HttpVersion, parse_content_length};
use crate::static_files::accel::AccelFiles;

const MAX_RESPONSE_HEADERS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    MalformedHead,
    HeadTooLarge,
    MalformedChunks,
    /// The worker closed before the response it announced was complete.
    Truncated,
    /// The worker closed without a complete response head.
    NoResponse,
    /// A 101 to a client that asked for no upgrade.
    UnaskedUpgrade,
}

impl FramingError {
    pub fn describe(self) -> &'static str {
        match self {
            FramingError::MalformedHead => "malformed response head",
            FramingError::HeadTooLarge => "response head larger than proxy_buffer_size",
            FramingError::MalformedChunks => "malformed chunked response body",
            FramingError::Truncated => "response cut short",
            FramingError::NoResponse => "no response",
            FramingError::UnaskedUpgrade => "101 Switching Protocols to a request that asked for no upgrade",
        }
    }
}

/// What the request said that shapes its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTerms {
    pub head_request: bool,
    pub version: HttpVersion,
    /// The client asked to keep the connection and the front is willing.
    pub keep_alive: bool,
    /// The client asked to switch protocols, so a 101 may follow.
    pub upgrade: bool,
    /// It came over HTTPS (so `hsts` applies).
    pub https: bool,
}

#[derive(Debug)]
enum Body {
    Length(u64),
    /// `dechunk` strips the framing for an HTTP/1.0 client, which cannot
    /// read chunked encoding (the body then ends at close).
    Chunked {
        decoder: ChunkedDecoder,
        dechunk: bool,
    },
    /// Ends when the worker closes; `reframe` adds chunked framing.
    UntilClose {
        reframe: bool,
    },
}

#[derive(Debug)]
enum Stage {
    Head,
    Body(Body),
    Done,
}

#[derive(Debug)]
pub struct ResponseFramer {
    terms: ClientTerms,
    stage: Stage,
    head: Vec<u8>,
    max_head: usize,
    keep_alive: bool,
    status: Option<u16>,
    unbuffered: bool,
    /// Bytes of heads (interim and final) passed on, for the access log's
    /// $body_bytes_sent.
    head_bytes: u64,
    /// Strict-Transport-Security for a final response that has none.
    hsts: Option<Arc<str>>,
    /// The front serves files the app names (`sendfile_root`).
    accel_allowed: bool,
    accel: Option<AccelAnswer>,
}

/// A response that named a file for the front to serve (X-Accel-Redirect)
/// instead of carrying it: the URI, and the app's headers that travel
/// with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelAnswer {
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ResponseFramer {
    pub fn new(terms: ClientTerms, max_head: usize) -> Self {
        ResponseFramer {
            terms,
            stage: Stage::Head,
            head: Vec::new(),
            max_head,
            keep_alive: false,
            status: None,
            unbuffered: false,
            head_bytes: 0,
            hsts: None,
            accel_allowed: false,
            accel: None,
        }
    }

    /// A final response with `X-Accel-Redirect` names a file for the front
    /// (see `static_files::accel`): nothing of it reaches the client.
    pub fn with_accel(self, allowed: bool) -> Self {
        ResponseFramer { accel_allowed: allowed, ..self }
    }

    /// The file the response named, once.
    pub fn take_accel(&mut self) -> Option<AccelAnswer> {
        self.accel.take()
    }

    /// Adds `Strict-Transport-Security: value` to the final response of an
    /// HTTPS client, unless the app set its own.
    pub fn with_hsts(self, value: Option<Arc<str>>) -> Self {
        ResponseFramer { hsts: value.filter(|_| self.terms.https), ..self }
    }

    /// The whole response has been framed; later bytes are dropped.
    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Whether the client connection may carry another request after this
    /// response; meaningful once the final head is parsed.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Bytes of the heads passed on so far.
    pub fn head_bytes(&self) -> u64 {
        self.head_bytes
    }

    /// The worker asked for no buffering (`X-Accel-Buffering: no`, as with
    /// nginx): the response is passed at the client's pace.
    pub fn unbuffered(&self) -> bool {
        self.unbuffered
    }

    /// Takes bytes the worker wrote and appends what the client gets to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut impl ResponseSink) -> Result<(), FramingError> {
        while !input.is_empty() {
            match &mut self.stage {
                Stage::Head => {
                    self.head.extend_from_slice(input);
                    input = &[];
                    let rest = self.parse_heads(out)?;
                    if !rest.is_empty() {
                        return self.feed(&rest, out);
                    }
                }
                Stage::Body(Body::Length(remaining)) => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    out.push(&input[..take]);
                    *remaining -= take as u64;
                    input = &input[take..];
                    if *remaining == 0 {
                        self.stage = Stage::Done;
                    }
                }
                Stage::Body(Body::Chunked { decoder, dechunk }) => {
                    let step = decoder.decode(input).map_err(|error| match error {
                        ChunkError::Malformed(_) | ChunkError::TooLarge => FramingError::MalformedChunks,
                    })?;
                    out.push(if *dechunk { &input[step.data] } else { &input[..step.consumed] });
                    input = &input[step.consumed..];
                    if decoder.is_done() {
                        self.stage = Stage::Done;
                    }
                }
                Stage::Body(Body::UntilClose { reframe }) => {
                    if *reframe {
                        out.push(format!("{:x}\r\n", input.len()).as_bytes());
                        out.push(input);
                        out.push(b"\r\n");
                    } else {
                        out.push(input);
                    }
                    input = &[];
                }
                Stage::Done => input = &[],
            }
        }
        Ok(())
    }

    /// The worker closed its end: a body that ended at close is complete,
    /// anything else unfinished is an error.
    pub fn finish(&mut self, out: &mut impl ResponseSink) -> Result<(), FramingError> {
        match &self.stage {
            Stage::Done => Ok(()),
            Stage::Body(Body::UntilClose { reframe }) => {
                if *reframe {
                    out.push(b"0\r\n\r\n");
                }
                self.stage = Stage::Done;
                Ok(())
            }
            Stage::Head if self.status.is_none() && self.head.is_empty() => Err(FramingError::NoResponse),
            Stage::Head | Stage::Body(_) => Err(FramingError::Truncated),
        }
    }

    /// Parses as many complete heads as the buffer holds (interim 1xx heads
    /// pass through untouched); returns the bytes after the final head.
    fn parse_heads(&mut self, out: &mut impl ResponseSink) -> Result<Vec<u8>, FramingError> {
        loop {
            let mut storage = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            let mut response = httparse::Response::new(&mut storage);
            let length = match response.parse(&self.head) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) if self.head.len() > self.max_head => {
                    return Err(FramingError::HeadTooLarge);
                }
                Ok(httparse::Status::Partial) => return Ok(Vec::new()),
                Err(_) => return Err(FramingError::MalformedHead),
            };
            // RFC 9110 §15: codes outside 100..=599 are invalid ("000" parses as 0).
            let status = response.code.filter(|code| (100..=599).contains(code)).ok_or(FramingError::MalformedHead)?;
            self.status = Some(status);
            // Rebuilt from what was parsed, never copied: httparse forgives
            // bare LFs and blank lines before a head that a client may not.
            let status_line =
                format!("HTTP/1.{} {status} {}", response.version.unwrap_or(1), response.reason.unwrap_or(""));
            if (100..200).contains(&status) && status != 101 {
                // HTTP/1.0 has no interim responses (RFC 9110 §15.2).
                if self.terms.version == HttpVersion::Http11 {
                    let mut interim = status_line.into_bytes();
                    interim.extend_from_slice(b"\r\n");
                    for header in response.headers.iter() {
                        push_header(&mut interim, header);
                    }
                    interim.extend_from_slice(b"\r\n");
                    self.head_bytes += interim.len() as u64;
                    out.push(&interim);
                }
                self.head.drain(..length);
                continue;
            }
            if self.accel_allowed
                && let Some(redirect) =
                    response.headers.iter().find(|header| header.name.eq_ignore_ascii_case("x-accel-redirect"))
            {
                let headers = response
                    .headers
                    .iter()
                    .filter(|header| AccelFiles::keeps(header.name))
                    .map(|header| (header.name.to_owned(), header.value.to_vec()))
                    .collect();
                let uri = String::from_utf8_lossy(redirect.value).trim().to_owned();
                self.accel = Some(AccelAnswer { uri, headers });
                // The file's reply keeps the connection as this one would.
                self.keep_alive = self.terms.keep_alive;
                // Its body (Rack::Sendfile sends none) is not wanted.
                self.head = Vec::new();
                self.stage = Stage::Done;
                return Ok(Vec::new());
            }
            let body = self.body_framing(status, response.headers)?;
            self.unbuffered = response.headers.iter().any(|header| {
                header.name.eq_ignore_ascii_case("x-accel-buffering")
                    && header.value.trim_ascii().eq_ignore_ascii_case(b"no")
            });
            self.keep_alive = self.terms.keep_alive
                && !matches!(body, Some(Body::UntilClose { reframe: false } | Body::Chunked { dechunk: true, .. }));
            let rewritten = self.rewrite_head(&status_line, response.headers, &body);
            self.head_bytes += rewritten.len() as u64;
            out.push(&rewritten);
            let rest = self.head.split_off(length);
            self.head = Vec::new();
            self.stage = match body {
                None | Some(Body::Length(0)) => Stage::Done,
                Some(body) => Stage::Body(body),
            };
            return Ok(rest);
        }
    }

    /// `None` for a response without a body (RFC 9112 §6.3).
    fn body_framing(&self, status: u16, headers: &[httparse::Header]) -> Result<Option<Body>, FramingError> {
        if status == 101 {
            return if self.terms.upgrade {
                Ok(Some(Body::UntilClose { reframe: false }))
            } else {
                Err(FramingError::UnaskedUpgrade)
            };
        }
        if self.terms.head_request || status == 204 || status == 304 {
            return Ok(None);
        }
        let mut codings = Vec::new();
        let mut length = None;
        for header in headers {
            if header.name.eq_ignore_ascii_case("transfer-encoding") {
                codings.extend(header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii));
            } else if header.name.eq_ignore_ascii_case("content-length") {
                let parsed = parse_content_length(header.value).map_err(|_| FramingError::MalformedHead)?;
                if length.is_some_and(|seen| seen != parsed) {
                    return Err(FramingError::MalformedHead);
                }
                length = Some(parsed);
            }
        }
        // Only chunked, once, as nginx accepts from upstreams: another coding
        // (or a value like "c chunked") would leave the client to guess where
        // the body ends, and guesses differ between clients.
        Ok(Some(match (codings.as_slice(), length) {
            ([only], _) if only.eq_ignore_ascii_case(b"chunked") => {
                Body::Chunked { decoder: ChunkedDecoder::new(None), dechunk: self.terms.version == HttpVersion::Http10 }
            }
            ([_, ..], _) => return Err(FramingError::MalformedHead),
            ([], Some(length)) => Body::Length(length),
            ([], None) => {
                Body::UntilClose { reframe: self.terms.keep_alive && self.terms.version == HttpVersion::Http11 }
            }
        }))
    }

    fn rewrite_head(&self, status_line: &str, headers: &[httparse::Header], body: &Option<Body>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + 64);
        out.extend_from_slice(status_line.as_bytes());
        out.extend_from_slice(b"\r\n");
        let chunked = matches!(body, Some(Body::Chunked { .. }));
        let dechunked = matches!(body, Some(Body::Chunked { dechunk: true, .. }));
        // A 101 keeps the headers that say what the connection switched to.
        let switching = self.status == Some(101);
        for header in headers {
            let name = header.name;
            let hop_by_hop = ["connection", "keep-alive", "proxy-connection", "x-accel-buffering"]
                .iter()
                .any(|hop| name.eq_ignore_ascii_case(hop))
                && !(switching && name.eq_ignore_ascii_case("connection"));
            // With chunked framing, a Content-Length would contradict it.
            let contradicted = chunked && name.eq_ignore_ascii_case("content-length");
            let stripped = dechunked && name.eq_ignore_ascii_case("transfer-encoding");
            if !(hop_by_hop || contradicted || stripped) {
                push_header(&mut out, header);
            }
        }
        if matches!(body, Some(Body::UntilClose { reframe: true })) {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if let Some(hsts) = &self.hsts
            && !switching
            && !headers.iter().any(|header| header.name.eq_ignore_ascii_case("strict-transport-security"))
        {
            out.extend_from_slice(b"Strict-Transport-Security: ");
            out.extend_from_slice(hsts.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match (self.keep_alive, self.terms.version) {
            (false, _) if switching => {}
            (false, _) => out.extend_from_slice(b"Connection: close\r\n"),
            (true, HttpVersion::Http10) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            (true, HttpVersion::Http11) => {}
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn push_header(out: &mut Vec<u8>, header: &httparse::Header) {
    out.extend_from_slice(header.name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(header.value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(version: HttpVersion, keep_alive: bool) -> ClientTerms {
        ClientTerms { head_request: false, version, keep_alive, upgrade: false, https: false }
    }

    /// Feeds `response` in pieces of `piece` bytes, then EOF; returns what
    /// the client gets.
    fn frame(terms: ClientTerms, response: &[u8], piece: usize) -> (Result<String, FramingError>, bool) {
        let mut framer = ResponseFramer::new(terms, 4096);
        let mut out = ByteQueue::new(1 << 20);
        for slice in response.chunks(piece) {
            if let Err(error) = framer.feed(slice, &mut out) {
                return (Err(error), framer.keep_alive());
            }
        }
        let result = framer.finish(&mut out).map(|()| String::from_utf8_lossy(out.pending()).into_owned());
        (result, framer.keep_alive())
    }

    const UNICORN_CLOSE_DELIMITED: &[u8] =
        b"HTTP/1.1 200 OK\r\nDate: x\r\nConnection: close\r\ncontent-type: text/plain\r\n\r\nhello world";

    #[test]
    fn close_delimited_body_is_rechunked_for_http11_keep_alive() {
        for piece in [1, 5, 1000] {
            let (result, keep_alive) = frame(terms(HttpVersion::Http11, true), UNICORN_CLOSE_DELIMITED, piece);
            let text = result.unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert_eq!(head, "HTTP/1.1 200 OK\r\nDate: x\r\ncontent-type: text/plain\r\nTransfer-Encoding: chunked");
            let decoded: String =
                body.split("\r\n").collect::<Vec<_>>().chunks(2).filter_map(|pair| pair.get(1).copied()).collect();
            assert_eq!(decoded, "hello world", "piece {piece}: {body:?}");
            assert!(body.ends_with("0\r\n\r\n"));
            assert!(keep_alive);
        }
    }

    #[test]
    fn close_delimited_body_for_http10_closes_the_connection() {
        let (result, keep_alive) = frame(terms(HttpVersion::Http10, true), UNICORN_CLOSE_DELIMITED, 7);
        assert_eq!(
            result.unwrap(),
            "HTTP/1.1 200 OK\r\nDate: x\r\ncontent-type: text/plain\r\nConnection: close\r\n\r\nhello world"
        );
        assert!(!keep_alive);
    }

    #[test]
    fn content_length_body_passes_and_ends_without_waiting_for_close() {
        let mut framer = ResponseFramer::new(terms(HttpVersion::Http10, true), 4096);
        let mut out = ByteQueue::new(1024);
        framer.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhelloEXTRA", &mut out).unwrap();
        assert!(framer.is_done());
        assert!(framer.keep_alive());
        assert_eq!(
            String::from_utf8_lossy(out.pending()),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
        );
    }

    #[test]
    fn chunked_body_passes_through_and_its_end_is_found() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (result, keep_alive) = frame(terms(HttpVersion::Http11, true), response, 2);
        assert_eq!(result.unwrap(), String::from_utf8_lossy(response));
        assert!(keep_alive);
    }

    #[test]
    fn bodiless_responses_end_at_their_head() {
        let mut head_terms = terms(HttpVersion::Http11, true);
        head_terms.head_request = true;
        let (result, _) = frame(head_terms, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 3);
        assert_eq!(result.unwrap(), "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
        for status in ["204 No Content", "304 Not Modified"] {
            let response = format!("HTTP/1.1 {status}\r\nConnection: close\r\n\r\n");
            let (result, keep_alive) = frame(terms(HttpVersion::Http11, true), response.as_bytes(), 4);
            assert_eq!(result.unwrap(), format!("HTTP/1.1 {status}\r\n\r\n"));
            assert!(keep_alive);
        }
    }

    #[test]
    fn interim_responses_pass_before_the_final_one() {
        let response =
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (result, _) = frame(terms(HttpVersion::Http11, true), response, 9);
        assert_eq!(
            result.unwrap(),
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn http10_clients_get_no_chunks_and_no_interim_heads() {
        let response = b"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\n\
                         HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (result, keep_alive) = frame(terms(HttpVersion::Http10, true), response, 3);
        assert_eq!(result.unwrap(), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcde");
        assert!(!keep_alive, "without chunks, only closing can end the body");
    }

    #[test]
    fn response_content_length_is_as_strict_as_the_requests() {
        let t = terms(HttpVersion::Http11, true);
        assert_eq!(
            frame(t, b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", 64).0,
            Err(FramingError::MalformedHead)
        );
    }

    #[test]
    fn hsts_is_added_for_https_clients_unless_the_app_set_its_own() {
        let policy: Option<Arc<str>> = Some(Arc::from("max-age=60"));
        let framed = |https: bool, response: &[u8]| {
            let terms = ClientTerms { https, ..terms(HttpVersion::Http11, true) };
            let mut framer = ResponseFramer::new(terms, 4096).with_hsts(policy.clone());
            let mut out = ByteQueue::new(1 << 16);
            framer.feed(response, &mut out).unwrap();
            String::from_utf8(out.pending().to_vec()).unwrap()
        };
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert!(framed(true, plain).contains("\r\nStrict-Transport-Security: max-age=60\r\n"));
        assert!(!framed(false, plain).contains("Strict-Transport-Security"), "not over plain HTTP");
        let own = b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=5\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(framed(true, own).matches("Strict-Transport-Security").count(), 1, "the app's own stays alone");
    }

    #[test]
    fn a_response_naming_a_file_sends_nothing_and_says_which_file_when_allowed() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nX-Accel-Redirect: /private/r.pdf\r\n\
                         X-Runtime: 1\r\nContent-Length: 0\r\n\r\n";
        let mut framer = ResponseFramer::new(terms(HttpVersion::Http11, true), 4096).with_accel(true);
        let mut out = ByteQueue::new(1 << 16);
        framer.feed(response, &mut out).unwrap();
        assert!(out.pending().is_empty() && framer.is_done(), "nothing for the client: the front serves the file");
        let accel = framer.take_accel().unwrap();
        assert_eq!(accel.uri, "/private/r.pdf");
        assert_eq!(accel.headers, [("Content-Type".to_owned(), b"application/pdf".to_vec())]);
        let mut passed = ResponseFramer::new(terms(HttpVersion::Http11, true), 4096);
        let mut out = ByteQueue::new(1 << 16);
        passed.feed(response, &mut out).unwrap();
        assert!(passed.take_accel().is_none() && !out.pending().is_empty(), "without sendfile_root it passes");
    }

    #[test]
    fn x_accel_buffering_is_read_and_not_passed_on() {
        let mut framer = ResponseFramer::new(terms(HttpVersion::Http11, true), 4096);
        let mut out = ByteQueue::new(1024);
        framer.feed(b"HTTP/1.1 200 OK\r\nX-Accel-Buffering: no\r\nContent-Length: 0\r\n\r\n", &mut out).unwrap();
        assert!(framer.unbuffered());
        assert_eq!(String::from_utf8_lossy(out.pending()), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn switching_protocols_passes_its_headers_and_only_when_asked() {
        let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhi";
        let mut asked = terms(HttpVersion::Http11, true);
        asked.upgrade = true;
        let mut framer = ResponseFramer::new(asked, 4096);
        let mut out = ByteQueue::new(1024);
        framer.feed(response, &mut out).unwrap();
        assert_eq!(framer.status(), Some(101));
        assert_eq!(String::from_utf8_lossy(out.pending()), String::from_utf8_lossy(response));
        assert_eq!(frame(terms(HttpVersion::Http11, true), response, 64).0, Err(FramingError::UnaskedUpgrade));
    }

    #[test]
    fn client_that_asked_to_close_is_told_so() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (result, keep_alive) = frame(terms(HttpVersion::Http11, false), response, 100);
        assert_eq!(result.unwrap(), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        assert!(!keep_alive);
    }

    /// Worker output of every shape the framer tells apart.
    const VALID_RESPONSES: [&[u8]; 7] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited body",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nSet-Cookie: a=b\r\n\r\noops!",
    ];
    const RESPONSE_WORDS: [&[u8]; 14] = [
        b"\r\n",
        b"\n",
        b" ",
        b":",
        b"0",
        b"9",
        b"\x00",
        b"HTTP/1.1 ",
        b"Content-Length: 2\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: keep-alive\r\n",
        b"1\r\nx\r\n",
        b"101",
        b"\r\n\r\n",
    ];

    /// Whatever a worker writes, the client gets either nothing yet (a
    /// named framing error, answered by the caller) or well-framed HTTP: a
    /// parseable head after any interim ones, and a body whose length the
    /// framing it announces tells exactly, so the next response on a kept
    /// connection starts where the client expects it.
    #[test]
    fn fuzzed_worker_output_reaches_the_client_well_framed_or_not_at_all() {
        let make = |noise: &mut crate::test_support::Noise| {
            let valid = VALID_RESPONSES[noise.below(VALID_RESPONSES.len())];
            let input = if noise.below(8) == 0 { valid.to_vec() } else { noise.mutate(valid, &RESPONSE_WORDS) };
            (input, noise.below(12))
        };
        crate::test_support::fuzz(13, 30_000, make, |input, &shape, noise| {
            let version = if shape % 2 == 0 { HttpVersion::Http11 } else { HttpVersion::Http10 };
            let mut terms = terms(version, shape % 3 != 0);
            terms.head_request = shape % 5 == 0;
            let mut framer = ResponseFramer::new(terms, 256);
            let mut out = ByteQueue::new(1 << 16);
            let fed = noise.pieces(input).into_iter().try_for_each(|piece| framer.feed(piece, &mut out));
            if fed.and_then(|()| framer.finish(&mut out)).is_err() {
                return;
            }
            assert_well_framed(out.pending(), terms, framer.keep_alive());
        });
    }

    /// What the fuzzer found, kept: each once reached the client as a head
    /// clients could read differently from the front.
    #[test]
    fn fuzz_findings_stay_fixed() {
        let t = terms(HttpVersion::Http11, true);
        let malformed = [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: c chunked\r\n\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\nbody",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 000 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 003 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ];
        for response in malformed {
            assert_eq!(
                frame(t, response, 7).0,
                Err(FramingError::MalformedHead),
                "{:?}",
                String::from_utf8_lossy(response)
            );
        }
        let bare_lf_then_blank = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            frame(t, bare_lf_then_blank, 5).0.unwrap(),
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
        );
    }

    fn assert_well_framed(mut sent: &[u8], terms: ClientTerms, keep_alive: bool) {
        let text = String::from_utf8_lossy(sent).into_owned();
        let (status, framing) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut head = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(length)) = head.parse(sent) else {
                panic!("the client got no parseable head: {text:?}");
            };
            let status = head.code.expect("a status");
            let header = |name: &str| head.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
            let framing = (header("content-length"), header("transfer-encoding"));
            sent = &sent[length..];
            if !(100..200).contains(&status) || status == 101 {
                break (status, framing);
            }
        };
        let bodiless = terms.head_request || status == 204 || status == 304 || status == 101;
        match framing {
            _ if bodiless => assert!(sent.is_empty(), "a body after a bodiless head: {text:?}"),
            (Some(_), Some(_)) => panic!("both Content-Length and Transfer-Encoding: {text:?}"),
            (Some(length), None) => {
                let length: usize = std::str::from_utf8(length).unwrap().trim().parse().expect("a length");
                assert_eq!(sent.len(), length, "{text:?}");
            }
            (None, Some(coding)) => {
                assert!(coding.eq_ignore_ascii_case(b"chunked"), "{text:?}");
                let mut decoder = ChunkedDecoder::new(None);
                let mut rest = sent;
                while !rest.is_empty() && !decoder.is_done() {
                    let step = decoder.decode(rest).expect("chunks the client can decode");
                    rest = &rest[step.consumed..];
                }
                assert!(decoder.is_done() && rest.is_empty(), "{text:?}");
            }
            (None, None) => assert!(!keep_alive, "a body only its end delimits on a kept connection: {text:?}"),
        }
    }

    #[test]
    fn broken_responses_are_named() {
        let t = terms(HttpVersion::Http11, true);
        assert_eq!(frame(t, b"", 1).0, Err(FramingError::NoResponse));
        assert_eq!(frame(t, b"HTTP/1.1 200 OK\r\nContent-Le", 4).0, Err(FramingError::Truncated));
        assert_eq!(frame(t, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", 4).0, Err(FramingError::Truncated));
        assert_eq!(frame(t, b"NOT HTTP\r\n\r\n", 4).0, Err(FramingError::MalformedHead));
        assert_eq!(
            frame(t, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 4).0,
            Err(FramingError::MalformedChunks)
        );
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 5000));
        assert_eq!(frame(t, &huge, 1000).0, Err(FramingError::HeadTooLarge));
    }
}
