//! nginx's `log_format`: a line of text with `$variables`, read once when
//! the config is loaded, then filled in for each request. Values are
//! escaped as nginx escapes them (`"`, `\` and bytes outside printable
//! ASCII become `\xHH`), so a client cannot forge a line.

use std::fmt::Write;

/// nginx's own `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// One variable of a format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variable {
    RemoteAddr,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    RequestUri,
    ServerProtocol,
    Scheme,
    Host,
    Status,
    BytesSent,
    BodyBytesSent,
    RequestTime,
    /// How long the request waited in the front's queue for a worker.
    QueueTime,
    /// From the handoff to the worker's last byte.
    UpstreamResponseTime,
    Connection,
    ConnectionRequests,
    Pid,
    /// `$http_x_name`: the request's `X-Name` header; `index` is where the
    /// entry keeps its value.
    Header {
        name: String,
        index: usize,
    },
}

const NAMED: &[(&str, Variable)] = &[
    ("remote_addr", Variable::RemoteAddr),
    ("remote_user", Variable::RemoteUser),
    ("time_local", Variable::TimeLocal),
    ("time_iso8601", Variable::TimeIso8601),
    ("msec", Variable::Msec),
    ("request", Variable::Request),
    ("request_method", Variable::RequestMethod),
    ("request_uri", Variable::RequestUri),
    ("server_protocol", Variable::ServerProtocol),
    ("scheme", Variable::Scheme),
    ("host", Variable::Host),
    ("status", Variable::Status),
    ("bytes_sent", Variable::BytesSent),
    ("body_bytes_sent", Variable::BodyBytesSent),
    ("request_time", Variable::RequestTime),
    ("queue_time", Variable::QueueTime),
    ("upstream_response_time", Variable::UpstreamResponseTime),
    ("connection", Variable::Connection),
    ("connection_requests", Variable::ConnectionRequests),
    ("pid", Variable::Pid),
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Variable(Variable),
}

/// A format, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    parts: Vec<Part>,
    /// The request headers its `$http_` variables name, in index order.
    headers: Vec<String>,
}

/// What a line is made of: one request's facts.
pub struct Facts<'a> {
    pub remote_addr: &'a str,
    /// Seconds and microseconds since the epoch, when the line is written.
    pub now: std::time::SystemTime,
    pub request_line: Option<&'a str>,
    pub method: &'a str,
    pub uri: &'a str,
    pub protocol: &'a str,
    pub scheme: &'a str,
    pub host: Option<&'a [u8]>,
    pub status: u16,
    pub bytes_sent: u64,
    pub body_bytes_sent: u64,
    pub request_time: std::time::Duration,
    pub queue_time: Option<std::time::Duration>,
    pub upstream_time: Option<std::time::Duration>,
    pub connection: u64,
    pub connection_requests: usize,
    /// Values of `headers()`, by index.
    pub headers: &'a [Option<Vec<u8>>],
}

impl Format {
    /// `text` as nginx's log_format reads it; `"combined"` is nginx's own.
    pub fn parse(text: &str) -> Result<Format, String> {
        let text = if text == "combined" { COMBINED } else { text };
        let mut parts = Vec::new();
        let mut headers: Vec<String> = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let (name, after) = match rest.strip_prefix('{') {
                Some(braced) => {
                    let end = braced.find('}').ok_or("access_log_format: a ${ without its }")?;
                    (&braced[..end], &braced[end + 1..])
                }
                None => {
                    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                    (&rest[..end], &rest[end..])
                }
            };
            let variable = if let Some(header) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                let header = header.replace('_', "-").to_ascii_lowercase();
                let index = headers.iter().position(|known| *known == header).unwrap_or_else(|| {
                    headers.push(header.clone());
                    headers.len() - 1
                });
                Variable::Header { name: header, index }
            } else {
                match NAMED.iter().find(|(known, _)| *known == name) {
                    Some((_, variable)) => variable.clone(),
                    None => {
                        let known: Vec<&str> = NAMED.iter().map(|(known, _)| *known).collect();
                        return Err(format!(
                            "access_log_format: unknown variable ${name} (known: {}, and $http_NAME for any \
                             request header)",
                            known.join(", ")
                        ));
                    }
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Variable(variable));
            rest = after;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if parts.is_empty() {
            return Err("access_log_format: an empty format".into());
        }
        Ok(Format { parts, headers })
    }

