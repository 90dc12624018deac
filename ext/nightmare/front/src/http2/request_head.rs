//! A stream's header list becomes the HTTP/1.1 request head a worker reads
//! (RFC 9113 §8.3): `:method` and `:path` make the request line,
//! `:authority` the Host, cookies are joined into one field (§8.2.3). What
//! HTTP/2 calls malformed (§8.1.1, §8.2) resets the stream; what HTTP/1.1
//! would refuse gets the same status it gets there, from the same rules.

use crate::http::error_response::Rejection;
use crate::request::head::{HttpVersion, RequestHead, check_host, check_target, judge_headers};

/// Why a stream's request is not passed on.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Reset the stream with PROTOCOL_ERROR.
    Malformed(&'static str),
    /// Answer with this status, as for HTTP/1.1.
    Rejected(Rejection),
}

/// Takes fields as the decoder hands them over, then judges the list.
#[derive(Default)]
pub struct FieldCollector {
    method: Option<String>,
    scheme: Option<Vec<u8>>,
    path: Option<String>,
    authority: Option<Vec<u8>>,
    regular_seen: bool,
    fields: Vec<(String, Vec<u8>)>,
    cookies: Vec<u8>,
    malformed: Option<&'static str>,
}

impl FieldCollector {
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        if self.malformed.is_none() {
            self.malformed = self.take(name, value).err();
        }
    }

    fn take(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        if value.iter().any(|b| matches!(b, b'\0' | b'\r' | b'\n')) {
            return Err("a field value holds NUL, CR or LF");
        }
        if value.first().is_some_and(|b| matches!(b, b' ' | b'\t'))
            || value.last().is_some_and(|b| matches!(b, b' ' | b'\t'))
        {
            return Err("a field value starts or ends with whitespace");
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular_seen {
                return Err("a pseudo-header after a regular field");
            }
            let text = || String::from_utf8(value.to_vec()).map_err(|_| "a pseudo-header that is not text");
            let duplicate = match pseudo {
                b"method" => self.method.replace(text()?).is_some(),
                b"path" => self.path.replace(text()?).is_some(),
                b"scheme" => self.scheme.replace(value.to_vec()).is_some(),
                b"authority" => self.authority.replace(value.to_vec()).is_some(),
                _ => return Err("an unknown or response pseudo-header"),
            };
            return if duplicate { Err("a pseudo-header twice") } else { Ok(()) };
        }
        self.regular_seen = true;
        if name.is_empty() || !name.iter().all(|&b| is_lowercase_token_byte(b)) {
            return Err("a field name that is empty, has uppercase or is not a token");
        }
        match name {
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade" => {
                Err("a connection-specific field")
            }
            b"te" if value != b"trailers" => Err("TE other than trailers"),
            b"cookie" => {
                if !self.cookies.is_empty() {
                    self.cookies.extend_from_slice(b"; ");
                }
                self.cookies.extend_from_slice(value);
                Ok(())
            }
            // Checked as a token above, so it is text.
            _ => {
                self.fields.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
                Ok(())
            }
        }
    }

    /// The request head, or why there is none.
    pub fn finish(mut self) -> Result<RequestHead, Refusal> {
        if let Some(why) = self.malformed {
            return Err(Refusal::Malformed(why));
        }
        let Some(method) = self.method else { return Err(Refusal::Malformed("no :method")) };
        if method == "CONNECT" {
            return Err(Refusal::Rejected(Rejection::new(405, "CONNECT is not served")));
        }
        let (Some(path), Some(_)) = (self.path, self.scheme) else {
            return Err(Refusal::Malformed("no :path or no :scheme"));
        };
        if path.is_empty() {
            return Err(Refusal::Malformed("an empty :path"));
        }
        if let Some(authority) = self.authority.filter(|authority| !authority.is_empty()) {
            check_host(&authority).map_err(Refusal::Rejected)?;
            match self.fields.iter().find(|(name, _)| name == "host") {
                Some((_, host)) if *host != authority => {
                    return Err(Refusal::Malformed("Host differs from :authority"));
                }
                Some(_) => {}
                None => self.fields.insert(0, ("host".to_owned(), authority)),
            }
        }
        if !self.cookies.is_empty() {
            self.fields.push(("cookie".to_owned(), self.cookies));
        }
        check_target(&method, &path).map_err(Refusal::Rejected)?;
        let headers: Vec<httparse::Header> =
            self.fields.iter().map(|(name, value)| httparse::Header { name, value }).collect();
        let mut head = judge_headers(method, path, HttpVersion::Http11, &headers).map_err(Refusal::Rejected)?;
        // A stream ends when its response does; the connection stays.
        head.keep_alive = true;
        Ok(head)
    }
}

