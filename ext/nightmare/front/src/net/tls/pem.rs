//! A certificate chain and its key, from PEM, checked against each other:
//! what `ssl_certificate` files and ACME's stored certificates both load
//! by. A leaf of `net::tls`, so ACME can use it without the TLS settings.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a chain and a key in PEM do not make a certificate to serve.
#[derive(Debug)]
pub enum PemProblem {
    UnreadableChain(String),
    NoCertificate,
    BadLeaf(String),
    NoKey,
    KeyMismatch,
    Unusable(String),
}

impl std::fmt::Display for PemProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemProblem::UnreadableChain(error) => write!(f, "unreadable certificate PEM: {error}"),
            PemProblem::NoCertificate => f.write_str("no certificate in the chain"),
            PemProblem::BadLeaf(error) => write!(f, "not a valid certificate: {error}"),
            PemProblem::NoKey => f.write_str("no private key in the key PEM"),
            PemProblem::KeyMismatch => f.write_str("the key is not the certificate's"),
            PemProblem::Unusable(error) => write!(f, "the key cannot be used: {error}"),
        }
    }
}

/// A chain (leaf first) and its key, both PEM, checked against each other,
/// and the lower-case DNS names the certificate is valid for: what
/// `ssl_certificate` files and ACME's stored certificates both load by.
pub fn certified_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Vec<String>), PemProblem> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| PemProblem::UnreadableChain(error.to_string()))?;
    let leaf = chain.first().ok_or(PemProblem::NoCertificate)?;
    let names = webpki::EndEntityCert::try_from(leaf)
        .map_err(|error| PemProblem::BadLeaf(error.to_string()))?
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| PemProblem::NoKey)?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => PemProblem::KeyMismatch,
        other => PemProblem::Unusable(other.to_string()),
    })?;
    Ok((Arc::new(certified), names))
}
