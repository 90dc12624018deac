//! The ACME account's key and the signed requests made with it (RFC 8555
//! §6.2): JWS in flattened JSON, ES256 over P-256, as every ACME issuer
//! accepts.

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::base64url;

pub struct AccountKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    random: SystemRandom,
}

/// Who signs: a new account shows its public key, an existing one names
/// its account URL (`kid`).
pub enum Signer<'a> {
    Jwk,
    Kid(&'a str),
}

impl AccountKey {
    pub fn generate() -> Result<AccountKey, String> {
        let random = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
            .map_err(|_| "no random bytes for an account key".to_owned())?;
        AccountKey::from_pkcs8(pkcs8.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<AccountKey, String> {
        let random = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &random)
            .map_err(|error| format!("not a P-256 PKCS#8 key: {error}"))?;
        Ok(AccountKey { pair, pkcs8: pkcs8.to_vec(), random })
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn jwk(&self) -> Value {
        let (x, y) = self.coordinates();
        json!({ "crv": "P-256", "kty": "EC", "x": x, "y": y })
    }

    /// The key authorization of a challenge token (§8.1): what HTTP-01
    /// answers and what TLS-ALPN-01's certificate digests.
    pub fn key_authorization(&self, token: &str) -> String {
        // RFC 7638's form: the required members in lexical order, no spaces.
        let (x, y) = self.coordinates();
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        format!("{token}.{}", base64url::encode(digest.as_ref()))
    }

    fn coordinates(&self) -> (String, String) {
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = self.pair.public_key().as_ref();
        (base64url::encode(&point[1..33]), base64url::encode(&point[33..65]))
    }

    /// The request body for `url`; `payload` of `None` is POST-as-GET.
    pub fn sign(&self, signer: Signer<'_>, nonce: &str, url: &str, payload: Option<&Value>) -> Result<Vec<u8>, String> {
        let mut protected = json!({ "alg": "ES256", "nonce": nonce, "url": url });
        match signer {
            Signer::Jwk => protected["jwk"] = self.jwk(),
            Signer::Kid(account) => protected["kid"] = Value::from(account),
        }
        let protected = base64url::encode(protected.to_string().as_bytes());
        let payload = payload.map(|payload| base64url::encode(payload.to_string().as_bytes())).unwrap_or_default();
        let signature = self
            .pair
            .sign(&self.random, format!("{protected}.{payload}").as_bytes())
            .map_err(|_| "signing failed".to_owned())?;
        let body = json!({
            "protected": protected,
            "payload": payload,
            "signature": base64url::encode(signature.as_ref()),
        });
        Ok(body.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn decode(text: &str) -> Vec<u8> {
        // The tests' own decoder, the inverse of base64url::encode.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits = 0u32;
        let mut count = 0;
        let mut out = Vec::new();
        for byte in text.bytes() {
            bits = bits << 6 | alphabet.iter().position(|c| *c == byte).unwrap() as u32;
            count += 6;
            if count >= 8 {
                count -= 8;
                out.push((bits >> count) as u8);
            }
        }
        out
    }

    #[test]
    fn a_signed_request_verifies_with_the_jwk_it_carries() {
        let key = AccountKey::generate().unwrap();
        let payload = json!({ "termsOfServiceAgreed": true });
        let body: Value =
            serde_json::from_slice(&key.sign(Signer::Jwk, "n1", "https://ca/new", Some(&payload)).unwrap()).unwrap();
        let protected: Value = serde_json::from_slice(&decode(body["protected"].as_str().unwrap())).unwrap();
        assert_eq!(protected["alg"], "ES256");
        assert_eq!(protected["nonce"], "n1");
        assert_eq!(protected["url"], "https://ca/new");
        let jwk = &protected["jwk"];
        let mut point = vec![4u8];
        point.extend(decode(jwk["x"].as_str().unwrap()));
        point.extend(decode(jwk["y"].as_str().unwrap()));
        let signed = format!("{}.{}", body["protected"].as_str().unwrap(), body["payload"].as_str().unwrap());
        let signature = decode(body["signature"].as_str().unwrap());
        assert_eq!(signature.len(), 64, "JWS ES256 is r and s, 32 bytes each");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).verify(signed.as_bytes(), &signature).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&decode(body["payload"].as_str().unwrap())).unwrap(), payload);
    }

    #[test]
    fn post_as_get_has_an_empty_payload_and_names_the_account() {
        let key = AccountKey::generate().unwrap();
        let body: Value =
            serde_json::from_slice(&key.sign(Signer::Kid("https://ca/acct/1"), "n", "https://ca/o", None).unwrap())
                .unwrap();
        assert_eq!(body["payload"], "");
        let protected: Value = serde_json::from_slice(&decode(body["protected"].as_str().unwrap())).unwrap();
        assert_eq!(protected["kid"], "https://ca/acct/1");
        assert!(protected.get("jwk").is_none());
    }

    #[test]
    fn the_key_survives_its_pkcs8_and_the_thumbprint_is_rfc_7638s() {
        let key = AccountKey::generate().unwrap();
        let again = AccountKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(key.jwk(), again.jwk());
        let authorization = key.key_authorization("token-1");
        let (token, thumbprint) = authorization.split_once('.').unwrap();
        assert_eq!(token, "token-1");
        // serde_json's default map sorts its keys and writes no spaces.
        let digest = ring::digest::digest(&ring::digest::SHA256, key.jwk().to_string().as_bytes());
        assert_eq!(thumbprint, base64url::encode(digest.as_ref()));
    }
}