    /// Request headers (lowercase) whose values a line needs.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Whether the line needs the host header (`$host`).
    pub fn wants(&self, wanted: &Variable) -> bool {
        self.parts.iter().any(|part| matches!(part, Part::Variable(variable) if variable == wanted))
    }

    /// The line for `facts`, ending in a newline.
    pub fn render(&self, facts: &Facts) -> String {
        let mut line = String::with_capacity(256);
        for part in &self.parts {
            match part {
                Part::Text(text) => line.push_str(text),
                Part::Variable(variable) => render_variable(&mut line, variable, facts),
            }
        }
        line.push('\n');
        line
    }
}

fn render_variable(line: &mut String, variable: &Variable, facts: &Facts) {
    // Writing into a String cannot fail.
    let _ = match variable {
        Variable::RemoteAddr => write!(line, "{}", facts.remote_addr),
        Variable::RemoteUser => write!(line, "-"),
        Variable::TimeLocal => write!(line, "{}", local_time(facts.now, false)),
        Variable::TimeIso8601 => write!(line, "{}", local_time(facts.now, true)),
        Variable::Msec => {
            let since = facts.now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            write!(line, "{}.{:03}", since.as_secs(), since.subsec_millis())
        }
        Variable::Request => {
            escape_into(line, facts.request_line.unwrap_or("-").as_bytes());
            Ok(())
        }
        Variable::RequestMethod => {
            escape_into(line, facts.method.as_bytes());
            Ok(())
        }
        Variable::RequestUri => {
            escape_into(line, facts.uri.as_bytes());
            Ok(())
        }
        Variable::ServerProtocol => write!(line, "{}", facts.protocol),
        Variable::Scheme => write!(line, "{}", facts.scheme),
        Variable::Host => {
            let host = facts.host.unwrap_or(b"-");
            // The port is not part of $host, as in nginx.
            escape_into(line, &without_port(host).to_ascii_lowercase());
            Ok(())
        }
        Variable::Status => write!(line, "{}", facts.status),
        Variable::BytesSent => write!(line, "{}", facts.bytes_sent),
        Variable::BodyBytesSent => write!(line, "{}", facts.body_bytes_sent),
        Variable::RequestTime => write_seconds(line, Some(facts.request_time)),
        Variable::QueueTime => write_seconds(line, Some(facts.queue_time.unwrap_or_default())),
        Variable::UpstreamResponseTime => write_seconds(line, facts.upstream_time),
        Variable::Connection => write!(line, "{}", facts.connection),
        Variable::ConnectionRequests => write!(line, "{}", facts.connection_requests),
        Variable::Pid => write!(line, "{}", std::process::id()),
        Variable::Header { index, .. } => {
            match facts.headers.get(*index).and_then(Option::as_ref) {
                Some(value) => escape_into(line, value),
                None => line.push('-'),
            }
            Ok(())
        }
    };
}

/// `example.com:8080` is `example.com`, `[::1]:8080` is `[::1]`.
fn without_port(host: &[u8]) -> &[u8] {
    let name_end = if host.starts_with(b"[") {
        host.iter().position(|&b| b == b']').map_or(host.len(), |at| at + 1)
    } else {
        host.iter().position(|&b| b == b':').unwrap_or(host.len())
    };
    &host[..name_end]
}

/// Seconds with milliseconds, as nginx writes times; `-` for none.
fn write_seconds(line: &mut String, time: Option<std::time::Duration>) -> std::fmt::Result {
    match time {
        Some(time) => write!(line, "{}.{:03}", time.as_secs(), time.subsec_millis()),
        None => write!(line, "-"),
    }
}

fn escape_into(line: &mut String, bytes: &[u8]) {
    for &byte in bytes {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            let _ = write!(line, "\\x{byte:02X}");
        } else {
            line.push(char::from(byte));
        }
    }
}

thread_local! {
    /// The second last formatted on this thread, and its two forms: one
    /// localtime_r call a second, not one a line.
    static CLOCK: std::cell::RefCell<(u64, String, String)> = const { std::cell::RefCell::new((u64::MAX, String::new(), String::new())) };
}

