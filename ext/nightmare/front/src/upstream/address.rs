//! Where an upstream listens, as nginx's `server` directive names it:
//! `unix:/path/to.sock`, `10.0.0.2:8080`, `[2001:db8::2]:8080`, or
//! `app-2.internal:8080` (a name is resolved when the config is read, and
//! again on HUP, each of its addresses a server of its own, as in nginx).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamAddress {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            UpstreamAddress::Tcp(address) => address.fmt(f),
        }
    }
}

impl UpstreamAddress {
    /// Every address `text` names; a name may resolve to several.
    pub fn resolve(text: &str) -> Result<Vec<UpstreamAddress>, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "upstream {text:?}: a UNIX socket needs an absolute path, like \"unix:/run/app.sock\""
                ));
            }
            return Ok(vec![UpstreamAddress::Unix(PathBuf::from(path))]);
        }
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Ok(vec![UpstreamAddress::Tcp(address)]);
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("upstream {text:?}: give host:port (\"10.0.0.2:8080\") or \"unix:/path\""));
        };
        if port.parse::<u16>().is_err() || host.is_empty() || host.contains(['/', ' ', '[', ']']) {
            return Err(format!("upstream {text:?}: give host:port (\"10.0.0.2:8080\") or \"unix:/path\""));
        }
        let resolved = (host, port.parse::<u16>().unwrap_or(0))
            .to_socket_addrs()
            .map_err(|error| format!("upstream {text:?}: cannot resolve {host}: {error}"))?;
        let mut addresses: Vec<UpstreamAddress> = Vec::new();
        for address in resolved.map(UpstreamAddress::Tcp) {
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        if addresses.is_empty() {
            return Err(format!("upstream {text:?}: {host} has no address"));
        }
        Ok(addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_addresses_and_names_read_as_nginx_names_them() {
        assert_eq!(
            UpstreamAddress::resolve("unix:/run/app.sock"),
            Ok(vec![UpstreamAddress::Unix("/run/app.sock".into())])
        );
        assert_eq!(
            UpstreamAddress::resolve("10.0.0.2:8080"),
            Ok(vec![UpstreamAddress::Tcp("10.0.0.2:8080".parse().unwrap())])
        );
        assert_eq!(
            UpstreamAddress::resolve("[2001:db8::2]:8080"),
            Ok(vec![UpstreamAddress::Tcp("[2001:db8::2]:8080".parse().unwrap())])
        );
        let local = UpstreamAddress::resolve("localhost:8080").unwrap();
        assert!(local.contains(&UpstreamAddress::Tcp("127.0.0.1:8080".parse().unwrap())), "{local:?}");
        assert_eq!(UpstreamAddress::Unix("/a.sock".into()).to_string(), "unix:/a.sock");
    }

    #[test]
    fn what_is_no_address_is_refused_with_the_forms_that_are() {
        for bad in ["unix:run/app.sock", "10.0.0.2", "10.0.0.2:http", ":8080", "host:99999", "a b:80"] {
            let message = UpstreamAddress::resolve(bad).unwrap_err();
            assert!(message.starts_with(&format!("upstream {bad:?}")), "{message}");
        }
        assert!(UpstreamAddress::resolve("no-such-host.invalid:80").unwrap_err().contains("cannot resolve"));
    }
}
