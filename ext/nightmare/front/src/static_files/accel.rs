//! X-Accel-Redirect (nginx's name, which Rack::Sendfile and Rails'
//! `send_file` speak): the front offers the app its `sendfile_root`
//! directories by `X-Sendfile-Type` and `X-Accel-Mapping`, the app answers
//! with a URI under one's prefix instead of the file's bytes, and the
//! front serves the file itself as try_files serves one (sendfile or TLS,
//! Range, HEAD, validators). The worker is free once its head is read.
//!
//! Only files beneath a configured root, opened by openat2 as try_files
//! opens them; a URI outside every prefix, one that climbs, or a file that
//! is not there is the app's mistake, answered 500 and logged.

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use super::path::{self, PathVerdict};
use super::{FileFacts, FileReply, StaticFiles, StaticSettings};

/// One `sendfile_root`: a directory and the URI prefix that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendfileRoot {
    pub root: PathBuf,
    /// Starts and ends with `/`.
    pub prefix: String,
}

/// What the app's response keeps when a file takes its place (nginx
/// passes these from the upstream on an X-Accel-Redirect).
const KEPT_HEADERS: [&str; 5] = ["content-type", "content-disposition", "cache-control", "expires", "set-cookie"];

pub struct AccelFiles {
    roots: Vec<(String, StaticFiles)>,
    /// The `X-Accel-Mapping` value: `/srv/files/=/private/, ...`.
    mapping: String,
}

impl AccelFiles {
    /// None without roots; fails naming `sendfile_root` when one cannot
    /// be opened.
    pub fn new(roots: &[SendfileRoot]) -> io::Result<Option<AccelFiles>> {
        if roots.is_empty() {
            return Ok(None);
        }
        let mut opened = Vec::with_capacity(roots.len());
        let mut mapping = Vec::with_capacity(roots.len());
        for SendfileRoot { root, prefix } in roots {
            let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
            let root_text = root.to_string_lossy();
            if root_text.contains(['=', ',', '\r', '\n']) || root_text.trim() != root_text {
                return Err(invalid(format!(
                    "sendfile_root {root_text:?}: a directory named in X-Accel-Mapping may not hold = , or spaces at its ends"
                )));
            }
            if let Some((other, _)) = opened.iter().find(|(other, _): &&(String, StaticFiles)| {
                prefix.starts_with(other.as_str()) || other.starts_with(prefix.as_str())
            }) {
                return Err(invalid(format!(
                    "sendfile_root {prefix:?}: overlaps {other:?}; give each directory a prefix of its own"
                )));
            }
            if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.contains(['=', ',']) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("sendfile_root {prefix:?}: a URI prefix starts and ends with / (\"/private/\")"),
                ));
            }
            let settings = StaticSettings { precompressed: false, ..StaticSettings::new(root.clone()) };
            let files = StaticFiles::new(settings).map_err(|error| {
                io::Error::new(error.kind(), error.to_string().replace("try_files", "sendfile_root"))
            })?;
            let internal = root.to_string_lossy();
            let internal = if internal.ends_with('/') { internal.into_owned() } else { format!("{internal}/") };
            mapping.push(format!("{internal}={prefix}"));
            opened.push((prefix.clone(), files));
        }
        Ok(Some(AccelFiles { roots: opened, mapping: mapping.join(", ") }))
    }

    pub fn mapping(&self) -> &str {
        &self.mapping
    }

    /// The reply for the app's `X-Accel-Redirect: uri`, with what its
    /// response said kept (`app_headers`), or why there is none.
    pub fn serve(
        &self,
        uri: &str,
        app_headers: &[(String, Vec<u8>)],
        facts: FileFacts,
        keep_alive: bool,
        now: Instant,
    ) -> Result<FileReply, String> {
        let Some((prefix, files)) = self.roots.iter().find(|(prefix, _)| uri.starts_with(prefix.as_str())) else {
            return Err(format!("X-Accel-Redirect {uri:?} is under no sendfile_root prefix"));
        };
        let relative = match path::judge(&uri[prefix.len() - 1..], false) {
            PathVerdict::Look { relative, directory: false } if !relative.is_empty() => relative,
            _ => return Err(format!("X-Accel-Redirect {uri:?} names no file the front may serve")),
        };
        let mut reply = files
            .serve_named(&relative, facts, keep_alive, now)
            .ok_or_else(|| format!("X-Accel-Redirect {uri:?}: no regular file beneath {prefix}"))?;
        for (name, value) in app_headers {
            if KEPT_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                reply.set_header(name, &String::from_utf8_lossy(value));
            }
        }
        Ok(reply)
    }

    /// Whether the app's header named `name` travels with the file.
    pub fn keeps(name: &str) -> bool {
        KEPT_HEADERS.iter().any(|kept| kept.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path) -> AccelFiles {
        let root = SendfileRoot { root: dir.to_path_buf(), prefix: "/private/".into() };
        AccelFiles::new(&[root]).unwrap().unwrap()
    }

    fn head_of(reply: &FileReply) -> String {
        String::from_utf8(reply.head().to_vec()).unwrap()
    }

    #[test]
    fn the_app_names_a_file_beneath_its_root_and_keeps_its_descriptive_headers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("reports")).unwrap();
        std::fs::write(dir.path().join("reports/r.pdf"), b"%PDF-1.4 hello").unwrap();
        let files = files(dir.path());
        assert_eq!(files.mapping(), format!("{}/=/private/", dir.path().display()));
        let app = vec![
            ("Content-Type".to_owned(), b"application/x-report".to_vec()),
            ("Content-Disposition".to_owned(), b"attachment; filename=\"r.pdf\"".to_vec()),
            ("X-Runtime".to_owned(), b"0.01".to_vec()),
        ];
        let reply = files.serve("/private/reports/r.pdf", &app, FileFacts::default(), true, Instant::now()).unwrap();
        let head = head_of(&reply);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Type: application/x-report\r\n"), "the app's type wins: {head}");
        assert_eq!(head.matches("Content-Type").count(), 1);
        assert!(head.contains("\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n"));
        assert!(head.contains("\r\nContent-Length: 14\r\n") && !head.contains("X-Runtime"));
    }

    #[test]
    fn nothing_outside_a_root_or_its_prefix_is_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
        let files = files(dir.path());
        let now = Instant::now();
        for uri in ["/other/a.txt", "/private/../a.txt", "/private/../../etc/passwd", "/private/", "/private/missing"] {
            assert!(files.serve(uri, &[], FileFacts::default(), true, now).is_err(), "{uri}");
        }
        assert!(files.serve("/private/a.txt", &[], FileFacts::default(), true, now).is_ok());
        let bad = SendfileRoot { root: dir.path().to_path_buf(), prefix: "private".into() };
        assert!(AccelFiles::new(&[bad]).err().unwrap().to_string().contains("sendfile_root \"private\""));
    }
}
