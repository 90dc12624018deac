//! A setting's value as the user wrote it in the config file, and how each
//! kind of setting reads it: counts, sizes ("512k", "10m", "1g"), times
//! ("500ms", "30s", "5m"), directories, and nginx's [count, size] buffers.
//! A value that does not read gets a message naming the setting and the
//! fix, in the words Unicorn's own directives use.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longer than a day is a mistake (`Float::INFINITY`, `1e19`), and
/// deadlines are `Instant`s that must not overflow.
pub const MAX_SECONDS: f64 = 86_400.0;

/// A value from the config file: what Ruby had, and how Ruby shows it
/// (`inspect`), for messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Given {
    pub value: GivenValue,
    pub shown: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum GivenValue {
    Integer(i64),
    Float(f64),
    Text(String),
    List(Vec<Given>),
    /// Ruby's true and false.
    Bool(bool),
    /// nil, and anything else Ruby holds: read by no kind.
    Other,
}

impl Given {
    pub fn integer(value: i64) -> Given {
        Given { value: GivenValue::Integer(value), shown: value.to_string() }
    }

    pub fn text(value: &str) -> Given {
        Given { value: GivenValue::Text(value.to_owned()), shown: format!("{value:?}") }
    }

    pub fn list(items: Vec<Given>) -> Given {
        let shown = format!("[{}]", items.iter().map(|item| item.shown.as_str()).collect::<Vec<_>>().join(", "));
        Given { value: GivenValue::List(items), shown }
    }

    pub fn is_auto(&self) -> bool {
        matches!(&self.value, GivenValue::Text(text) if text == "auto")
    }

    pub fn is_off(&self) -> bool {
        matches!(&self.value, GivenValue::Text(text) if text == "off")
    }
}

/// true or false, or as nginx writes them, "on" or "off".
pub fn switch(name: &str, given: &Given) -> Result<bool, String> {
    match &given.value {
        GivenValue::Bool(value) => Ok(*value),
        GivenValue::Text(text) if text == "on" => Ok(true),
        GivenValue::Text(text) if text == "off" => Ok(false),
        _ => Err(refuse("not a switch", name, given, "give true or false")),
    }
}

/// Why a value does not read, as the line `nightmare` raises.
fn refuse(complaint: &str, name: &str, given: &Given, hint: &str) -> String {
    let hint = if hint.is_empty() { String::new() } else { format!(" ({hint})") };
    format!("{complaint}: nightmare {name}={}{hint}", given.shown)
}

pub fn count(name: &str, given: &Given, min: u64) -> Result<u64, String> {
    let GivenValue::Integer(value) = given.value else {
        return Err(refuse("not an integer", name, given, ""));
    };
    match u64::try_from(value) {
        Ok(value) if value >= min => Ok(value),
        _ => Err(refuse(&format!("too low (< {min})"), name, given, "")),
    }
}

const SIZE_HINT: &str = r#"give bytes as an Integer, or a String like "512k", "10m", "1g""#;

pub fn size(name: &str, given: &Given, min: u64) -> Result<u64, String> {
    let bytes = match &given.value {
        GivenValue::Integer(value) => u64::try_from(*value).ok(),
        GivenValue::Text(text) => size_text(text),
        _ => None,
    };
    let bytes = bytes.ok_or_else(|| refuse("not a size", name, given, SIZE_HINT))?;
    if bytes < min {
        return Err(refuse(&format!("too low (< {min} bytes)"), name, given, ""));
    }
    Ok(bytes)
}

