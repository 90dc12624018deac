//! Certificates that obtain and renew themselves (ACME, RFC 8555), inside
//! the front: the process that answers the issuer's challenges and serves
//! the certificates is the one that orders them, so nothing crosses a
//! process boundary and embedded and standalone modes share one client.
//! A thread of its own does the ordering with blocking I/O; the event
//! loops only read what it publishes (`AcmeStore`).

pub mod base64url;
pub mod certificate_dates;
pub mod https_client;
pub mod jws;
pub mod manager;
pub mod protocol;
pub mod state_files;
pub mod store;

use std::path::PathBuf;

pub use manager::AcmeManager;
pub use protocol::ChallengeKind;
pub use store::AcmeStore;

/// Let's Encrypt's production directory, the default issuer.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// What an ssl block's `acme_issuer` and `acme_certificate` lines say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    pub directory: String,
    /// `mailto:` addresses the issuer may write to about expiry or revocation.
    pub contact: Vec<String>,
    /// Account key and certificates, kept across restarts.
    pub state_path: PathBuf,
    pub accept_terms_of_service: bool,
    /// Trust this CA (PEM) for the issuer's own HTTPS instead of Mozilla's roots.
    pub ca_file: Option<PathBuf>,
    /// One entry per `acme_certificate` line: one certificate covering its names.
    pub certificates: Vec<Vec<String>>,
    /// Only this challenge (`challenge:`); both when `None`.
    pub challenge: Option<ChallengeKind>,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        AcmeSettings {
            directory: LETS_ENCRYPT.to_owned(),
            contact: Vec::new(),
            state_path: PathBuf::from("/var/lib/nightmare/acme"),
            accept_terms_of_service: false,
            ca_file: None,
            certificates: Vec::new(),
            challenge: None,
        }
    }
}

/// How the issuer can reach the front to check it holds a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengeRoutes {
    /// A plain listener: HTTP-01 on port 80.
    pub http: bool,
    /// A TLS listener: TLS-ALPN-01 on port 443.
    pub tls_alpn: bool,
}

impl ChallengeRoutes {
    /// The routes the listeners offer, narrowed to the one challenge the
    /// settings ask for, if they ask for one.
    pub fn narrowed(self, challenge: Option<ChallengeKind>) -> ChallengeRoutes {
        match challenge {
            None => self,
            Some(ChallengeKind::Http01) => ChallengeRoutes { tls_alpn: false, ..self },
            Some(ChallengeKind::TlsAlpn01) => ChallengeRoutes { http: false, ..self },
        }
    }
}
