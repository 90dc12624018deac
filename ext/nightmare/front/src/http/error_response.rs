//! Canned responses the front writes itself, when a request never reaches a
//! worker or a worker fails to answer.

/// Why the front answers instead of a worker: the status and a short reason
/// that goes in the body and in the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    /// Seconds a client should wait before trying again (503s for overload).
    pub retry_after: Option<u32>,
    /// The methods a 405 names in its `Allow` header (RFC 9110 15.5.6).
    pub allow: Option<&'static str>,
}

/// What a 503 for overload (a queue full, a wait too long, no room for a
/// body) tells clients about when to come back.
const OVERLOAD_RETRY_AFTER_SECONDS: u32 = 5;

impl Rejection {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        Rejection { status, reason, retry_after: None, allow: None }
    }

    /// A 503 for a passing overload, with `Retry-After`.
    pub const fn overloaded(reason: &'static str) -> Self {
        Rejection::new(503, reason).retry_after(OVERLOAD_RETRY_AFTER_SECONDS)
    }

    pub const fn retry_after(self, seconds: u32) -> Self {
        Rejection { retry_after: Some(seconds), ..self }
    }

    /// A 405 naming the methods that are allowed.
    pub const fn method_not_allowed(reason: &'static str, allow: &'static str) -> Self {
        Rejection { allow: Some(allow), ..Rejection::new(405, reason) }
    }

    /// A full response: the connection is always closed after it, because
    /// after a framing error nothing that follows on the socket can be trusted.
    pub fn to_response(self) -> Vec<u8> {
        let body = format!("{} {}: {}\n", self.status, reason_phrase(self.status), self.reason);
        let allow = self.allow.map(|methods| format!("Allow: {methods}\r\n")).unwrap_or_default();
        let mut bytes = closing_head(self.status, "text/plain", body.len(), &(self.retry_header() + &allow));
        bytes.extend_from_slice(body.as_bytes());
        bytes
    }

    /// The same with the site's own HTML `page` as the body (see
    /// `error_pages`).
    pub fn to_page_response(self, page: &[u8]) -> Vec<u8> {
        let mut bytes = closing_head(self.status, "text/html; charset=utf-8", page.len(), &self.retry_header());
        bytes.extend_from_slice(page);
        bytes
    }

    fn retry_header(self) -> String {
        self.retry_after.map(|seconds| format!("Retry-After: {seconds}\r\n")).unwrap_or_default()
    }

    /// Statuses that blame the client; the rest are the server's fault.
    pub fn is_client_fault(self) -> bool {
        (400..500).contains(&self.status)
    }
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The head of a reply the front writes itself and closes after: `extra`
/// is more header lines, each ending in CRLF.
pub fn closing_head(status: u16, content_type: &str, length: usize, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}\
         Connection: close\r\n\r\n",
        reason_phrase(status)
    )
    .into_bytes()
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_is_framed_and_closes() {
        let response = Rejection::new(413, "body larger than client_max_body_size").to_response();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 413 Content Too Large\r\n"));
        assert!(head.contains("Connection: close"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert_eq!(body, "413 Content Too Large: body larger than client_max_body_size\n");
    }

    #[test]
    fn overload_replies_say_when_to_come_back() {
        let text = String::from_utf8(Rejection::new(503, "busy").retry_after(5).to_response()).unwrap();
        assert!(text.contains("\r\nRetry-After: 5\r\n"), "{text}");
        let plain = String::from_utf8(Rejection::new(503, "busy").to_response()).unwrap();
        assert!(!plain.contains("Retry-After"));
    }

    #[test]
    fn every_status_the_front_answers_has_its_phrase_and_a_405_its_allow() {
        for status in [400, 403, 405, 408, 413, 414, 416, 417, 421, 431, 500, 501, 502, 503, 504, 505] {
            assert_ne!(reason_phrase(status), "Error", "{status}");
        }
        let text = String::from_utf8(Rejection::method_not_allowed("GET only", "GET, HEAD").to_response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && text.contains("\r\nAllow: GET, HEAD\r\n"));
    }

    #[test]
    fn blame_follows_the_status_class() {
        assert!(Rejection::new(408, "slow").is_client_fault());
        assert!(!Rejection::new(502, "worker died").is_client_fault());
    }
}
