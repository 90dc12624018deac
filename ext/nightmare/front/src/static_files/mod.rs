//! `try_files`: GET and HEAD requests for a regular file under the static
//! root are answered by the front (sendfile, validators, one range), and
//! never reach a worker; anything else goes to the application.
//!
//! Files are opened with openat2(RESOLVE_BENEATH) relative to the root's
//! descriptor, so the kernel itself refuses any path that would leave the
//! root, by `..` or by a symlink, on top of the path checks in `path`.
//! The root is opened again once a second, so a deploy that repoints a
//! `current` symlink is followed, as nginx follows it.

pub mod accel;
pub mod conditional;
pub mod mime;
pub mod path;
pub mod reply;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::http::date;
use crate::http::error_response::Rejection;
use crate::request::head::RequestHead;

use conditional::{Answer, Conditions, Validators};
use path::PathVerdict;
pub use reply::{FileReply, SendStep};

/// How long an opened root stands for its path.
const ROOT_REFRESH: Duration = Duration::from_secs(1);

/// What the `try_files` directive says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticSettings {
    pub root: PathBuf,
    /// Paths to try in order, where `$uri` stands for the request's path
    /// (nginx's `try_files $uri $uri.html $uri/index.html`).
    pub candidates: Vec<String>,
    /// Serve names that start with a dot (`.well-known`).
    pub dotfiles: bool,
    /// Follow symlinks that lead out of the root (a Capistrano
    /// `public/assets -> shared/assets`); off, such files go to the app.
    pub symlinks_outside: bool,
    /// Serve `NAME.br` or `NAME.gz` beside a text file to clients that
    /// accept it.
    pub precompressed: bool,
}

impl StaticSettings {
    pub fn new(root: PathBuf) -> Self {
        StaticSettings {
            root,
            candidates: vec!["$uri".into()],
            dotfiles: false,
            symlinks_outside: false,
            precompressed: true,
        }
    }

    /// Rejects candidates that could name something outside the root.
    pub fn check(&self) -> Result<(), String> {
        for candidate in &self.candidates {
            let literal = candidate.replace("$uri", "");
            if literal.contains('$') || literal.bytes().any(|b| b == 0 || b == b'\\') {
                return Err(format!("try_files {candidate:?}: only $uri may be used in a candidate"));
            }
            if literal.split('/').any(|segment| segment == "..") {
                return Err(format!("try_files {candidate:?}: a candidate may not climb with .."));
            }
            if !candidate.starts_with("$uri") && !candidate.starts_with('/') {
                return Err(format!("try_files {candidate:?}: a candidate starts with $uri or /"));
            }
        }
        Ok(())
    }
}

pub enum Lookup {
    /// The application answers this request.
    App,
    Serve(FileReply),
    Refuse(Rejection),
}

pub struct StaticFiles {
    settings: StaticSettings,
    /// The root's descriptor and when it was opened.
    root: Mutex<(Arc<OwnedFd>, Instant)>,
}

