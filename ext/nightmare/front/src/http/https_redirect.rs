//! What a plain listener answers when clients belong on HTTPS
//! (`ssl_redirect`): 308 to the same host and target on the HTTPS port.
//! 308 rather than 301: a POST stays a POST (RFC 9110 §15.4.9).

use super::error_response::{Rejection, closing_head};

/// The whole response; 400 for a request with no Host to send it to (an
/// HTTP/1.0 client that named none).
pub fn response(host: Option<&[u8]>, target: &str, head_only: bool, port: u16) -> Result<Vec<u8>, Rejection> {
    let no_host = Rejection::new(400, "no Host header to redirect to HTTPS with (ssl_redirect)");
    // The parser checked the Host: a name or address and a port, nothing else.
    let host = host.and_then(|host| std::str::from_utf8(host).ok()).filter(|host| !host.is_empty()).ok_or(no_host)?;
    let name = without_port(host);
    let target = if target.starts_with('/') { target } else { "/" };
    let location =
        if port == 443 { format!("https://{name}{target}") } else { format!("https://{name}:{port}{target}") };
    let body = format!("308 Permanent Redirect: {location}\n");
    let mut bytes = closing_head(308, "text/plain", body.len(), &format!("Location: {location}\r\n"));
    if !head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    Ok(bytes)
}

fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |close| &host[..=close]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: &str, target: &str, port: u16) -> String {
        let bytes = response(Some(host.as_bytes()), target, false, port).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 308 Permanent Redirect\r\n"), "{text}");
        text.lines().find_map(|line| line.strip_prefix("Location: ")).unwrap().to_owned()
    }

    #[test]
    fn the_same_host_and_target_on_the_https_port_which_443_leaves_out() {
        assert_eq!(location("example.com", "/a/b?c=d", 443), "https://example.com/a/b?c=d");
        assert_eq!(location("example.com:80", "/", 8443), "https://example.com:8443/");
        assert_eq!(location("[2001:db8::1]:8080", "/x", 443), "https://[2001:db8::1]/x");
        assert_eq!(location("[::1]", "/x", 443), "https://[::1]/x");
        assert_eq!(location("example.com", "*", 443), "https://example.com/", "OPTIONS * goes to the root");
    }

    #[test]
    fn head_gets_no_body_and_a_request_without_host_gets_400() {
        let head = String::from_utf8(response(Some(b"a.test"), "/", true, 443).unwrap()).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: "), "{head}");
        assert_eq!(response(None, "/", false, 443).unwrap_err().status, 400);
    }
}
