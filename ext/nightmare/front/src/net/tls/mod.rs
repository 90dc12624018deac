//! HTTPS in the front, with rustls: what an `ssl` block in unicorn.conf.rb
//! says (`TlsSettings`), the server configuration made from it, and the
//! `TlsContext` its listeners accept with, which a reload (HUP) swaps
//! without touching a connection already open.

pub mod certificates;
pub mod pem;
pub mod provider;
pub mod stream;
#[cfg(test)]
pub mod test_certificates;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::ServerSessionMemoryCache;
use rustls::version::{TLS12, TLS13};

use crate::acme::{AcmeSettings, AcmeStore};
pub use certificates::{ACME_TLS_ALPN, CertificateChooser, CertificatePair};
pub use provider::crypto_provider;
pub use stream::TlsStream;

/// Sessions remembered for resumption by session id (TLS 1.2) across the
/// front's threads; TLS 1.3 resumes with stateless tickets instead.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// Only what rustls speaks: there is no TLS 1.0 or 1.1 to switch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// One `ssl do ... end` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The first pair is the default, for clients that send no name.
    pub certificates: Vec<CertificatePair>,
    pub versions: Vec<TlsVersion>,
    /// The server's cipher order over the client's (ssl_prefer_server_ciphers).
    pub prefer_server_ciphers: bool,
    /// HTTP/2 is offered (ALPN h2); `http2 false` in the block turns it off.
    pub http2: bool,
    /// Plain listeners redirect to this block's port (`ssl_redirect true`).
    pub redirect: bool,
    /// Certificates ordered from an ACME issuer (`acme_certificate`).
    pub acme: Option<AcmeSettings>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            certificates: Vec::new(),
            versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            prefer_server_ciphers: false,
            http2: true,
            redirect: false,
            acme: None,
        }
    }
}

/// Why a configuration could not be made, naming the directive and, for
/// a file, the file, as the config file's author wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSetupError {
    directive: &'static str,
    file: Option<PathBuf>,
    message: String,
}

impl TlsSetupError {
    pub fn file(directive: &'static str, file: &Path, message: impl Into<String>) -> Self {
        TlsSetupError { directive, file: Some(file.to_owned()), message: message.into() }
    }

    pub fn setting(directive: &'static str, message: impl Into<String>) -> Self {
        TlsSetupError { directive, file: None, message: message.into() }
    }
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{} {} {}", self.directive, file.display(), self.message),
            None => write!(f, "{}: {}", self.directive, self.message),
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// The server configuration for one `ssl` block; `previous`, on a reload,
/// lends its session cache and ticket keys, so clients resume across it.
/// `acme_store` publishes the certificates of the block's ACME names.
pub fn server_config(
    settings: &TlsSettings,
    previous: Option<&ServerConfig>,
    acme_store: &Arc<AcmeStore>,
) -> Result<ServerConfig, TlsSetupError> {
    let provider = crypto_provider();
    let acme = settings.acme.as_ref().map(|acme| (Arc::clone(acme_store), acme.certificates.as_slice()));
    let chooser = CertificateChooser::load(&settings.certificates, &provider, acme)?;
    let versions: Vec<_> = settings
        .versions
        .iter()
        .map(|version| match version {
            TlsVersion::Tls12 => &TLS12,
            TlsVersion::Tls13 => &TLS13,
        })
        .collect();
    if versions.is_empty() {
        return Err(TlsSetupError::setting("ssl_protocols", "names no protocol (use TLSv1.2 and/or TLSv1.3)"));
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|error| TlsSetupError::setting("ssl_protocols", error.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(chooser));
    // h2 first, as clients prefer it; a client offering neither still gets
    // HTTP/1.1 (no ALPN answer).
    config.alpn_protocols =
        if settings.http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    if settings.acme.is_some() {
        // Only an issuer's validator offers it, and offers nothing else.
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    config.ignore_client_order = settings.prefer_server_ciphers;
    match previous {
        Some(previous) => {
            config.session_storage = Arc::clone(&previous.session_storage);
            config.ticketer = Arc::clone(&previous.ticketer);
        }
        None => {
            config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
            config.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|error| TlsSetupError::setting("ssl", format!("no session ticket keys: {error}")))?;
        }
    }
    Ok(config)
}

/// What a TLS listener accepts with. A reload replaces the configuration
/// for connections accepted afterwards; open ones keep theirs.
#[derive(Debug)]
pub struct TlsContext {
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsContext {
    pub fn new(settings: &TlsSettings, acme_store: &Arc<AcmeStore>) -> Result<TlsContext, TlsSetupError> {
        Ok(TlsContext { config: RwLock::new(Arc::new(server_config(settings, None, acme_store)?)) })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// For connections accepted from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.config.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }
}

/// Checks that `settings` make a working configuration, as the master does
/// when it loads the config file: every file is read and parsed.
pub fn check(settings: &TlsSettings) -> Result<(), TlsSetupError> {
    if let Some(ca_file) = settings.acme.as_ref().and_then(|acme| acme.ca_file.as_deref()) {
        crate::acme::https_client::HttpsClient::new(Some(ca_file))
            .map_err(|error| TlsSetupError::setting("acme_issuer", error))?;
    }
    server_config(settings, None, &Arc::default()).map(drop)
}