impl StaticFiles {
    /// Fails, naming the setting, when the root cannot be opened or the
    /// kernel lacks openat2 (Linux before 5.6).
    pub fn new(settings: StaticSettings) -> io::Result<StaticFiles> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        settings.check().map_err(invalid)?;
        let root = open_root(&settings)
            .map_err(|error| invalid(format!("try_files root {}: {error}", settings.root.display())))?;
        if let Err(error) = open_beneath(&root, b".", false)
            && error.raw_os_error() == Some(libc::ENOSYS)
        {
            return Err(invalid("try_files needs Linux 5.6 or later (openat2)".into()));
        }
        Ok(StaticFiles { settings, root: Mutex::new((Arc::new(root), Instant::now())) })
    }

    pub fn settings(&self) -> &StaticSettings {
        &self.settings
    }

    pub fn lookup(&self, head: &RequestHead, keep_alive: bool, now: Instant) -> Lookup {
        let head_only = match head.method.as_str() {
            "GET" => false,
            "HEAD" => true,
            _ => return Lookup::App,
        };
        let (relative, directory) = match path::judge(&head.target, self.settings.dotfiles) {
            PathVerdict::Look { relative, directory } => (relative, directory),
            PathVerdict::App => return Lookup::App,
            PathVerdict::Refuse(rejection) => return Lookup::Refuse(rejection),
        };
        let root = self.root(now);
        for candidate in &self.settings.candidates {
            let name = expand(candidate, &relative, directory);
            if name.is_empty() {
                continue;
            }
            if let Some(found) = self.open_regular(&root, &name) {
                let request = FileRequest { facts: FileFacts::of(head), head_only, keep_alive };
                return Lookup::Serve(self.respond(&root, &name, found, &request));
            }
        }
        Lookup::App
    }

    /// The file `name` (relative, already judged safe) answering a request
    /// with `facts`; None when it is not a regular file beneath the root.
    pub fn serve_named(&self, name: &[u8], facts: FileFacts, keep_alive: bool, now: Instant) -> Option<FileReply> {
        let root = self.root(now);
        let found = self.open_regular(&root, name)?;
        let request = FileRequest { head_only: facts.head_only, facts, keep_alive };
        Some(self.respond(&root, name, found, &request))
    }

    fn root(&self, now: Instant) -> Arc<OwnedFd> {
        let mut root = self.root.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.duration_since(root.1) >= ROOT_REFRESH {
            // A root gone missing keeps the last one: its files still serve.
            if let Ok(fresh) = open_root(&self.settings) {
                root.0 = Arc::new(fresh);
            }
            root.1 = now;
        }
        Arc::clone(&root.0)
    }

    fn open_regular(&self, root: &OwnedFd, name: &[u8]) -> Option<(File, std::fs::Metadata)> {
        match open_beneath(root, name, self.settings.symlinks_outside) {
            Ok(file) => {
                let metadata = file.metadata().ok()?;
                metadata.is_file().then_some((file, metadata))
            }
            // Missing, a directory on the way, a symlink out of the root,
            // not readable: not a file to serve.
            Err(_) => None,
        }
    }

    fn respond(
        &self,
        root: &OwnedFd,
        name: &[u8],
        found: (File, std::fs::Metadata),
        request: &FileRequest,
    ) -> FileReply {
        let content_type = mime::content_type(name);
        let mut file = found;
        let mut encoding = None;
        // Whether another Accept-Encoding would get another body: then the
        // identity response says so too (RFC 9110 12.5.5), or a cache would
        // hand it to clients that take gzip, and the gzip one to the rest.
        let mut varies = false;
        if self.settings.precompressed && mime::is_compressible(content_type) {
            let accepted = request.facts.accept_encoding.as_deref().unwrap_or_default();
            for (coding, suffix) in [("br", ".br"), ("gzip", ".gz")] {
                let sibling = [name, suffix.as_bytes()].concat();
                if !accepts(accepted, coding) {
                    varies = varies || self.open_regular(root, &sibling).is_some();
                    continue;
                }
                if let Some(compressed) = self.open_regular(root, &sibling) {
                    file = compressed;
                    encoding = Some(coding);
                    varies = true;
                    break;
                }
            }
        }
        let (file, metadata) = file;
        let size = metadata.len();
        let validators = Validators::new(metadata.mtime().max(0) as u64, size);
        let facts = &request.facts;
        let conditions = Conditions {
            if_none_match: facts.if_none_match.as_deref(),
            if_modified_since: facts.if_modified_since.as_deref(),
            range: facts.range.as_deref(),
            if_range: facts.if_range.as_deref(),
        };
        let answer = conditional::answer(&conditions, &validators, size);
        let mut head = ResponseHead::new(answer, request.keep_alive);
        head.line("Content-Type", content_type);
        let body = match answer {
            Answer::NotModified => None,
            Answer::Unsatisfiable => {
                head.line("Content-Range", &format!("bytes */{size}"));
                head.line("Content-Length", "0");
                None
            }
            Answer::Whole => {
                head.line("Content-Length", &size.to_string());
                Some((0, size))
            }
            Answer::Partial { start, end } => {
                head.line("Content-Range", &format!("bytes {start}-{end}/{size}"));
                head.line("Content-Length", &(end + 1 - start).to_string());
                Some((start, end + 1))
            }
        };
        head.line("Last-Modified", &validators.last_modified);
        head.line("ETag", &validators.etag);
        head.line("Accept-Ranges", "bytes");
        if let Some(coding) = encoding {
            head.line("Content-Encoding", coding);
        }
        if varies {
            head.line("Vary", "Accept-Encoding");
        }
        let body = body.filter(|_| !request.head_only).map(|(start, end)| (file, start, end));
        FileReply::new(head.finish(), body, request.keep_alive)
    }
}

