//! HTTP-01 (RFC 8555 §8.3): the issuer fetches
//! `/.well-known/acme-challenge/<token>` over plain HTTP and expects the
//! key authorization. The front answers the tokens of its own orders
//! before the redirect to HTTPS, try_files and the app; any other token
//! goes on to them (a webroot the app's own ACME client writes to).

use super::error_response::closing_head;

const PREFIX: &str = "/.well-known/acme-challenge/";

/// The token a request asks for, if it asks for one.
pub fn token(target: &str) -> Option<&str> {
    let token = target.strip_prefix(PREFIX)?;
    let token = token.split_once('?').map_or(token, |(token, _)| token);
    (!token.is_empty()).then_some(token)
}

/// A challenge path, which `ssl_redirect` leaves on plain HTTP: an issuer
/// follows redirects, but an app's own client may not expect them.
pub fn is_challenge(target: &str) -> bool {
    target.starts_with(PREFIX)
}

pub fn response(key_authorization: &str, head_only: bool) -> Vec<u8> {
    let mut bytes = closing_head(200, "application/octet-stream", key_authorization.len(), "");
    if !head_only {
        bytes.extend_from_slice(key_authorization.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_challenge_path_only() {
        assert_eq!(token("/.well-known/acme-challenge/abc-_1"), Some("abc-_1"));
        assert_eq!(token("/.well-known/acme-challenge/abc?x=1"), Some("abc"));
        assert_eq!(token("/.well-known/acme-challenge/"), None);
        assert_eq!(token("/.well-known/other/abc"), None);
        assert!(is_challenge("/.well-known/acme-challenge/"));
        assert!(!is_challenge("/index.html"));
    }

    #[test]
    fn the_answer_is_the_key_authorization_alone() {
        let text = String::from_utf8(response("tok.thumb", false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 9\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\ntok.thumb"), "{text}");
        assert!(String::from_utf8(response("tok.thumb", true)).unwrap().ends_with("\r\n\r\n"));
    }
}
