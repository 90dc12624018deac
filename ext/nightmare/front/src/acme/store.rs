//! What the ACME thread publishes and the event loops read: the
//! certificate each name is served with now (issued, or temporary until
//! then), and the answers to the issuer's challenges in flight. A write
//! swaps one `Arc`; a handshake already under way keeps the one it took,
//! so a renewal drops no connection.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;

use super::certificate_dates::{self, Validity};
use crate::net::tls::pem::certified_from_pem;

#[derive(Debug, Default)]
pub struct AcmeStore {
    certificates: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01: token to key authorization.
    http_tokens: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: name to its validation certificate.
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl AcmeStore {
    /// Serves `names` with `key` from the next handshake on.
    pub fn install(&self, names: &[String], key: &Arc<CertifiedKey>) {
        let mut certificates = write(&self.certificates);
        for name in names {
            certificates.insert(name.to_ascii_lowercase(), Arc::clone(key));
        }
    }

    pub fn certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        read(&self.certificates).get(name).cloned()
    }

    pub fn arm_http(&self, token: &str, key_authorization: &str) {
        write(&self.http_tokens).insert(token.to_owned(), key_authorization.to_owned());
    }

    pub fn disarm_http(&self, token: &str) {
        write(&self.http_tokens).remove(token);
    }

    /// The body for `GET /.well-known/acme-challenge/<token>`.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        read(&self.http_tokens).get(token).cloned()
    }

    pub fn arm_tls_alpn(&self, name: &str, key: Arc<CertifiedKey>) {
        write(&self.tls_alpn).insert(name.to_ascii_lowercase(), key);
    }

    pub fn disarm_tls_alpn(&self, name: &str) {
        write(&self.tls_alpn).remove(&name.to_ascii_lowercase());
    }

    pub fn tls_alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        read(&self.tls_alpn).get(name).cloned()
    }
}

/// A certificate ready to serve, with what the ACME thread plans by.
pub struct UsableCertificate {
    pub key: Arc<CertifiedKey>,
    pub validity: Validity,
    /// Lower-case DNS names of its subjectAltName.
    pub names: Vec<String>,
}

impl UsableCertificate {
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<UsableCertificate, String> {
        let provider = crate::net::tls::provider::crypto_provider();
        let (key, names) = certified_from_pem(chain_pem, key_pem, &provider).map_err(|problem| problem.to_string())?;
        let validity = certificate_dates::validity(&key.cert[0]).ok_or("the certificate's dates cannot be read")?;
        Ok(UsableCertificate { key, validity, names })
    }

    /// It carries every one of `names`.
    pub fn covers(&self, names: &[String]) -> bool {
        names.iter().all(|name| self.names.contains(&name.to_ascii_lowercase()))
    }
}

/// A self-signed certificate for `names`, served until the issuer's
/// arrives: clients see a certificate they do not trust rather than a
/// failed handshake, and TLS-ALPN-01 needs the listener answering anyway.
pub fn temporary_certificate(names: &[String]) -> Result<Arc<CertifiedKey>, String> {
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|error| error.to_string())?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, "Nightmare temporary certificate (ACME order pending)");
    params.distinguished_name = subject;
    self_signed(params)
}

/// TLS-ALPN-01's certificate for `name` (RFC 8737 §3): self-signed, with
/// the digest of the key authorization in a critical acmeIdentifier.
pub fn tls_alpn_certificate(name: &str, key_authorization: &str) -> Result<Arc<CertifiedKey>, String> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|error| error.to_string())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    self_signed(params)
}

fn self_signed(params: rcgen::CertificateParams) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|error| error.to_string())?;
    let certificate = params.self_signed(&key).map_err(|error| error.to_string())?;
    let private = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not from_der: its consistency check parses the certificate with
    // webpki, which refuses TLS-ALPN-01's critical acmeIdentifier; the
    // pair was made together just above.
    let signer = crate::net::tls::provider::crypto_provider()
        .key_provider
        .load_private_key(private)
        .map_err(|error| error.to_string())?;
    Ok(Arc::new(CertifiedKey::new(vec![certificate.der().clone()], signer)))
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn an_installed_certificate_serves_each_name_until_replaced() {
        let store = AcmeStore::default();
        let first = temporary_certificate(&names(&["a.test", "b.test"])).unwrap();
        store.install(&names(&["A.test", "b.test"]), &first);
        assert!(Arc::ptr_eq(&store.certificate("a.test").unwrap(), &first));
        assert!(Arc::ptr_eq(&store.certificate("b.test").unwrap(), &first));
        assert!(store.certificate("c.test").is_none());
        let second = temporary_certificate(&names(&["a.test"])).unwrap();
        store.install(&names(&["a.test"]), &second);
        assert!(Arc::ptr_eq(&store.certificate("a.test").unwrap(), &second));
    }

    #[test]
    fn challenges_are_answered_only_while_armed() {
        let store = AcmeStore::default();
        store.arm_http("tok", "tok.thumb");
        assert_eq!(store.http_answer("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(store.http_answer("other"), None);
        store.disarm_http("tok");
        assert_eq!(store.http_answer("tok"), None);
        store.arm_tls_alpn("A.test", tls_alpn_certificate("a.test", "tok.thumb").unwrap());
        assert!(store.tls_alpn_certificate("a.test").is_some());
        store.disarm_tls_alpn("a.test");
        assert!(store.tls_alpn_certificate("a.test").is_none());
    }

    #[test]
    fn stored_pem_reads_back_with_its_names_and_dates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names(&["a.test", "www.a.test"])).unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let usable = UsableCertificate::from_pem(certificate.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        assert!(usable.covers(&names(&["www.a.test", "A.test"])));
        assert!(!usable.covers(&names(&["a.test", "b.test"])));
        assert!(usable.validity.not_after > usable.validity.not_before);
        let other = rcgen::KeyPair::generate().unwrap();
        let mismatched = UsableCertificate::from_pem(certificate.pem().as_bytes(), other.serialize_pem().as_bytes());
        assert!(mismatched.is_err());
    }
}