struct FileRequest {
    facts: FileFacts,
    head_only: bool,
    keep_alive: bool,
}

/// What of a request decides how a file answers it: kept by an exchange
/// whose response may turn out to be a file (X-Accel-Redirect).
#[derive(Clone, Debug, Default)]
pub struct FileFacts {
    pub head_only: bool,
    accept_encoding: Option<Vec<u8>>,
    if_none_match: Option<Vec<u8>>,
    if_modified_since: Option<Vec<u8>>,
    range: Option<Vec<u8>>,
    if_range: Option<Vec<u8>>,
}

impl FileFacts {
    pub fn of(head: &RequestHead) -> Self {
        let header = |name: &str| head.header(name).map(<[u8]>::to_vec);
        FileFacts {
            head_only: head.is_head_method(),
            accept_encoding: header("accept-encoding"),
            if_none_match: header("if-none-match"),
            if_modified_since: header("if-modified-since"),
            range: header("range"),
            if_range: header("if-range"),
        }
    }
}

struct ResponseHead(Vec<u8>);

impl ResponseHead {
    fn new(answer: Answer, keep_alive: bool) -> Self {
        let status = match answer {
            Answer::Whole => "200 OK",
            Answer::Partial { .. } => "206 Partial Content",
            Answer::NotModified => "304 Not Modified",
            Answer::Unsatisfiable => "416 Range Not Satisfiable",
        };
        let mut head = ResponseHead(Vec::with_capacity(320));
        head.0.extend_from_slice(b"HTTP/1.1 ");
        head.0.extend_from_slice(status.as_bytes());
        head.0.extend_from_slice(b"\r\n");
        head.line("Date", &date::format(SystemTime::now()));
        // HTTP/1.0 clients need the word to keep the connection; for
        // HTTP/1.1 it is harmless.
        head.line("Connection", if keep_alive { "keep-alive" } else { "close" });
        head
    }

    fn line(&mut self, name: &str, value: &str) {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value.as_bytes());
        self.0.extend_from_slice(b"\r\n");
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(b"\r\n");
        self.0
    }
}

/// The candidate's name under the root: `$uri` replaced by the request's
/// path, then empty segments dropped (the path has no `.` or `..` left,
/// and the candidate's own text was checked for them). Empty when it names
/// a directory (it ends with a slash): there is no directory index, and
/// `/a.txt/` is not the file `a.txt`, as nginx and the file system agree.
fn expand(candidate: &str, relative: &[u8], directory: bool) -> Vec<u8> {
    let mut uri = Vec::with_capacity(relative.len() + 2);
    uri.push(b'/');
    uri.extend_from_slice(relative);
    if directory {
        uri.push(b'/');
    }
    let mut expanded = Vec::new();
    let mut rest = candidate.as_bytes();
    while let Some(at) = rest.windows(4).position(|window| window == b"$uri") {
        expanded.extend_from_slice(&rest[..at]);
        expanded.extend_from_slice(&uri);
        rest = &rest[at + 4..];
    }
    expanded.extend_from_slice(rest);
    if expanded.ends_with(b"/") {
        return Vec::new();
    }
    let segments: Vec<&[u8]> = expanded.split(|&byte| byte == b'/').filter(|segment| !segment.is_empty()).collect();
    segments.join(&b'/')
}

