//! What a request's validators and Range ask of a static file (RFC 9110
//! §13 and §14): 304 when the client's copy is current, 206 for one byte
//! range, 416 for a range past the end, else the whole file. The ETag is
//! nginx's (modification time and size in hex), so a file keeps its ETag
//! when the front takes over from nginx.

use crate::http::date;

/// A file as its validators describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validators {
    pub etag: String,
    /// Seconds since the epoch.
    pub modified: u64,
    pub last_modified: String,
}

impl Validators {
    pub fn new(modified: u64, size: u64) -> Self {
        let last_modified = date::format(std::time::UNIX_EPOCH + std::time::Duration::from_secs(modified));
        Validators { etag: format!("\"{modified:x}-{size:x}\""), modified, last_modified }
    }
}

/// The request headers that make a GET conditional or partial.
#[derive(Clone, Copy, Debug, Default)]
pub struct Conditions<'a> {
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    NotModified,
    Whole,
    /// Bytes `start..=end`.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn answer(conditions: &Conditions, validators: &Validators, size: u64) -> Answer {
    if is_not_modified(conditions, validators) {
        return Answer::NotModified;
    }
    let Some(range) = conditions.range else { return Answer::Whole };
    if conditions.if_range.is_some_and(|if_range| !if_range_holds(if_range, validators)) {
        return Answer::Whole;
    }
    parse_range(range, size)
}

/// If-None-Match wins over If-Modified-Since when both are sent (§13.2.2).
fn is_not_modified(conditions: &Conditions, validators: &Validators) -> bool {
    if let Some(tags) = conditions.if_none_match {
        let tags = String::from_utf8_lossy(tags);
        return tags.split(',').map(str::trim).any(|tag| tag == "*" || weak(tag) == weak(&validators.etag));
    }
    conditions.if_modified_since.and_then(date::parse).is_some_and(|since| validators.modified <= since)
}

/// A weak comparison: `W/"x"` and `"x"` are the same tag.
fn weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// If-Range takes a strong ETag or the exact Last-Modified date (§13.1.5).
fn if_range_holds(if_range: &[u8], validators: &Validators) -> bool {
    let value = String::from_utf8_lossy(if_range);
    let value = value.trim();
    if value.starts_with('"') {
        value == validators.etag
    } else {
        date::parse(value.as_bytes()) == Some(validators.modified)
    }
}

/// One `bytes=` range; several ranges, other units or a malformed value
/// are ignored (the whole file is a valid answer to any Range).
fn parse_range(range: &[u8], size: u64) -> Answer {
    let Some(spec) = std::str::from_utf8(range).ok().and_then(|text| text.trim().strip_prefix("bytes=")) else {
        return Answer::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else { return Answer::Whole };
    if spec.contains(',') {
        return Answer::Whole;
    }
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => Answer::Unsatisfiable,
            Some(_) if size == 0 => Answer::Unsatisfiable,
            Some(length) => Answer::Partial { start: size.saturating_sub(length), end: size - 1 },
            None => Answer::Whole,
        },
        (start, end) => {
            let Some(start) = number(start) else { return Answer::Whole };
            let end = match end {
                "" => None,
                end => match number(end) {
                    Some(end) if end >= start => Some(end),
                    _ => return Answer::Whole,
                },
            };
            if start >= size {
                return Answer::Unsatisfiable;
            }
            Answer::Partial { start, end: end.map_or(size - 1, |end| end.min(size - 1)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Validators {
        Validators::new(784_111_777, 1000)
    }

    fn ask(conditions: Conditions) -> Answer {
        answer(&conditions, &file(), 1000)
    }

    fn range(value: &str) -> Answer {
        ask(Conditions { range: Some(value.as_bytes()), ..Conditions::default() })
    }

    #[test]
    fn etag_and_last_modified_follow_nginx() {
        assert_eq!(file().etag, "\"2ebc98a1-3e8\"");
        assert_eq!(file().last_modified, "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn a_current_copy_is_not_modified() {
        let etag = file().etag;
        assert_eq!(ask(Conditions { if_none_match: Some(etag.as_bytes()), ..Default::default() }), Answer::NotModified);
        let listed = format!("\"other\", W/{etag}");
        assert_eq!(
            ask(Conditions { if_none_match: Some(listed.as_bytes()), ..Default::default() }),
            Answer::NotModified
        );
        assert_eq!(ask(Conditions { if_none_match: Some(b"\"old\""), ..Default::default() }), Answer::Whole);
        let since = Some(&b"Sun, 06 Nov 1994 08:49:37 GMT"[..]);
        assert_eq!(ask(Conditions { if_modified_since: since, ..Default::default() }), Answer::NotModified);
        let before = Some(&b"Sun, 06 Nov 1994 08:49:36 GMT"[..]);
        assert_eq!(ask(Conditions { if_modified_since: before, ..Default::default() }), Answer::Whole);
        let both = Conditions { if_none_match: Some(b"\"old\""), if_modified_since: since, ..Default::default() };
        assert_eq!(ask(both), Answer::Whole, "If-None-Match decides when both are sent");
    }

    #[test]
    fn single_ranges() {
        assert_eq!(range("bytes=0-99"), Answer::Partial { start: 0, end: 99 });
        assert_eq!(range("bytes=900-"), Answer::Partial { start: 900, end: 999 });
        assert_eq!(range("bytes=-100"), Answer::Partial { start: 900, end: 999 });
        assert_eq!(range("bytes=-5000"), Answer::Partial { start: 0, end: 999 });
        assert_eq!(range("bytes=990-5000"), Answer::Partial { start: 990, end: 999 });
        assert_eq!(range("bytes=1000-"), Answer::Unsatisfiable);
        assert_eq!(range("bytes=-0"), Answer::Unsatisfiable);
        for ignored in ["bytes=0-1,5-6", "items=0-1", "bytes=5-2", "bytes=a-b", "bytes=", "bytes=-", "0-1"] {
            assert_eq!(range(ignored), Answer::Whole, "{ignored}");
        }
    }

    #[test]
    fn if_range_keeps_a_range_only_for_the_same_file() {
        let etag = file().etag;
        let with = |if_range: &str| {
            answer(
                &Conditions { range: Some(b"bytes=0-9"), if_range: Some(if_range.as_bytes()), ..Default::default() },
                &file(),
                1000,
            )
        };
        assert_eq!(with(&etag), Answer::Partial { start: 0, end: 9 });
        assert_eq!(with("Sun, 06 Nov 1994 08:49:37 GMT"), Answer::Partial { start: 0, end: 9 });
        assert_eq!(with("\"changed\""), Answer::Whole);
        assert_eq!(with("Mon, 07 Nov 1994 08:49:37 GMT"), Answer::Whole);
    }

    #[test]
    fn an_empty_file_has_no_range() {
        let conditions = Conditions { range: Some(b"bytes=0-"), ..Default::default() };
        assert_eq!(answer(&conditions, &Validators::new(1, 0), 0), Answer::Unsatisfiable);
    }
}
