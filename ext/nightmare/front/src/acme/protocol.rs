//! One ACME conversation (RFC 8555 §7): the directory, the account, an
//! order for a set of names, its authorizations answered by HTTP-01 or
//! TLS-ALPN-01 through the store, and the certificate. Blocking, on the
//! ACME thread; every wait is bounded.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::https_client::{HttpsClient, Response};
use super::jws::{AccountKey, Signer};
use super::store::{AcmeStore, tls_alpn_certificate};
use super::{AcmeSettings, ChallengeRoutes};

/// An authorization or an order still being decided after this long has
/// failed, as far as this attempt goes.
const DECISION_TIMEOUT: Duration = Duration::from_secs(90);
/// RFC 8555 §6.5: a client retries a rejected nonce; Pebble rejects 5%.
const NONCE_RETRIES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    Http01,
    TlsAlpn01,
}

impl ChallengeKind {
    pub fn name(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }

    pub fn from_name(name: &str) -> Option<ChallengeKind> {
        [ChallengeKind::Http01, ChallengeKind::TlsAlpn01].into_iter().find(|kind| kind.name() == name)
    }
}

/// Why an attempt failed, in words for the log, and whether the issuer
/// was reached at all (a wrong URL or a network fault) or said no.
#[derive(Debug)]
pub struct AcmeError {
    pub issuer_unreachable: bool,
    pub message: String,
}

impl AcmeError {
    pub fn unreachable(message: String) -> Self {
        AcmeError { issuer_unreachable: true, message }
    }

    pub fn refused(message: String) -> Self {
        AcmeError { issuer_unreachable: false, message }
    }
}

type Outcome<T> = Result<T, AcmeError>;

struct Directory {
    new_nonce: String,
    new_account: String,
    new_order: String,
}

/// A certificate as issued: the chain in PEM, and its new key.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
    pub challenge: ChallengeKind,
}

pub struct AcmeClient {
    http: HttpsClient,
    directory_url: String,
    key: AccountKey,
    directory: Option<Directory>,
    nonce: Option<String>,
    account: Option<String>,
}

impl AcmeClient {
    pub fn new(settings: &AcmeSettings, key: AccountKey) -> Outcome<AcmeClient> {
        let http = HttpsClient::new(settings.ca_file.as_deref()).map_err(AcmeError::unreachable)?;
        Ok(AcmeClient {
            http,
            directory_url: settings.directory.clone(),
            key,
            directory: None,
            nonce: None,
            account: None,
        })
    }

    /// The account for this key, made on first use (`termsOfServiceAgreed`
    /// is the user's `accept_terms_of_service: true`).
    pub fn register(&mut self, contact: &[String]) -> Outcome<()> {
        if self.account.is_some() {
            return Ok(());
        }
        let url = self.directory()?.new_account.clone();
        let payload = json!({ "termsOfServiceAgreed": true, "contact": contact });
        let response = self.post(&url, Some(&payload), true)?;
        let account = response
            .header("location")
            .ok_or_else(|| AcmeError::refused("the issuer created an account but gave no account URL".to_owned()))?;
        self.account = Some(account.to_owned());
        Ok(())
    }

    /// Orders one certificate for `names`, answering each authorization
    /// with `preferred` when the issuer offers it and the front can answer
    /// it, else with the other.
    pub fn order(
        &mut self,
        names: &[String],
        routes: ChallengeRoutes,
        preferred: ChallengeKind,
        store: &AcmeStore,
    ) -> Outcome<Issued> {
        let url = self.directory()?.new_order.clone();
        let identifiers: Vec<Value> = names.iter().map(|name| json!({ "type": "dns", "value": name })).collect();
        let response = self.post(&url, Some(&json!({ "identifiers": identifiers })), false)?;
        let order_url = response
            .header("location")
            .ok_or_else(|| AcmeError::refused("the issuer accepted the order but gave no order URL".to_owned()))?
            .to_owned();
        let order = json_of(&response)?;
        let mut used = preferred;
        for authorization in order["authorizations"].as_array().into_iter().flatten() {
            let url = authorization.as_str().ok_or_else(|| AcmeError::refused("an authorization has no URL".into()))?;
            used = self.authorize(url, routes, preferred, store)?;
        }
        let finalize =
            order["finalize"].as_str().ok_or_else(|| AcmeError::refused("the order has no finalize URL".into()))?;
        let (csr, key_pem) = signing_request(names)?;
        self.post(finalize, Some(&json!({ "csr": super::base64url::encode(&csr) })), false)?;
        let order = self.await_decision(&order_url, "the order")?;
        if order["status"] != "valid" {
            return Err(AcmeError::refused(format!(
                "the order ended {}: {}",
                order["status"],
                problem_of(&order["error"])
            )));
        }
        let certificate_url = order["certificate"]
            .as_str()
            .ok_or_else(|| AcmeError::refused("a valid order names no certificate".into()))?;
        let chain = self.post(certificate_url, None, false)?;
        let chain_pem = String::from_utf8(chain.body).map_err(|_| AcmeError::refused("the chain is not PEM".into()))?;
        Ok(Issued { chain_pem, key_pem, challenge: used })
    }