/// Whether an Accept-Encoding value takes `coding` (a q of 0 refuses it,
/// explicitly or through `*`).
fn accepts(accept_encoding: &[u8], coding: &str) -> bool {
    let text = String::from_utf8_lossy(accept_encoding);
    let mut wildcard = None;
    for item in text.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|parameter| {
            let parameter = parameter.trim();
            parameter.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        if name.eq_ignore_ascii_case(coding) {
            return !refused;
        }
        if name == "*" {
            wildcard = Some(!refused);
        }
    }
    wildcard.unwrap_or(false)
}

fn open_root(settings: &StaticSettings) -> io::Result<OwnedFd> {
    let path = CString::new(settings.root.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the try_files root"))?;
    // SAFETY: path is a valid C string; the descriptor returned is ours.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` relative to `root` for reading; the kernel refuses any
/// resolution that leaves `root` (unless `symlinks_outside`), magic links
/// always. O_NONBLOCK: a FIFO planted in the root cannot stall the loop.
fn open_beneath(root: &OwnedFd, name: &[u8], symlinks_outside: bool) -> io::Result<File> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut resolve = libc::RESOLVE_NO_MAGICLINKS;
    if !symlinks_outside {
        resolve |= libc::RESOLVE_BENEATH;
    }
    // SAFETY: open_how is plain data; zeroed is a valid value for it.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
    how.resolve = resolve;
    loop {
        // SAFETY: the pointers are valid for the call; size is open_how's.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                name.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor owned by nobody else.
            return Ok(unsafe { File::from_raw_fd(fd as i32) });
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::head::HeadReader;

    fn request(raw: &str) -> RequestHead {
        let mut reader = HeadReader::default();
        reader.push(raw.as_bytes());
        reader.poll(&crate::request::head::HeadLimits::default()).unwrap().expect("complete").0
    }

    fn served(files: &StaticFiles, raw: &str) -> Option<String> {
        match files.lookup(&request(raw), true, Instant::now()) {
            Lookup::Serve(reply) => Some(String::from_utf8_lossy(reply.head()).into_owned()),
            Lookup::App => None,
            Lookup::Refuse(rejection) => Some(format!("refused {}", rejection.status)),
        }
    }

    fn site() -> (tempfile::TempDir, StaticFiles) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("public");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("app.css"), "body{}").unwrap();
        std::fs::write(root.join("app.css.gz"), "gzipped").unwrap();
        std::fs::write(root.join("about.html"), "about").unwrap();
        std::fs::write(root.join("docs/index.html"), "docs").unwrap();
        std::fs::write(root.join(".env"), "SECRET=1").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink("app.css", root.join("inside.css")).unwrap();
        let mut settings = StaticSettings::new(root);
        settings.candidates = vec!["$uri".into(), "$uri.html".into(), "$uri/index.html".into()];
        let files = StaticFiles::new(settings).unwrap();
        (dir, files)
    }

    #[test]
    fn candidates_are_tried_in_order_and_the_rest_goes_to_the_app() {
        let (_dir, files) = site();
        let css = served(&files, "GET /app.css HTTP/1.1\r\nHost: x\r\n\r\n").expect("served");
        assert!(css.starts_with("HTTP/1.1 200 OK\r\n"), "{css}");
        assert!(css.contains("\r\nContent-Type: text/css\r\n") && css.contains("\r\nContent-Length: 6\r\n"), "{css}");
        assert!(served(&files, "GET /about HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().contains("text/html"));
        assert!(served(&files, "GET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().contains("Content-Length: 4"));
        assert!(served(&files, "GET /docs HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().contains("Content-Length: 4"));
        assert_eq!(served(&files, "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(served(&files, "POST /app.css HTTP/1.1\r\nHost: x\r\n\r\n"), None, "only GET and HEAD");
        assert_eq!(served(&files, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), None, "no directory listing");
        for target in ["/app.css/", "/app.css/.", "/app.css//", "/docs/index.html/"] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(served(&files, &request), None, "{target} names a directory: the app's, as nginx passes it");
        }
    }

    #[test]
    fn nothing_outside_the_root_is_served() {
        let (_dir, files) = site();
        assert_eq!(served(&files, "GET /escape.txt HTTP/1.1\r\nHost: x\r\n\r\n"), None, "a symlink out");
        assert!(served(&files, "GET /inside.css HTTP/1.1\r\nHost: x\r\n\r\n").is_some(), "a symlink within");
        assert_eq!(served(&files, "GET /.env HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(served(&files, "GET /../outside.txt HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(), Some("refused 400"));
        let mut settings = files.settings().clone();
        settings.symlinks_outside = true;
        let following = StaticFiles::new(settings).unwrap();
        assert!(served(&following, "GET /escape.txt HTTP/1.1\r\nHost: x\r\n\r\n").is_some(), "when allowed");
    }

    #[test]
    fn precompressed_siblings_for_clients_that_take_them() {
        let (_dir, files) = site();
        let gz = served(&files, "GET /app.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br, gzip\r\n\r\n").unwrap();
        assert!(gz.contains("Content-Encoding: gzip\r\n") && gz.contains("Vary: Accept-Encoding\r\n"), "{gz}");
        assert!(gz.contains("Content-Type: text/css\r\n") && gz.contains("Content-Length: 7\r\n"), "{gz}");
        let refused = served(&files, "GET /app.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip;q=0\r\n\r\n").unwrap();
        assert!(!refused.contains("Content-Encoding"), "{refused}");
        assert!(refused.contains("Vary: Accept-Encoding\r\n"), "the identity body varies too: {refused}");
        let plain = served(&files, "GET /about.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(!plain.contains("Vary"), "no sibling, nothing varies: {plain}");
    }

    #[test]
    fn conditional_and_partial_requests() {
        let (_dir, files) = site();
        let first = served(&files, "GET /app.css HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let etag = first.lines().find_map(|line| line.strip_prefix("ETag: ")).unwrap().to_owned();
        let again = served(&files, &format!("GET /app.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"));
        assert!(again.unwrap().starts_with("HTTP/1.1 304 Not Modified\r\n"));
        let part = served(&files, "GET /app.css HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n").unwrap();
        assert!(part.starts_with("HTTP/1.1 206") && part.contains("Content-Range: bytes 1-2/6\r\n"), "{part}");
        let past = served(&files, "GET /app.css HTTP/1.1\r\nHost: x\r\nRange: bytes=9-\r\n\r\n").unwrap();
        assert!(past.starts_with("HTTP/1.1 416") && past.contains("Content-Range: bytes */6\r\n"), "{past}");
    }

    #[test]
    fn accept_encoding_follows_q_values() {
        assert!(accepts(b"gzip, deflate, br", "br"));
        assert!(accepts(b"*", "gzip"));
        assert!(!accepts(b"*, gzip;q=0", "gzip"));
        assert!(!accepts(b"br;q=0.0", "br"));
        assert!(!accepts(b"", "gzip"));
        assert!(!accepts(b"identity", "gzip"));
    }

    #[test]
    fn candidates_that_could_leave_the_root_are_refused() {
        let base = StaticSettings::new(PathBuf::from("/"));
        for bad in ["$uri/../x", "$host", "x$uri", "/a\\b"] {
            let settings = StaticSettings { candidates: vec![bad.into()], ..base.clone() };
            assert!(settings.check().is_err(), "{bad}");
        }
        assert_eq!(expand("$uri/index.html", b"docs", true), b"docs/index.html");
        assert_eq!(expand("/maintenance.html", b"any", false), b"maintenance.html");
    }
}
