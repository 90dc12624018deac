//! From a request target to a path under the static root, or a reason not
//! to look: the path is percent-decoded once and its `.` and `..` segments
//! resolved here, before the file system sees it, so nothing a client
//! writes names a file outside the root. What cannot be judged safely (an
//! encoded slash, a backslash, a dotfile) goes to the application instead,
//! which has always seen such paths.

use crate::http::error_response::Rejection;

/// What to do with a request path.
#[derive(Debug, PartialEq, Eq)]
pub enum PathVerdict {
    /// Look under the root for these bytes (no leading slash; empty means
    /// the root itself); `directory` when the path ended with a slash.
    Look {
        relative: Vec<u8>,
        directory: bool,
    },
    /// Not a static file's path: the application answers.
    App,
    Refuse(Rejection),
}

/// Judges the path of `target` (an origin-form request target).
pub fn judge(target: &str, dotfiles: bool) -> PathVerdict {
    let Some(path) = target.strip_prefix('/') else { return PathVerdict::App };
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    if path.contains('#') {
        return PathVerdict::App;
    }
    let decoded = match percent_decode(path.as_bytes()) {
        Ok(Some(decoded)) => decoded,
        Ok(None) => return PathVerdict::App,
        Err(rejection) => return PathVerdict::Refuse(rejection),
    };
    if decoded.contains(&b'\\') {
        return PathVerdict::App;
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&byte| byte == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return PathVerdict::Refuse(Rejection::new(400, "the path climbs above the root"));
                }
            }
            _ if segment[0] == b'.' && !dotfiles => return PathVerdict::App,
            _ => segments.push(segment),
        }
    }
    let directory =
        decoded.is_empty() || decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    PathVerdict::Look { relative: segments.join(&b'/'), directory }
}

/// `Ok(None)` for an encoded slash: `a%2Fb` is one segment to the
/// application and two to the file system, so it is not looked up.
fn percent_decode(input: &[u8]) -> Result<Option<Vec<u8>>, Rejection> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&byte) = bytes.next() {
        let decoded = if byte == b'%' {
            let (Some(high), Some(low)) = (bytes.next().and_then(hex), bytes.next().and_then(hex)) else {
                return Err(Rejection::new(400, "bad percent-encoding in the path"));
            };
            let value = high << 4 | low;
            if value == b'/' {
                return Ok(None);
            }
            value
        } else {
            byte
        };
        if decoded == 0 {
            return Err(Rejection::new(400, "NUL in the path"));
        }
        out.push(decoded);
    }
    Ok(Some(out))
}

fn hex(digit: &u8) -> Option<u8> {
    (*digit as char).to_digit(16).map(|value| value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(relative: &str) -> PathVerdict {
        PathVerdict::Look { relative: relative.as_bytes().to_vec(), directory: false }
    }

    fn status(verdict: PathVerdict) -> u16 {
        match verdict {
            PathVerdict::Refuse(rejection) => rejection.status,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_paths_are_looked_up_without_query_or_dot_segments() {
        assert_eq!(judge("/assets/app.css?v=3", false), look("assets/app.css"));
        assert_eq!(judge("/a//b/./c", false), look("a/b/c"));
        assert_eq!(judge("/a/b/../c", false), look("a/c"));
        assert_eq!(judge("/caf%C3%A9.txt", false), look("café.txt"));
        assert_eq!(judge("/", false), PathVerdict::Look { relative: Vec::new(), directory: true });
        assert_eq!(judge("/docs/", false), PathVerdict::Look { relative: b"docs".to_vec(), directory: true });
    }

    #[test]
    fn traversal_never_leaves_the_root() {
        for target in ["/../etc/passwd", "/a/../../etc/passwd", "/%2e%2e/etc/passwd", "/.%2E/x", "/a/%2e%2e/%2e%2e/x"] {
            assert_eq!(status(judge(target, true)), 400, "{target}");
        }
        assert_eq!(judge("/..%2fetc/passwd", true), PathVerdict::App, "an encoded slash is the app's");
        assert_eq!(judge("/a%2F..%2F..%2Fetc", true), PathVerdict::App);
    }

    #[test]
    fn nul_bad_escapes_backslashes_and_dotfiles() {
        assert_eq!(status(judge("/a%00.txt", false)), 400);
        assert_eq!(status(judge("/a%zz", false)), 400);
        assert_eq!(status(judge("/a%4", false)), 400);
        assert_eq!(judge("/..\\..\\etc\\passwd", false), PathVerdict::App);
        assert_eq!(judge("/a%5c..%5cb", false), PathVerdict::App);
        assert_eq!(judge("/.env", false), PathVerdict::App);
        assert_eq!(judge("/x/.git/config", false), PathVerdict::App);
        assert_eq!(judge("/.well-known/a", true), look(".well-known/a"));
        assert_eq!(judge("*", false), PathVerdict::App);
        assert_eq!(judge("http://host/a", false), PathVerdict::App);
    }

    #[test]
    fn fuzzed_targets_never_climb_out() {
        let parts = ["/", "..", ".", "%2e", "%2E", "%2f", "a", "%00", "%", "\\", "?", "b.css"];
        let make = |noise: &mut crate::test_support::Noise| {
            let mut target = String::from("/");
            for _ in 0..noise.below(10) {
                target.push_str(parts[noise.below(parts.len())]);
            }
            (target.into_bytes(), ())
        };
        crate::test_support::fuzz(11, 20_000, make, |target, (), _| {
            let target = std::str::from_utf8(target).expect("built from ASCII parts");
            if let PathVerdict::Look { relative, .. } = judge(target, true) {
                let text = String::from_utf8_lossy(&relative);
                assert!(!text.split('/').any(|segment| segment == ".." || segment == "."), "{target} -> {text}");
                assert!(!text.starts_with('/'), "{target} -> {text}");
                assert!(!relative.contains(&0), "{target}");
            }
        });
    }
}
