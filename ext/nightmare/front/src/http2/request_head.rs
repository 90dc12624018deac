//! A stream's header list becomes the HTTP/1.1 request its connection reads
//! (RFC 9113 §8.3): `:method` and `:path` make the request line,
//! `:authority` the Host, cookies are joined into one field (§8.2.3). What
//! HTTP/2 calls malformed (§8.1.1, §8.2) resets the stream. The rest is
//! left to the HTTP/1.1 rules the stream's connection applies as for any
//! client (a bad Host, two Content-Lengths, a forged X-Forwarded-For), so
//! they are not written twice. Nothing with CR, LF or NUL gets this far,
//! so nothing here can split the head it writes.

use crate::request::head::parse_content_length;

/// A stream's request as its connection will read it.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamRequest {
    pub head: Vec<u8>,
    /// What the request announced; its DATA must add up to it.
    pub content_length: Option<u64>,
    /// The body follows without a length: DATA goes to the connection as
    /// chunks.
    pub chunked: bool,
    pub head_request: bool,
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

    /// The request, or why the stream is malformed. `body_follows` is
    /// false when HEADERS ended the stream.
    pub fn finish(self, body_follows: bool) -> Result<StreamRequest, &'static str> {
        if let Some(why) = self.malformed {
            return Err(why);
        }
        let Some(method) = self.method else { return Err("no :method") };
        // CONNECT has no :path; it reaches the connection as HTTP/1.1's
        // CONNECT would, and is refused there.
        let path = match (self.path, self.scheme) {
            (Some(path), Some(_)) if !path.is_empty() => path,
            (None, None) if method == "CONNECT" => {
                String::from_utf8_lossy(self.authority.as_deref().unwrap_or_default()).into_owned()
            }
            _ => return Err("no :path or :scheme, or an empty :path"),
        };
        let host = self.fields.iter().find(|(name, _)| name == "host").map(|(_, value)| value);
        if let (Some(authority), Some(host)) = (&self.authority, host) {
            if authority != host {
                return Err("Host differs from :authority");
            }
        }
        let lengths: Vec<&[u8]> = self
            .fields
            .iter()
            .filter(|(name, _)| name == "content-length")
            .map(|(_, value)| value.as_slice())
            .collect();
        let content_length = match lengths.as_slice() {
            [] => None,
            [value] => Some(parse_content_length(value).map_err(|_| "a content-length that is not a number")?),
            _ => return Err("content-length twice"),
        };
        if !body_follows && content_length.is_some_and(|length| length > 0) {
            return Err("a content-length and no DATA");
        }
        let chunked = body_follows && content_length.is_none();
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let mut line = |name: &[u8], value: &[u8]| {
            head.extend_from_slice(name);
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        };
        if let (Some(authority), None) = (&self.authority, host) {
            line(b"host", authority);
        }
        self.fields.iter().for_each(|(name, value)| line(name.as_bytes(), value));
        if !self.cookies.is_empty() {
            line(b"cookie", &self.cookies);
        }
        if chunked {
            line(b"transfer-encoding", b"chunked");
        }
        // One request per stream: the connection ends with its response.
        line(b"connection", b"close");
        head.extend_from_slice(b"\r\n");
        Ok(StreamRequest { head, content_length, chunked, head_request: method == "HEAD" })
    }
}

/// RFC 9110's tchar, without uppercase letters (RFC 9113 §8.2.1).
fn is_lowercase_token_byte(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(fields: &[(&str, &str)], body_follows: bool) -> Result<StreamRequest, &'static str> {
        let mut collector = FieldCollector::default();
        fields.iter().for_each(|(name, value)| collector.add(name.as_bytes(), value.as_bytes()));
        collector.finish(body_follows)
    }

    fn head(fields: &[(&str, &str)], body_follows: bool) -> String {
        String::from_utf8(collect(fields, body_follows).unwrap().head).unwrap()
    }

    const GET: [(&str, &str); 4] =
        [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "/a?b=1")];

    #[test]
    fn a_stream_becomes_an_http1_request_for_one_response() {
        let fields =
            [&GET[..], &[("accept", "*/*"), ("cookie", "a=1"), ("user-agent", "h2"), ("cookie", "b=2")]].concat();
        assert_eq!(
            head(&fields, false),
            "GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\nuser-agent: h2\r\ncookie: a=1; b=2\r\nconnection: close\r\n\r\n"
        );
        let post = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/up"),
            ("host", "example.com"),
            ("content-length", "5"),
        ];
        let request = collect(&post, true).unwrap();
        assert_eq!((request.content_length, request.chunked, request.head_request), (Some(5), false, false));
        assert!(
            String::from_utf8(request.head)
                .unwrap()
                .starts_with("POST /up HTTP/1.1\r\nhost: example.com\r\ncontent-length: 5\r\n")
        );
        let unsized_upload = [(":method", "PUT"), (":scheme", "https"), (":path", "/up"), (":authority", "a")];
        assert!(head(&unsized_upload, true).ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"));
        assert!(
            collect(&[(":method", "HEAD"), (":scheme", "http"), (":path", "/"), (":authority", "a")], false)
                .unwrap()
                .head_request
        );
        assert!(
            head(&[(":method", "CONNECT"), (":authority", "a:443")], false).starts_with("CONNECT a:443 HTTP/1.1\r\n")
        );
    }

    #[test]
    fn what_http2_calls_malformed_resets_the_stream() {
        let cases: [&[(&str, &str)]; 15] = [
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
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("x", "a\r\nb: c")],
            &[(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/"), ("host", "b")],
            &[
                (":method", "POST"),
                (":scheme", "https"),
                (":path", "/"),
                ("content-length", "1"),
                ("content-length", "1"),
            ],
            &[(":method", "POST"), (":scheme", "https"), (":path", "/"), ("content-length", "x")],
        ];
        for fields in cases {
            assert!(collect(fields, true).is_err(), "{fields:?}");
        }
        let announced_but_none = [(":method", "POST"), (":scheme", "https"), (":path", "/"), ("content-length", "3")];
        assert_eq!(collect(&announced_but_none, false), Err("a content-length and no DATA"));
    }
}