    /// Proves control of one name; returns the challenge that did.
    fn authorize(
        &mut self,
        url: &str,
        routes: ChallengeRoutes,
        preferred: ChallengeKind,
        store: &AcmeStore,
    ) -> Outcome<ChallengeKind> {
        let authorization = json_of(&self.post(url, None, false)?)?;
        let name = authorization["identifier"]["value"].as_str().unwrap_or_default().to_owned();
        if authorization["status"] == "valid" {
            return Ok(preferred); // still valid from an earlier order
        }
        let offered = authorization["challenges"].as_array().cloned().unwrap_or_default();
        let usable = |kind: ChallengeKind| {
            let reachable = match kind {
                ChallengeKind::Http01 => routes.http,
                ChallengeKind::TlsAlpn01 => routes.tls_alpn,
            };
            offered.iter().find(|challenge| reachable && challenge["type"] == kind.name()).cloned().map(|c| (kind, c))
        };
        let other = match preferred {
            ChallengeKind::Http01 => ChallengeKind::TlsAlpn01,
            ChallengeKind::TlsAlpn01 => ChallengeKind::Http01,
        };
        let (kind, challenge) = usable(preferred).or_else(|| usable(other)).ok_or_else(|| {
            AcmeError::refused(format!(
                "{name}: the issuer offers no challenge the front can answer (it answers http-01 on a plain \
                 listener and tls-alpn-01 on an ssl one)"
            ))
        })?;
        let token = challenge["token"].as_str().unwrap_or_default();
        let challenge_url = challenge["url"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() || token.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
            return Err(AcmeError::refused(format!("{name}: the challenge's token is not base64url")));
        }
        let key_authorization = self.key.key_authorization(token);
        match kind {
            ChallengeKind::Http01 => store.arm_http(token, &key_authorization),
            ChallengeKind::TlsAlpn01 => {
                store.arm_tls_alpn(&name, tls_alpn_certificate(&name, &key_authorization).map_err(AcmeError::refused)?)
            }
        }
        let decided = self.post(&challenge_url, Some(&json!({})), false).and_then(|_| self.await_decision(url, &name));
        match kind {
            ChallengeKind::Http01 => store.disarm_http(token),
            ChallengeKind::TlsAlpn01 => store.disarm_tls_alpn(&name),
        }
        let authorization = decided?;
        if authorization["status"] == "valid" {
            return Ok(kind);
        }
        let failed = authorization["challenges"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|challenge| challenge["type"] == kind.name())
            .map(|challenge| problem_of(&challenge["error"]))
            .unwrap_or_default();
        Err(AcmeError::refused(format!("{name}: {} validation failed: {failed}", kind.name())))
    }

    /// Polls `url` (an authorization or an order) until it is no longer
    /// pending or processing.
    fn await_decision(&mut self, url: &str, what: &str) -> Outcome<Value> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let response = self.post(url, None, false)?;
            let state = json_of(&response)?;
            if !matches!(state["status"].as_str(), Some("pending" | "processing" | "ready"))
                || state["certificate"].is_string()
            {
                return Ok(state);
            }
            // An order is "ready" between the authorizations and finalize:
            // the caller finalizes before it polls, so ready means "soon".
            if started.elapsed() > DECISION_TIMEOUT {
                return Err(AcmeError::refused(format!(
                    "{what} was still {} after {} s",
                    state["status"],
                    DECISION_TIMEOUT.as_secs()
                )));
            }
            let asked =
                response.header("retry-after").and_then(|value| value.parse::<u64>().ok()).map(Duration::from_secs);
            thread::sleep(asked.unwrap_or(pause).min(Duration::from_secs(5)));
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    fn directory(&mut self) -> Outcome<&Directory> {
        if self.directory.is_none() {
            let response = self
                .http
                .get(&self.directory_url)
                .map_err(|error| AcmeError::unreachable(format!("cannot read the directory: {error}")))?;
            let unusable = || {
                AcmeError::unreachable(format!(
                    "{} answered {} and is not an ACME directory (check the URL)",
                    self.directory_url, response.status
                ))
            };
            let body: Value = serde_json::from_slice(&response.body).map_err(|_| unusable())?;
            let member = |key: &str| body[key].as_str().map(str::to_owned).ok_or_else(unusable);
            self.directory = Some(Directory {
                new_nonce: member("newNonce")?,
                new_account: member("newAccount")?,
                new_order: member("newOrder")?,
            });
        }
        Ok(self.directory.as_ref().expect("set above"))
    }

