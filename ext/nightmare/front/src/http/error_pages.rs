//! The pages a site shows for the front's own 502, 503 and 504 (workers
//! booting, a deploy, a queue too long, an upstream gone), as nginx's
//! `error_page` and Thruster's `BAD_GATEWAY_PAGE`. Read when the config is
//! loaded, so serving one costs no disk access under the overload that
//! makes them.

use std::sync::Arc;

use super::error_response::Rejection;

/// The statuses the front answers itself for want of a worker.
pub const STATUSES: [u16; 3] = [502, 503, 504];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages {
    pages: Vec<(u16, Arc<[u8]>)>,
}

impl ErrorPages {
    /// `pages` by status; other statuses than `STATUSES` are refused.
    pub fn new(pages: Vec<(u16, Vec<u8>)>) -> Result<Self, String> {
        let mut checked = Vec::with_capacity(pages.len());
        for (status, page) in pages {
            if !STATUSES.contains(&status) {
                return Err(format!("error_page {status}: the front answers only 502, 503 and 504 itself"));
            }
            checked.push((status, Arc::from(page)));
        }
        Ok(ErrorPages { pages: checked })
    }

    /// The reply to a client that asked for HTML (`html`), for `rejection`:
    /// the site's page when it has one for that status, else the plain one.
    pub fn reply(&self, rejection: Rejection, html: bool) -> Vec<u8> {
        let page = self.pages.iter().find(|(status, _)| *status == rejection.status).map(|(_, page)| page);
        match page {
            Some(page) if html => rejection.to_page_response(page),
            _ => rejection.to_response(),
        }
    }
}

/// A browser's request: not HEAD, and `Accept` names HTML (curl's `*/*`
/// and API clients get the plain reply they can read).
pub fn wants_html(method: &str, accept: Option<&[u8]>) -> bool {
    method != "HEAD"
        && accept.is_some_and(|accept| accept.windows(9).any(|window| window.eq_ignore_ascii_case(b"text/html")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_gets_the_page_with_the_status_and_retry_after_and_others_the_plain_reply() {
        let pages = ErrorPages::new(vec![(503, b"<h1>Back soon</h1>".to_vec())]).unwrap();
        let busy = Rejection::overloaded("too many requests wait for a worker");
        let page = String::from_utf8(pages.reply(busy, true)).unwrap();
        assert!(page.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{page}");
        assert!(
            page.contains("\r\nContent-Type: text/html; charset=utf-8\r\n") && page.contains("\r\nRetry-After: 5\r\n")
        );
        assert!(page.ends_with("\r\n\r\n<h1>Back soon</h1>") && page.contains("\r\nContent-Length: 18\r\n"), "{page}");
        let plain = String::from_utf8(pages.reply(busy, false)).unwrap();
        assert!(plain.contains("text/plain"), "not asked for HTML");
        let other = String::from_utf8(pages.reply(Rejection::new(502, "gone"), true)).unwrap();
        assert!(other.contains("text/plain"), "no page for 502");
    }

    #[test]
    fn html_is_what_browsers_ask_for_not_head_or_any() {
        assert!(wants_html("GET", Some(b"text/html,application/xhtml+xml,*/*;q=0.8")));
        assert!(!wants_html("HEAD", Some(b"text/html")));
        assert!(!wants_html("GET", Some(b"*/*")));
        assert!(!wants_html("GET", None));
    }

    #[test]
    fn only_the_fronts_own_statuses_take_a_page() {
        assert!(ErrorPages::new(vec![(404, Vec::new())]).unwrap_err().contains("only 502, 503 and 504"));
    }
}
