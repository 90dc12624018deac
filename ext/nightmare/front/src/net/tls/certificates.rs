//! Certificate chains and keys from PEM files, and the choice between them
//! by the name a client asks for (SNI). Each certificate serves the DNS
//! names of its subjectAltName; the first pair is the default, for clients
//! that send no name or a name no certificate carries (as nginx's default
//! server). Names of `acme_certificate` lines are served what the ACME
//! store holds for them at each handshake.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsSetupError;
use super::pem::{PemProblem, certified_from_pem};
use crate::acme::AcmeStore;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One `ssl_certificate` with its `ssl_certificate_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePair {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug)]
pub struct CertificateChooser {
    /// The first pair's; with none, the first ACME name's.
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates, by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    acme: Option<AcmeNames>,
}

/// The block's ACME names and where their certificates are published.
#[derive(Debug)]
struct AcmeNames {
    store: Arc<AcmeStore>,
    names: HashSet<String>,
    first: String,
}

impl CertificateChooser {
    /// Loads every pair; when two certificates carry the same name, the
    /// first one listed serves it. `acme` is the store and the names of
    /// the block's `acme_certificate` lines, if it has any.
    pub fn load(
        pairs: &[CertificatePair],
        provider: &CryptoProvider,
        acme: Option<(Arc<AcmeStore>, &[Vec<String>])>,
    ) -> Result<CertificateChooser, TlsSetupError> {
        let mut loaded = Vec::with_capacity(pairs.len());
        for pair in pairs {
            loaded.push(load_pair(pair, provider)?);
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (key, names) in &loaded {
            for name in names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_insert_with(|| Arc::clone(key)),
                    None => exact.entry(name.clone()).or_insert_with(|| Arc::clone(key)),
                };
            }
        }
        let acme = acme.and_then(|(store, lines)| {
            let names: Vec<String> = lines.iter().flatten().map(|name| name.to_ascii_lowercase()).collect();
            let first = names.first()?.clone();
            Some(AcmeNames { store, names: names.into_iter().collect(), first })
        });
        let default = loaded.into_iter().next().map(|(key, _)| key);
        if default.is_none() && acme.is_none() {
            return Err(TlsSetupError::setting(
                "ssl_certificate",
                "an ssl block needs at least one certificate (ssl_certificate, or acme_certificate)",
            ));
        }
        Ok(CertificateChooser { default, exact, wildcard, acme })
    }

    fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = name.map(str::to_ascii_lowercase);
        if let Some(name) = &name {
            // A name on an acme_certificate line is ordered to be served.
            if let Some(acme) = self.acme.as_ref().filter(|acme| acme.names.contains(name)) {
                return acme.store.certificate(name);
            }
            if let Some(key) = self.exact.get(name) {
                return Some(Arc::clone(key));
            }
            // A wildcard covers exactly one label (RFC 6125 §6.4.3).
            if let Some(key) = name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)) {
                return Some(Arc::clone(key));
            }
        }
        match (&self.default, &self.acme) {
            (Some(key), _) => Some(Arc::clone(key)),
            (None, Some(acme)) => acme.store.certificate(&acme.first),
            (None, None) => None,
        }
    }

    /// TLS-ALPN-01: the validation certificate for the name asked, and
    /// nothing else (a handshake without one fails, as it should).
    fn choose_for_validation(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let acme = self.acme.as_ref()?;
        acme.store.tls_alpn_certificate(&name?.to_ascii_lowercase())
    }
}

impl ResolvesServerCert for CertificateChooser {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: a validator offers acme-tls/1 and nothing else.
        let validation = self.acme.is_some()
            && client_hello
                .alpn()
                .is_some_and(|mut offered| offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none());
        if validation {
            return self.choose_for_validation(client_hello.server_name());
        }
        self.choose(client_hello.server_name())
    }
}

/// The chain and key of one pair, checked against each other, and the
/// names the certificate is valid for.
fn load_pair(
    pair: &CertificatePair,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Vec<String>), TlsSetupError> {
    let certificate_pem = read("ssl_certificate", &pair.certificate)?;
    let key_pem = read("ssl_certificate_key", &pair.key)?;
    certified_from_pem(&certificate_pem, &key_pem, provider).map_err(|problem| {
        let (directive, file, message) = match problem {
            PemProblem::UnreadableChain(error) => {
                ("ssl_certificate", &pair.certificate, format!("unreadable PEM: {error}"))
            }
            PemProblem::NoCertificate => ("ssl_certificate", &pair.certificate, "holds no PEM certificate".to_owned()),
            PemProblem::BadLeaf(error) => {
                ("ssl_certificate", &pair.certificate, format!("not a valid certificate: {error}"))
            }
            PemProblem::NoKey => {
                ("ssl_certificate_key", &pair.key, "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned())
            }
            PemProblem::KeyMismatch => (
                "ssl_certificate_key",
                &pair.key,
                format!("is not the key of ssl_certificate {}", pair.certificate.display()),
            ),
            PemProblem::Unusable(error) => ("ssl_certificate_key", &pair.key, format!("cannot be used: {error}")),
        };
        TlsSetupError::file(directive, file, message)
    })
}

fn read(directive: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|error| TlsSetupError::file(directive, path, format!("cannot be read: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::test_certificates::{Certificate, provider};

    fn pair(certificate: &Certificate) -> CertificatePair {
        CertificatePair { certificate: certificate.chain_path.clone(), key: certificate.key_path.clone() }
    }

    #[test]
    fn names_choose_their_certificate_and_the_first_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let first = Certificate::make(dir.path(), "first", &["a.example"]);
        let second = Certificate::make(dir.path(), "second", &["b.example", "*.wild.example"]);
        let chooser = CertificateChooser::load(&[pair(&first), pair(&second)], &provider(), None).unwrap();
        let leaf = |name: Option<&str>| chooser.choose(name).unwrap().cert[0].clone();
        assert_eq!(leaf(Some("a.example")), first.leaf);
        assert_eq!(leaf(Some("B.Example")), second.leaf, "names compare without case");
        assert_eq!(leaf(Some("x.wild.example")), second.leaf);
        assert_eq!(leaf(Some("y.x.wild.example")), first.leaf, "a wildcard covers one label only");
        assert_eq!(leaf(Some("unknown.example")), first.leaf);
        assert_eq!(leaf(None), first.leaf);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = Certificate::make(dir.path(), "good", &["a.example"]);
        let other = Certificate::make(dir.path(), "other", &["b.example"]);
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let error =
            |pair: CertificatePair| CertificateChooser::load(&[pair], &provider(), None).unwrap_err().to_string();

        let text = error(CertificatePair { certificate: missing.clone(), key: good.key_path.clone() });
        assert!(text.starts_with(&format!("ssl_certificate {} cannot be read", missing.display())), "{text}");
        let text = error(CertificatePair { certificate: junk.clone(), key: good.key_path.clone() });
        assert!(text.contains("holds no PEM certificate"), "{text}");
        let text = error(CertificatePair { certificate: good.chain_path.clone(), key: junk.clone() });
        assert!(text.starts_with(&format!("ssl_certificate_key {}", junk.display())), "{text}");
        let text = error(CertificatePair { certificate: good.chain_path.clone(), key: other.key_path.clone() });
        assert!(text.contains("is not the key of ssl_certificate"), "{text}");
    }

    #[test]
    fn acme_names_take_what_the_store_holds_at_each_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let fixed = Certificate::make(dir.path(), "fixed", &["fixed.example"]);
        let store = Arc::new(AcmeStore::default());
        let lines = vec![vec!["a.example".to_owned(), "www.a.example".to_owned()]];
        let only_acme = CertificateChooser::load(&[], &provider(), Some((Arc::clone(&store), &lines))).unwrap();
        assert!(only_acme.choose(Some("a.example")).is_none(), "nothing published yet");
        let first = crate::acme::store::temporary_certificate(&lines[0]).unwrap();
        store.install(&lines[0], &first);
        assert!(Arc::ptr_eq(&only_acme.choose(Some("WWW.a.example")).unwrap(), &first));
        assert!(Arc::ptr_eq(&only_acme.choose(None).unwrap(), &first), "the first ACME name is the default");
        let renewed = crate::acme::store::temporary_certificate(&lines[0]).unwrap();
        store.install(&lines[0], &renewed);
        assert!(Arc::ptr_eq(&only_acme.choose(Some("a.example")).unwrap(), &renewed), "a renewal needs no reload");

        let mixed = CertificateChooser::load(&[pair(&fixed)], &provider(), Some((Arc::clone(&store), &lines))).unwrap();
        assert_eq!(mixed.choose(None).unwrap().cert[0], fixed.leaf, "a pair stays the default");
        assert!(Arc::ptr_eq(&mixed.choose(Some("a.example")).unwrap(), &renewed));

        assert!(mixed.choose_for_validation(Some("a.example")).is_none(), "no challenge armed");
        let validation = crate::acme::store::tls_alpn_certificate("a.example", "token.thumbprint").unwrap();
        store.arm_tls_alpn("a.example", Arc::clone(&validation));
        assert!(Arc::ptr_eq(&mixed.choose_for_validation(Some("a.example")).unwrap(), &validation));
        assert!(mixed.choose_for_validation(Some("fixed.example")).is_none());
        let error = CertificateChooser::load(&[], &provider(), None).unwrap_err().to_string();
        assert!(error.contains("acme_certificate"), "{error}");
    }
}
