//! The one choice of cryptography for every TLS session the front makes,
//! as a server (its listeners) and as a client (to an ACME issuer): ring,
//! with rustls's own defaults for everything else: its cipher suites (AEAD
//! only, forward secrecy only), key exchange groups and extensions.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