/// "512", "16k", "10M", "1g": digits and an optional unit, nginx's way.
fn size_text(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().last()? {
        (at, unit) if unit.is_ascii_alphabetic() => (&text[..at], unit.to_ascii_lowercase()),
        _ => (text, ' '),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale: u64 = match unit {
        ' ' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

const TIME_HINT: &str = r#"give seconds as a Number, or a String like "500ms", "30s", "5m""#;

pub fn time(name: &str, given: &Given) -> Result<Duration, String> {
    let seconds = match &given.value {
        GivenValue::Integer(value) => Some(*value as f64),
        GivenValue::Float(value) => Some(*value),
        GivenValue::Text(text) => time_text(text),
        _ => None,
    };
    let seconds = seconds.ok_or_else(|| refuse("not a time", name, given, TIME_HINT))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(refuse("must be positive", name, given, ""));
    }
    if seconds > MAX_SECONDS {
        return Err(refuse(&format!("too long (> 1 day, {MAX_SECONDS}s)"), name, given, ""));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// "500ms", "30s", "1.5m", "2h".
fn time_text(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let well_formed = match number.split_once('.') {
        Some((whole, fraction)) => is_digits(whole) && is_digits(fraction),
        None => is_digits(number),
    };
    well_formed.then(|| number.parse::<f64>().ok()).flatten().map(|value| value * scale)
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A writable directory, made absolute against the current one (as
/// Ruby's `File.expand_path`, so the front finds it whatever its cwd).
pub fn directory(name: &str, given: &Given) -> Result<PathBuf, String> {
    let GivenValue::Text(text) = &given.value else {
        return Err(refuse("not a path", name, given, ""));
    };
    let path = expand(text);
    if path.is_dir() && is_accessible(&path, libc::W_OK | libc::X_OK) {
        Ok(path)
    } else {
        Err(format!("nightmare {name}={} is not a writable directory", given.shown))
    }
}

fn expand(text: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    let path = match text.strip_prefix("~/") {
        Some(rest) => home().map_or_else(|| PathBuf::from(text), |home| home.join(rest)),
        None if text == "~" => home().unwrap_or_else(|| PathBuf::from(text)),
        None => PathBuf::from(text),
    };
    std::path::absolute(&path).unwrap_or(path)
}

/// access(2): whether this process may use `path` as `mode` says.
fn is_accessible(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path that lives across the call.
    unsafe { libc::access(c_path.as_ptr(), mode) == 0 }
}

/// A file the front may append to: one that is writable, or a new one in
/// a writable directory; made absolute as `directory` does.
pub fn file(name: &str, given: &Given) -> Result<PathBuf, String> {
    let GivenValue::Text(text) = &given.value else {
        return Err(refuse("not a path", name, given, r#"give a file name, or "off""#));
    };
    let path = expand(text);
    // Not only a regular file: a FIFO to a log shipper, or /dev/stdout,
    // as nginx takes them.
    let writable = if path.exists() {
        !path.is_dir() && is_accessible(&path, libc::W_OK)
    } else {
        path.parent().is_some_and(|dir| dir.is_dir() && is_accessible(dir, libc::W_OK | libc::X_OK))
    };
    if writable {
        Ok(path)
    } else {
        Err(format!("nightmare {name}={} is not a file that can be written (or created)", given.shown))
    }
}

/// nginx's `large_client_header_buffers number size`, as `[4, "8k"]`.
pub fn buffers(name: &str, given: &Given) -> Result<(u64, u64), String> {
    match &given.value {
        GivenValue::List(pair) if pair.len() == 2 => Ok((count(name, &pair[0], 1)?, size(name, &pair[1], 256)?)),
        _ => Err(format!(r#"nightmare {name}={}: give [count, size], like [4, "8k"]"#, given.shown)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(value: f64) -> Given {
        Given { value: GivenValue::Float(value), shown: format!("{value:?}") }
    }

    #[test]
    fn sizes_read_as_nginx_writes_them() {
        assert_eq!(size("s", &Given::integer(123), 0), Ok(123));
        assert_eq!(size("s", &Given::text("16k"), 0), Ok(16 * 1024));
        assert_eq!(size("s", &Given::text("10M"), 0), Ok(10 << 20));
        assert_eq!(size("s", &Given::text("1g"), 0), Ok(1 << 30));
        assert_eq!(size("s", &Given::text("512"), 0), Ok(512));
        for bad in ["10x", "k", "", "1.5m", "-1", "1 k", "99999999999999999999g"] {
            let message = size("client_max_body_size", &Given::text(bad), 0).unwrap_err();
            assert!(message.starts_with("not a size: nightmare client_max_body_size="), "{bad}: {message}");
        }
        assert_eq!(
            size("proxy_buffer_size", &Given::integer(10), 1024),
            Err("too low (< 1024 bytes): nightmare proxy_buffer_size=10".into())
        );
    }

    #[test]
    fn times_read_in_seconds_or_with_a_unit_and_stay_within_a_day() {
        assert_eq!(time("t", &Given::integer(30)), Ok(Duration::from_secs(30)));
        assert_eq!(time("t", &float(0.5)), Ok(Duration::from_millis(500)));
        assert_eq!(time("t", &Given::text("500ms")), Ok(Duration::from_millis(500)));
        assert_eq!(time("t", &Given::text("1.5m")), Ok(Duration::from_secs(90)));
        assert_eq!(time("t", &Given::text("2h")), Ok(Duration::from_secs(7200)));
        assert!(time("t", &Given::text("soon")).unwrap_err().starts_with("not a time: nightmare t=\"soon\""));
        assert!(time("t", &Given::integer(0)).unwrap_err().starts_with("must be positive"));
        assert!(time("t", &float(f64::NAN)).unwrap_err().starts_with("must be positive"));
        let infinite = Given { value: GivenValue::Float(f64::INFINITY), shown: "Infinity".into() };
        assert_eq!(
            time("queue_timeout", &infinite),
            Err("too long (> 1 day, 86400s): nightmare queue_timeout=Infinity".into())
        );
        assert!(time("t", &float(1e19)).unwrap_err().starts_with("too long"));
    }

    #[test]
    fn counts_are_integers_at_least_their_minimum() {
        assert_eq!(count("threads", &Given::integer(2), 1), Ok(2));
        assert_eq!(count("threads", &Given::integer(0), 1), Err("too low (< 1): nightmare threads=0".into()));
        assert_eq!(count("threads", &Given::integer(-3), 0), Err("too low (< 0): nightmare threads=-3".into()));
        assert_eq!(count("threads", &Given::text("many"), 1), Err("not an integer: nightmare threads=\"many\"".into()));
    }

    #[test]
    fn buffers_are_a_count_and_a_size() {
        let given = Given::list(vec![Given::integer(4), Given::text("8k")]);
        assert_eq!(given.shown, r#"[4, "8k"]"#);
        assert_eq!(buffers("b", &given), Ok((4, 8192)));
        assert!(buffers("b", &Given::integer(4)).unwrap_err().contains("give [count, size]"));
        let tiny = Given::list(vec![Given::integer(4), Given::integer(10)]);
        assert!(buffers("b", &tiny).unwrap_err().starts_with("too low (< 256 bytes)"));
    }

    #[test]
    fn a_directory_must_exist_and_be_writable() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().to_str().unwrap();
        assert_eq!(directory("temp_path", &Given::text(text)), Ok(dir.path().to_path_buf()));
        assert_eq!(
            directory("temp_path", &Given::text("/no/such/dir")),
            Err(r#"nightmare temp_path="/no/such/dir" is not a writable directory"#.into())
        );
        assert!(directory("temp_path", &Given::integer(1)).unwrap_err().starts_with("not a path"));
        assert!(directory("temp_path", &Given::text(".")).unwrap().is_absolute());
    }
}