/// RFC 9110's tchar, without uppercase letters (RFC 9113 §8.2.1).
fn is_lowercase_token_byte(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::head::{BodyFraming, ForwardingFacts};

    fn collect(fields: &[(&str, &str)]) -> Result<RequestHead, Refusal> {
        let mut collector = FieldCollector::default();
        fields.iter().for_each(|(name, value)| collector.add(name.as_bytes(), value.as_bytes()));
        collector.finish()
    }

    fn upstream_head(head: &RequestHead) -> String {
        let mut out = Vec::new();
        let facts = ForwardingFacts { https: true, request_start_usec: 1, forwarded_for: None };
        head.write_upstream_head(&mut out, None, &facts);
        String::from_utf8(out).unwrap()
    }

    const GET: [(&str, &str); 4] =
        [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "/a?b=1")];

    #[test]
    fn a_stream_becomes_the_head_an_http1_request_would_give_the_worker() {
        let fields =
            [&GET[..], &[("accept", "*/*"), ("cookie", "a=1"), ("user-agent", "h2"), ("cookie", "b=2")]].concat();
        let head = collect(&fields).unwrap();
        assert_eq!(
            upstream_head(&head),
            "GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\nuser-agent: h2\r\ncookie: a=1; b=2\r\n\
             X-Forwarded-Proto: https\r\nX-Request-Start: t=1\r\nConnection: close\r\n\r\n"
        );
        let post = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/up"),
            ("host", "example.com"),
            ("content-length", "5"),
        ];
        let head = collect(&post).unwrap();
        assert_eq!((head.framing, head.header("host")), (BodyFraming::Length(5), Some(&b"example.com"[..])));
        let forged =
            [&GET[..], &[("x-forwarded-for", "1.2.3.4"), ("x_forwarded_proto", "http"), ("te", "trailers")]].concat();
        assert!(
            !upstream_head(&collect(&forged).unwrap()).contains("1.2.3.4"),
            "what the front vouches for is its own"
        );
    }

    #[test]
    fn what_http2_calls_malformed_resets_the_stream() {
        let cases: [&[(&str, &str)]; 12] = [
            &[(":method", "GET"), (":scheme", "https"), (":authority", "a")],
            &[(":method", "GET"), (":path", "/"), (":authority", "a")],
            &[(":scheme", "https"), (":path", "/"), (":authority", "a")],
            &[(":method", "GET"), (":scheme", "https"), (":path", ""), (":authority", "a")],
            &[(":method", "GET"), (":method", "GET"), (":scheme", "https"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), (":status", "200")],
            &[(":method", "GET"), (":scheme", "https"), ("accept", "*/*"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("Accept", "*/*")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("connection", "close")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("te", "gzip")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("x", " padded")],
            &[(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/"), ("host", "b")],
        ];
        for fields in cases {
            assert!(matches!(collect(fields), Err(Refusal::Malformed(_))), "{fields:?}");
        }
    }

    #[test]
    fn what_http1_would_refuse_gets_its_status() {
        let status = |fields: &[(&str, &str)]| match collect(fields) {
            Err(Refusal::Rejected(rejection)) => rejection.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(&[(":method", "CONNECT"), (":authority", "a:443")]), 405);
        assert_eq!(status(&[(":method", "GET"), (":scheme", "https"), (":path", "/")]), 400, "no host at all");
        assert_eq!(status(&[(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a b")]), 400);
        assert_eq!(status(&[(":method", "GET"), (":scheme", "https"), (":path", "nope"), (":authority", "a")]), 400);
        let two_lengths = [&GET[..], &[("content-length", "1"), ("content-length", "2")]].concat();
        assert_eq!(status(&two_lengths), 400);
    }
}