    fn fresh_nonce(&mut self) -> Outcome<String> {
        if let Some(nonce) = self.nonce.take() {
            return Ok(nonce);
        }
        let url = self.directory()?.new_nonce.clone();
        let response = self.http.head(&url).map_err(|error| AcmeError::unreachable(format!("no nonce: {error}")))?;
        response
            .header("replay-nonce")
            .map(str::to_owned)
            .ok_or_else(|| AcmeError::unreachable(format!("{url} gave no nonce")))
    }

    /// A signed POST (`payload` of `None`: POST-as-GET); a success, or the
    /// issuer's problem in words. Rejected nonces are retried.
    fn post(&mut self, url: &str, payload: Option<&Value>, new_account: bool) -> Outcome<Response> {
        for _ in 0..NONCE_RETRIES {
            let nonce = self.fresh_nonce()?;
            let signer = match (&self.account, new_account) {
                (Some(account), false) => Signer::Kid(account),
                _ => Signer::Jwk,
            };
            let body = self.key.sign(signer, &nonce, url, payload).map_err(AcmeError::refused)?;
            let response = self.http.post(url, &body).map_err(AcmeError::unreachable)?;
            self.nonce = response.header("replay-nonce").map(str::to_owned);
            if response.status < 300 {
                return Ok(response);
            }
            let problem: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            if problem["type"] == "urn:ietf:params:acme:error:badNonce" {
                continue;
            }
            return Err(AcmeError::refused(format!("{} (HTTP {})", problem_of(&problem), response.status)));
        }
        Err(AcmeError::refused(format!("{url}: the issuer rejected {NONCE_RETRIES} nonces in a row")))
    }
}

fn json_of(response: &Response) -> Outcome<Value> {
    serde_json::from_slice(&response.body).map_err(|_| AcmeError::refused("the issuer's answer is not JSON".to_owned()))
}

/// An RFC 7807 problem in one line: its type without the ACME prefix, its
/// detail, and its subproblems' details.
fn problem_of(problem: &Value) -> String {
    let kind = problem["type"].as_str().unwrap_or("unknown problem");
    let kind = kind.strip_prefix("urn:ietf:params:acme:error:").unwrap_or(kind);
    let mut text = format!("{kind}: {}", problem["detail"].as_str().unwrap_or("no detail"));
    for sub in problem["subproblems"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "; {}: {}",
            sub["identifier"]["value"].as_str().unwrap_or("?"),
            sub["detail"].as_str().unwrap_or("")
        ));
    }
    text
}

/// A CSR for `names` under a new P-256 key, and that key in PEM.
fn signing_request(names: &[String]) -> Outcome<(Vec<u8>, String)> {
    let refused = |error: rcgen::Error| AcmeError::refused(format!("cannot make the certificate request: {error}"));
    let key = rcgen::KeyPair::generate().map_err(refused)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(refused)?;
    // The subjectAltName carries the names; a CN is only a courtesy, and
    // issuers refuse one longer than X.509's 64 characters.
    let mut subject = rcgen::DistinguishedName::new();
    if let Some(first) = names.first().filter(|first| first.len() <= 64) {
        subject.push(rcgen::DnType::CommonName, first.clone());
    }
    params.distinguished_name = subject;
    let request = params.serialize_request(&key).map_err(refused)?;
    Ok((request.der().to_vec(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_as_one_line() {
        let problem = json!({
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "Error creating new order",
            "subproblems": [{ "identifier": { "type": "dns", "value": "bad.test" }, "detail": "forbidden name" }],
        });
        assert_eq!(problem_of(&problem), "rejectedIdentifier: Error creating new order; bad.test: forbidden name");
        assert_eq!(problem_of(&Value::Null), "unknown problem: no detail");
    }

    #[test]
    fn the_certificate_request_names_every_name() {
        let names = vec!["a.test".to_owned(), "www.a.test".to_owned()];
        let (der, key_pem) = signing_request(&names).unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        for name in &names {
            let bytes = name.as_bytes();
            assert!(der.windows(bytes.len()).any(|window| window == bytes), "{name} is in the request");
        }
    }
}
