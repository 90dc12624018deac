//! What the config says of the upstreams: the servers requests go to (the
//! primaries, then backups that take a request only when the primaries
//! fail or are busy), their nginx-style options, and a map from Host names
//! to groups of their own. Read once; the pool runs them.

use std::time::Duration;

use crate::upstream::address::UpstreamAddress;

/// One server, as nginx's `server` line in an `upstream` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    pub address: UpstreamAddress,
    /// Takes requests only when every primary fails or is busy.
    pub backup: bool,
    /// Requests in flight to it at most (nginx's max_conns); 0: no cap.
    pub max_conns: usize,
    /// Failures within `fail_timeout` that take it out of use for
    /// `fail_timeout` (nginx's max_fails); 0 never does.
    pub max_fails: u32,
    /// 0: a failure never takes it out of use, the recipe's setting.
    pub fail_timeout: Duration,
    /// Requests start with a PROXY protocol v2 header carrying the
    /// client's address (the remote Unicorn's listener reads it).
    pub proxy_protocol: bool,
}

impl ServerSpec {
    pub fn new(address: UpstreamAddress) -> ServerSpec {
        ServerSpec {
            address,
            backup: false,
            max_conns: 0,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            proxy_protocol: false,
        }
    }
}

/// Which requests a group of servers takes, by their Host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `admin.example.com`
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!("map {text:?}: give a host name, like \"admin.example.com\" or \"*.example.com\""));
        }
        Ok(match lower.strip_prefix("*.") {
            Some(suffix) => HostPattern::Subdomains(format!(".{suffix}")),
            None => HostPattern::Exact(lower),
        })
    }

    /// Whether `host` (a Host header's name, without its port, any case) is one of these.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// Requests whose Host matches go to these servers instead of the default ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub pattern: HostPattern,
    pub servers: Vec<ServerSpec>,
}

/// Every upstream the config names (beside the master's own workers, in
/// embedded mode, which are the default group's first primary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// The default group: `upstream` primaries and `backup` servers.
    pub servers: Vec<ServerSpec>,
    pub routes: Vec<HostRoute>,
}

/// The Host header's name: no port, no trailing dot, for matching.
pub fn host_name(host: &[u8]) -> Option<&str> {
    let host = std::str::from_utf8(host).ok()?;
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    Some(name.strip_suffix('.').unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_and_subdomains_in_any_case() {
        let exact = HostPattern::parse("Admin.Example.com").unwrap();
        assert!(exact.matches("admin.example.com") && exact.matches("ADMIN.EXAMPLE.COM"));
        assert!(!exact.matches("x.admin.example.com"));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com") && wild.matches("a.b.EXAMPLE.com"));
        assert!(!wild.matches("example.com"), "the bare domain is not a subdomain");
        assert!(!wild.matches("badexample.com"));
        for bad in ["", "*.", "a..b", "a b", "*.*.x", "http://x"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names_lose_port_and_trailing_dot() {
        assert_eq!(host_name(b"example.com:8080"), Some("example.com"));
        assert_eq!(host_name(b"example.com."), Some("example.com"));
        assert_eq!(host_name(b"[::1]:80"), Some("[::1]"));
        assert_eq!(host_name(b"\xff"), None);
    }
}
