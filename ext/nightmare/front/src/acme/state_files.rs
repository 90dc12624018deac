//! What survives a restart, under `state_path`: one directory per issuer
//! (named after its directory URL), holding the account key and one
//! directory per certificate, named after its first name. Only the
//! server's user can read it (0700 directories, 0600 files): it holds
//! private keys.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::jws::AccountKey;
use super::store::UsableCertificate;

const CHAIN: &str = "fullchain.pem";
const KEY: &str = "privkey.pem";
const ACCOUNT_KEY: &str = "account.key";
const RETRY: &str = "retry-after";

pub struct StateFiles {
    issuer_dir: PathBuf,
}

impl StateFiles {
    /// Creates the directories as needed.
    pub fn open(state_path: &Path, directory_url: &str) -> io::Result<StateFiles> {
        let issuer_dir = state_path.join(directory_name(directory_url));
        DirBuilder::new().recursive(true).mode(0o700).create(issuer_dir.join("certificates"))?;
        Ok(StateFiles { issuer_dir })
    }

    /// The account's key, made and stored on first use: the same account
    /// orders again after a restart.
    pub fn account_key(&self) -> Result<AccountKey, String> {
        let path = self.issuer_dir.join(ACCOUNT_KEY);
        match fs::read(&path) {
            Ok(pem) => match PrivateKeyDer::from_pem_slice(&pem) {
                Ok(PrivateKeyDer::Pkcs8(der)) => AccountKey::from_pkcs8(der.secret_pkcs8_der()),
                _ => Err(format!("{} holds no PKCS#8 key; move it away to start a new account", path.display())),
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let key = AccountKey::generate()?;
                let pem = pem_of_key(&PrivatePkcs8KeyDer::from(key.pkcs8().to_vec()))?;
                write_private(&path, pem.as_bytes()).map_err(|error| format!("{}: {error}", path.display()))?;
                Ok(key)
            }
            Err(error) => Err(format!("{}: {error}", path.display())),
        }
    }

    /// The stored certificate for `names`, if one is there and readable.
    pub fn certificate(&self, names: &[String]) -> Option<UsableCertificate> {
        let dir = self.certificate_dir(names);
        let chain = fs::read(dir.join(CHAIN)).ok()?;
        let key = fs::read(dir.join(KEY)).ok()?;
        UsableCertificate::from_pem(&chain, &key).ok()
    }

    /// Stores a new certificate; the key first, so a crash in between
    /// leaves a pair that fails to load (and is ordered again) rather than
    /// an old key beside a new chain that loads wrong.
    pub fn save_certificate(&self, names: &[String], chain_pem: &str, key_pem: &str) -> io::Result<PathBuf> {
        let dir = self.certificate_dir(names);
        DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        write_private(&dir.join(KEY), key_pem.as_bytes())?;
        write_private(&dir.join(CHAIN), chain_pem.as_bytes())?;
        Ok(dir)
    }

    /// When the last failure said to try again: a restart (a crash, a HUP
    /// that starts a new front) keeps the backoff rather than ordering at
    /// once, which would spend the issuer's failed-validation limit.
    pub fn retry_time(&self, names: &[String]) -> Option<SystemTime> {
        let text = fs::read_to_string(self.certificate_dir(names).join(RETRY)).ok()?;
        Some(UNIX_EPOCH + Duration::from_secs(text.trim().parse().ok()?))
    }

    /// Records the next attempt after a failure; `None` clears it.
    pub fn set_retry_time(&self, names: &[String], at: Option<SystemTime>) -> io::Result<()> {
        let dir = self.certificate_dir(names);
        match at {
            Some(at) => {
                DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
                let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                write_private(&dir.join(RETRY), format!("{seconds}\n").as_bytes())
            }
            None => match fs::remove_file(dir.join(RETRY)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            },
        }
    }

    fn certificate_dir(&self, names: &[String]) -> PathBuf {
        let first = names.first().map_or("unnamed", String::as_str).to_ascii_lowercase();
        self.issuer_dir.join("certificates").join(safe_name(&first))
    }
}

/// `https://acme-v02.api.letsencrypt.org/directory` becomes
/// `acme-v02.api.letsencrypt.org-directory`, as Caddy names its folders.
fn directory_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    safe_name(rest.trim_end_matches('/'))
}

fn safe_name(text: &str) -> String {
    let name: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '-' }).collect();
    // Never `.` or `..`, nor hidden.
    if name.starts_with('.') { format!("_{name}") } else { name }
}

fn pem_of_key(key: &PrivatePkcs8KeyDer<'_>) -> Result<String, String> {
    // Written through rcgen's encoder, as the certificate keys are.
    rcgen::KeyPair::try_from(key).map(|pair| pair.serialize_pem()).map_err(|error| error.to_string())
}

/// Replaces `path` whole (a temporary file renamed over it), readable by
/// the owner alone. The temporary name is this process's and this write's,
/// so two fronts sharing state_path (USR2, a front being replaced) never
/// write one file together.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.{write}.new", std::process::id()));
    let temporary = path.with_file_name(name);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        // A full disk must not leave half a key behind.
        drop(fs::remove_file(&temporary));
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_account_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::open(dir.path(), "https://127.0.0.1:14000/dir").unwrap();
        let first = files.account_key().unwrap();
        let again = StateFiles::open(dir.path(), "https://127.0.0.1:14000/dir").unwrap().account_key().unwrap();
        assert_eq!(first.jwk(), again.jwk(), "a restart keeps the account");
        let issuer = dir.path().join("127.0.0.1-14000-dir");
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&issuer), 0o700);
        assert_eq!(mode(&issuer.join(ACCOUNT_KEY)), 0o600);
        let other = StateFiles::open(dir.path(), "https://other.example/directory").unwrap().account_key().unwrap();
        assert_ne!(first.jwk(), other.jwk(), "each issuer has its own account");
    }

    #[test]
    fn a_saved_certificate_loads_back_for_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::open(dir.path(), "https://ca.test/directory").unwrap();
        let names = vec!["A.test".to_owned(), "b.test".to_owned()];
        assert!(files.certificate(&names).is_none());
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(names.clone()).unwrap().self_signed(&key).unwrap();
        let saved = files.save_certificate(&names, &certificate.pem(), &key.serialize_pem()).unwrap();
        assert_eq!(saved, dir.path().join("ca.test-directory/certificates/a.test"));
        assert_eq!(fs::metadata(saved.join(KEY)).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = files.certificate(&names).unwrap();
        assert!(loaded.covers(&names));
        fs::write(saved.join(CHAIN), "junk").unwrap();
        assert!(files.certificate(&names).is_none(), "an unreadable file means ordering again");
    }

    #[test]
    fn a_retry_time_survives_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::open(dir.path(), "https://ca.test/directory").unwrap();
        let names = vec!["a.test".to_owned()];
        assert_eq!(files.retry_time(&names), None);
        let at = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        files.set_retry_time(&names, Some(at)).unwrap();
        assert_eq!(files.retry_time(&names), Some(at));
        files.set_retry_time(&names, None).unwrap();
        assert_eq!(files.retry_time(&names), None);
        files.set_retry_time(&names, None).unwrap();
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("ca.test-directory/certificates/a.test"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert!(leftovers.is_empty(), "no temporary file left: {leftovers:?}");
    }

    #[test]
    fn directory_names_stay_inside_state_path() {
        assert_eq!(
            directory_name("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org-directory"
        );
        assert_eq!(safe_name("../../etc"), "_..-..-etc");
        assert_eq!(safe_name(".."), "_..");
        assert!(!safe_name("a/../b").contains('/'));
    }
}