/// `06/Dec/2026:01:07:07 +0000`, or `2026-12-06T01:07:07+00:00`.
fn local_time(now: std::time::SystemTime, iso: bool) -> String {
    let seconds = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    CLOCK.with(|clock| {
        let mut clock = clock.borrow_mut();
        if clock.0 != seconds {
            *clock = (seconds, format_local(seconds, false), format_local(seconds, true));
        }
        if iso { clock.2.clone() } else { clock.1.clone() }
    })
}

fn format_local(seconds: u64, iso: bool) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let time = libc::time_t::try_from(seconds).unwrap_or(0);
    // SAFETY: tm is plain data that localtime_r fills; both pointers live
    // across the call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return "-".into();
        }
        tm
    };
    let offset_minutes = tm.tm_gmtoff / 60;
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let (hours, minutes) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
    let month = usize::try_from(tm.tm_mon).ok().and_then(|m| MONTHS.get(m)).copied().unwrap_or("???");
    if iso {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{hours:02}:{minutes:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    } else {
        format!(
            "{:02}/{month}/{:04}:{:02}:{:02}:{:02} {sign}{hours:02}{minutes:02}",
            tm.tm_mday,
            tm.tm_year + 1900,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn facts<'a>(headers: &'a [Option<Vec<u8>>]) -> Facts<'a> {
        Facts {
            remote_addr: "192.0.2.7",
            now: UNIX_EPOCH + Duration::from_millis(1_796_500_000_250),
            request_line: Some("GET /a?b=1 HTTP/1.1"),
            method: "GET",
            uri: "/a?b=1",
            protocol: "HTTP/1.1",
            scheme: "https",
            host: Some(b"Example.COM:8443"),
            status: 200,
            bytes_sent: 1234,
            body_bytes_sent: 1000,
            request_time: Duration::from_micros(12_345),
            queue_time: Some(Duration::from_millis(3)),
            upstream_time: None,
            connection: 42,
            connection_requests: 3,
            headers,
        }
    }

    #[test]
    fn combined_is_nginxs_and_values_are_escaped() {
        let format = Format::parse("combined").unwrap();
        assert_eq!(format.headers(), ["referer", "user-agent"]);
        let headers = [None, Some(b"curl/8 \"quoted\"\x01".to_vec())];
        let line = format.render(&facts(&headers));
        let time = local_time(UNIX_EPOCH + Duration::from_millis(1_796_500_000_250), false);
        assert_eq!(
            line,
            format!("192.0.2.7 - - [{time}] \"GET /a?b=1 HTTP/1.1\" 200 1000 \"-\" \"curl/8 \\x22quoted\\x22\\x01\"\n")
        );
    }

    #[test]
    fn times_hosts_and_headers_read_as_nginx_writes_them() {
        let format = Format::parse("$request_time ${queue_time} $upstream_response_time $host $http_x_request_id $msec $scheme $connection/$connection_requests").unwrap();
        assert_eq!(format.headers(), ["x-request-id"]);
        let headers = [Some(b"abc".to_vec())];
        assert_eq!(format.render(&facts(&headers)), "0.012 0.003 - example.com abc 1796500000.250 https 42/3\n");
    }

    #[test]
    fn a_host_loses_its_port_only() {
        assert_eq!(without_port(b"example.com:8080"), b"example.com");
        assert_eq!(without_port(b"example.com"), b"example.com");
        assert_eq!(without_port(b"[::1]:8080"), b"[::1]");
        assert_eq!(without_port(b"[2001:db8::1]"), b"[2001:db8::1]");
    }

    #[test]
    fn unknown_variables_and_empty_formats_are_refused() {
        assert!(Format::parse("$remote_addr $bogus").unwrap_err().contains("unknown variable $bogus"));
        assert!(Format::parse("").is_err());
        assert!(Format::parse("${status").is_err());
        assert!(Format::parse("$http_").is_err(), "a header needs a name");
    }

    #[test]
    fn local_time_has_nginxs_shape() {
        let text = local_time(UNIX_EPOCH + Duration::from_secs(1_796_500_000), false);
        let shape = text.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect::<String>();
        assert!(shape.len() == 26 && shape.ends_with(['9']), "{text}");
        assert!(local_time(UNIX_EPOCH, true).contains('T'));
    }
}
