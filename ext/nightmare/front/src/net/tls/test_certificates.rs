//! Self-signed certificates made at test time, written as PEM files the
//! way a user's would be, and a client that trusts them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;

pub struct Certificate {
    pub chain_path: PathBuf,
    pub key_path: PathBuf,
    pub leaf: CertificateDer<'static>,
}

impl Certificate {
    /// An ECDSA P-256 certificate for `names`, as `<stem>.pem` and `<stem>.key`.
    pub fn make(dir: &Path, stem: &str, names: &[&str]) -> Certificate {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let made = rcgen::generate_simple_self_signed(names).expect("certificate");
        let chain_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&chain_path, made.cert.pem()).unwrap();
        std::fs::write(&key_path, made.signing_key.serialize_pem()).unwrap();
        Certificate { chain_path, key_path, leaf: made.cert.der().clone() }
    }

    /// A client configuration that trusts this certificate alone.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.leaf.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    super::crypto_provider()
}
