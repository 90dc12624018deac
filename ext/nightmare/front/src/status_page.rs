//! The status page the front serves itself (`status_path`): its figures
//! as JSON, or as nginx's stub_status page with `?format=nginx`, to the
//! addresses the config allows and a 403 to any other. The page never
//! reaches a worker, so it answers while every worker is busy, which is
//! when it is wanted. The figures are the caller's to render (`stats`):
//! the config holds this page, and need not know the front's figures.

use std::net::IpAddr;

use crate::http::error_response::Rejection;
use crate::net::client_address::ClientAddress;
use crate::request::head::RequestHead;

/// What the `status_path` directive says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusPage {
    path: String,
    allow: Vec<AddressRange>,
}

/// An address or a network (`10.0.0.0/8`, `2001:db8::/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

/// The page's two forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFormat {
    Json,
    /// nginx's stub_status text, for the monitoring that reads it.
    StubStatus,
}

/// What the front answers for the page.
#[derive(Debug, PartialEq, Eq)]
pub enum StatusReply {
    Page { status: u16, bytes: Vec<u8> },
    Refused(Rejection),
}

impl AddressRange {
    pub fn parse(text: &str) -> Result<AddressRange, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr =
            address.parse().map_err(|_| format!("status_path allow: {text:?} is not an IP address or network"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("status_path allow: {text:?} has a prefix length over {bits}"))?,
        };
        Ok(AddressRange { network, prefix })
    }

    fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                same_prefix(u128::from(u32::from(network)) << 96, u128::from(u32::from(address)) << 96, self.prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                same_prefix(u128::from(network), u128::from(address), self.prefix)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, prefix: u8) -> bool {
    prefix == 0 || (a ^ b) >> (128 - u32::from(prefix)) == 0
}

impl StatusPage {
    /// `path` as a request names it; `allow` the addresses and networks
    /// that may see it.
    pub fn new(path: &str, allow: &[String]) -> Result<StatusPage, String> {
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(format!("status_path {path:?}: give a path like \"/_nightmare\""));
        }
        let allow = allow.iter().map(|text| AddressRange::parse(text)).collect::<Result<_, _>>()?;
        Ok(StatusPage { path: path.to_owned(), allow })
    }

    /// The request asks for this page.
    pub fn is_for(&self, head: &RequestHead) -> bool {
        let path = head.target.split_once('?').map_or(head.target.as_str(), |(path, _)| path);
        path == self.path
    }

    /// The page for `peer`, its body rendered by `body` in the form asked
    /// (only for an address allowed to see it).
    pub fn answer(
        &self,
        head: &RequestHead,
        peer: &ClientAddress,
        body: impl FnOnce(PageFormat) -> String,
    ) -> StatusReply {
        // Clients of a UNIX-socket listener are on this machine.
        let address = match peer {
            ClientAddress::Ip(address) => address.ip(),
            ClientAddress::Local => IpAddr::from([127, 0, 0, 1]),
        };
        if !self.allow.iter().any(|range| range.contains(address)) {
            return StatusReply::Refused(Rejection::new(
                403,
                "the front's status page is open only to the addresses status_path allows, not to this one",
            ));
        }
        if head.method != "GET" && head.method != "HEAD" {
            return StatusReply::Refused(Rejection::method_not_allowed(
                "the front's status page takes GET and HEAD only",
                "GET, HEAD",
            ));
        }
        let nginx = head.target.split_once('?').is_some_and(|(_, query)| query.split('&').any(|q| q == "format=nginx"));
        let (body, content_type) = if nginx {
            (body(PageFormat::StubStatus), "text/plain")
        } else {
            (body(PageFormat::Json), "application/json")
        };
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head.is_head_method() {
            bytes.extend_from_slice(body.as_bytes());
        }
        StatusReply::Page { status: 200, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::head::{HeadLimits, HeadReader};

    fn request(raw: &str) -> RequestHead {
        let mut reader = HeadReader::default();
        reader.push(raw.as_bytes());
        reader.poll(&HeadLimits::default()).unwrap().expect("complete").0
    }

    fn peer(text: &str) -> ClientAddress {
        ClientAddress::Ip(format!("{text}:40000").parse().unwrap())
    }

    fn figures(format: PageFormat) -> String {
        match format {
            PageFormat::Json => "{\"writing\":1,\"waiting\":1}\n".to_owned(),
            PageFormat::StubStatus => "Reading: 0 Writing: 1 Waiting: 1\n".to_owned(),
        }
    }

    fn page() -> StatusPage {
        StatusPage::new("/_nightmare", &["127.0.0.1".into(), "10.0.0.0/8".into(), "2001:db8::/32".into()]).unwrap()
    }

    #[test]
    fn ranges_hold_their_networks_and_nothing_else() {
        let net = |text| AddressRange::parse(text).unwrap();
        assert!(net("10.0.0.0/8").contains("10.200.3.4".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(net("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()), "IPv4-mapped is IPv4");
        assert!(!net("127.0.0.1").contains("127.0.0.2".parse().unwrap()));
        assert!(net("2001:db8::/32").contains("2001:db8:1::9".parse().unwrap()));
        assert!(!net("2001:db8::/32").contains("10.0.0.1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("192.0.2.1".parse().unwrap()));
        assert!(AddressRange::parse("10.0.0.0/33").is_err());
        assert!(AddressRange::parse("localhost").is_err());
    }

    #[test]
    fn the_page_is_json_or_stub_status_for_allowed_addresses_only() {
        let page = page();
        let head = request("GET /_nightmare HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(page.is_for(&head));
        assert!(!page.is_for(&request("GET /_nightmare/x HTTP/1.1\r\nHost: x\r\n\r\n")));
        let StatusReply::Page { status: 200, bytes } = page.answer(&head, &peer("10.1.2.3"), figures) else {
            panic!("allowed")
        };
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("Content-Type: application/json"));
        assert!(text.ends_with("\"writing\":1,\"waiting\":1}\n"), "{text}");

        let nginx = request("GET /_nightmare?format=nginx HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(page.is_for(&nginx));
        let StatusReply::Page { bytes, .. } = page.answer(&nginx, &ClientAddress::Local, figures) else {
            panic!("a UNIX-socket client is local")
        };
        assert!(String::from_utf8(bytes).unwrap().ends_with("Reading: 0 Writing: 1 Waiting: 1\n"));

        let refused =
            page.answer(&head, &peer("192.0.2.1"), |_| unreachable!("figures are not gathered for strangers"));
        assert!(matches!(refused, StatusReply::Refused(Rejection { status: 403, .. })));
        let post = request("POST /_nightmare HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(
            page.answer(&post, &peer("127.0.0.1"), figures),
            StatusReply::Refused(Rejection { status: 405, .. })
        ));
    }

    #[test]
    fn bad_paths_are_named() {
        assert!(StatusPage::new("status", &[]).unwrap_err().contains("give a path like"));
        assert!(StatusPage::new("/s?x", &[]).is_err());
    }
}
