//! Every setting of the `nightmare` directive, defined once: its name, how
//! its value reads, its default, nginx's name for it, what it does (the
//! README's table is made from these), and the field of `FrontConfig` it
//! sets. The Ruby configurator checks a config file against this table
//! (through the glue), so a typo stops Unicorn at load time.

use std::sync::Arc;
use std::time::Duration;

use super::FrontConfig;
use super::given::{self, Given};
use crate::access_log::Format;

/// How a setting's value reads, and where it goes.
pub enum Kind {
    Count {
        min: u64,
        store: fn(&mut FrontConfig, u64),
    },
    /// A count, or "auto" (`None`): the front works it out.
    CountOrAuto {
        min: u64,
        store: fn(&mut FrontConfig, Option<u64>),
    },
    Size {
        min: u64,
        store: fn(&mut FrontConfig, u64),
    },
    SizeOrAuto {
        min: u64,
        store: fn(&mut FrontConfig, Option<u64>),
    },
    Time {
        store: fn(&mut FrontConfig, Duration),
    },
    Directory {
        store: fn(&mut FrontConfig, Arc<std::path::Path>),
    },
    /// nginx's `large_client_header_buffers number size`.
    Buffers {
        store: fn(&mut FrontConfig, u64, u64),
    },
    /// A file to append to, or "off".
    FileOrOff {
        store: fn(&mut FrontConfig, Option<std::path::PathBuf>),
    },
    /// nginx's log_format language.
    LogFormat {
        store: fn(&mut FrontConfig, Format),
    },
    /// true or false ("on" or "off").
    Switch {
        store: fn(&mut FrontConfig, bool),
    },
}

/// What a setting is when the config file does not say.
pub enum Default {
    /// As a user would write it.
    Written(&'static str),
    Number(i64),
    Buffers(i64, &'static str),
    /// Worked out on the machine: `shown` is how the README says it.
    Computed {
        shown: &'static str,
        value: fn() -> Given,
    },
}

pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    pub default: Default,
    /// nginx's (or HAProxy's) name for the same knob, for the README.
    pub nginx: &'static str,
    /// What it does, for the README.
    pub about: &'static str,
}

/// A setting's value as it was read: what Ruby gets back (so that two
/// configs compare equal when they mean the same) and the glue passes on.
#[derive(Clone, Debug, PartialEq)]
pub enum Normal {
    Integer(u64),
    Seconds(f64),
    Path(String),
    Pair(u64, u64),
    Text(String),
    Auto,
    Off,
}

impl Setting {
    /// Reads `value` and stores it in `config`; the value as read, or why
    /// it does not read.
    pub fn apply(&self, config: &mut FrontConfig, value: &Given) -> Result<Normal, String> {
        let name = self.name;
        Ok(match &self.kind {
            Kind::Count { min, store } => {
                let count = given::count(name, value, *min)?;
                store(config, count);
                Normal::Integer(count)
            }
            Kind::CountOrAuto { store, .. } if value.is_auto() => {
                store(config, None);
                Normal::Auto
            }
            Kind::CountOrAuto { min, store } => {
                let count = given::count(name, value, *min).map_err(|message| format!("{message} (or \"auto\")"))?;
                store(config, Some(count));
                Normal::Integer(count)
            }
            Kind::Size { min, store } => {
                let bytes = given::size(name, value, *min)?;
                store(config, bytes);
                Normal::Integer(bytes)
            }
            Kind::SizeOrAuto { store, .. } if value.is_auto() => {
                store(config, None);
                Normal::Auto
            }
            Kind::SizeOrAuto { min, store } => {
                let bytes = given::size(name, value, *min).map_err(|_| {
                    format!(
                        "not a size or \"auto\": nightmare {name}={} (give bytes as an Integer, a String like \
                         \"512k\", \"10m\", \"1g\", or \"auto\")",
                        value.shown
                    )
                })?;
                store(config, Some(bytes));
                Normal::Integer(bytes)
            }
            Kind::Time { store } => {
                let duration = given::time(name, value)?;
                store(config, duration);
                Normal::Seconds(duration.as_secs_f64())
            }
            Kind::Directory { store } => {
                let path = given::directory(name, value)?;
                let shown = path.to_string_lossy().into_owned();
                store(config, Arc::from(path));
                Normal::Path(shown)
            }
            Kind::Buffers { store } => {
                let (count, size) = given::buffers(name, value)?;
                store(config, count, size);
                Normal::Pair(count, size)
            }
            Kind::FileOrOff { store } if value.is_off() => {
                store(config, None);
                Normal::Off
            }
            Kind::FileOrOff { store } => {
                let path = given::file(name, value)?;
                let shown = path.to_string_lossy().into_owned();
                store(config, Some(path));
                Normal::Path(shown)
            }
            Kind::Switch { store } => {
                let on = given::switch(name, value)?;
                store(config, on);
                Normal::Text(if on { "on" } else { "off" }.to_owned())
            }
            Kind::LogFormat { store } => {
                let given::GivenValue::Text(text) = &value.value else {
                    return Err(format!("not a format: nightmare {name}={} (give a String)", value.shown));
                };
                store(config, Format::parse(text)?);
                Normal::Text(text.clone())
            }
        })
    }

    pub fn default_value(&self) -> Given {
        match &self.default {
            Default::Written(text) => Given::text(text),
            Default::Number(number) => Given::integer(*number),
            Default::Buffers(count, size) => Given::list(vec![Given::integer(*count), Given::text(size)]),
            Default::Computed { value, .. } => value(),
        }
    }

    /// The default as the README shows it.
    pub fn default_shown(&self) -> String {
        match &self.default {
            Default::Written(text) => (*text).to_owned(),
            Default::Number(number) => number.to_string(),
            Default::Buffers(..) => self.default_value().shown,
            Default::Computed { shown, .. } => (*shown).to_owned(),
        }
    }
}

fn cores() -> Given {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Given::integer(i64::try_from(cores).unwrap_or(1))
}

fn temp_dir() -> Given {
    Given::text(&std::env::temp_dir().to_string_lossy())
}

fn usize_of(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "threads",
        kind: Kind::Count { min: 1, store: |c, v| c.threads = usize_of(v) },
        default: Default::Computed { shown: "one per core", value: cores },
        nginx: "`worker_processes`",
        about: "event loop threads in the front; one loop serves its events in turn, and on 2 cores two loops \
                measured 20% faster than one (see Benchmark)",
    },
    Setting {
        name: "client_header_timeout",
        kind: Kind::Time { store: |c, v| c.client_header_timeout = v },
        default: Default::Written("60s"),
        nginx: "same",
        about: "the whole request head must arrive within it, from the connection's first byte; 408 after",
    },
    Setting {
        name: "client_body_timeout",
        kind: Kind::Time { store: |c, v| c.client_body_timeout = v },
        default: Default::Written("60s"),
        nginx: "same",
        about: "longest pause between two reads of a request body; 408 after",
    },
    Setting {
        name: "client_body_min_rate",
        kind: Kind::Size { min: 0, store: |c, v| c.client_body_min_rate = v },
        default: Default::Written("1k"),
        nginx: "–",
        about: "bytes a second a request body must average once `client_body_timeout` has passed since it began; \
                408 after, so a byte every minute cannot hold a connection for hours (nginx has no such guard); \
                0 means no minimum",
    },
    Setting {
        name: "send_timeout",
        kind: Kind::Time { store: |c, v| c.send_timeout = v },
        default: Default::Written("60s"),
        nginx: "same",
        about: "longest pause of a client that takes none of its response; then it is closed",
    },
    Setting {
        name: "send_min_rate",
        kind: Kind::Size { min: 0, store: |c, v| c.send_min_rate = v },
        default: Default::Written("1k"),
        nginx: "–",
        about: "bytes a second a client must average while its response waits for it (time the app takes to \
                write does not count), once `send_timeout` has passed; then it is closed, so a reader taking a \
                byte a minute cannot hold its temp file and socket buffers for days (nginx has no such guard); \
                0 means no minimum",
    },
    Setting {
        name: "tcp_notsent_lowat",
        kind: Kind::Size { min: 0, store: |c, v| c.tcp_notsent_lowat = usize_of(v) },
        default: Default::Written("128k"),
        nginx: "the `net.ipv4.tcp_notsent_lowat` sysctl, for every socket",
        about: "bytes a client's socket may hold that the kernel has not sent yet; what a slow reader does not \
                take then waits in a temp file instead of kernel memory (Linux grows a send buffer up to 4 MiB, \
                and 500 slow readers' buffers took kernel TCP memory past its pressure mark, where fresh clients \
                time out); bytes in flight are not limited, so fast clients on long paths are not slowed; 0 \
                leaves it to the kernel",
    },
    Setting {
        name: "keepalive_timeout",
        kind: Kind::Time { store: |c, v| c.keepalive_timeout = v },
        default: Default::Written("75s"),
        nginx: "same",
        about: "how long an idle client connection waits for its next request",
    },
    Setting {
        name: "http2_cleartext",
        kind: Kind::Switch { store: |c, v| c.http2_cleartext = v },
        default: Default::Written("off"),
        nginx: "`listen ... http2` without `ssl` (Thruster's `H2C_ENABLED`)",
        about: "HTTP/2 with prior knowledge on the plain listeners too (a client that opens with the HTTP/2 \
                preface); HTTPS listeners offer HTTP/2 by ALPN whatever this says (`http2 false` in the `ssl` \
                block turns that off). No h2c Upgrade",
    },
    Setting {
        name: "ssl_redirect",
        kind: Kind::Switch { store: |c, v| c.ssl_redirect = v },
        default: Default::Written("off"),
        nginx: "`return 308 https://$host$request_uri` in a `listen 80` server",
        about: "plain TCP listeners answer every request with 308 to the same host and target on the first \
                `ssl` listener's port (omitted when 443); the status page is exempt. `ssl_redirect true` inside \
                an `ssl` block picks that block's port",
    },
    Setting {
        name: "keepalive_requests",
        kind: Kind::Count { min: 1, store: |c, v| c.keepalive_requests = usize_of(v) },
        default: Default::Number(1000),
        nginx: "same",
        about: "requests on one client connection before it is closed",
    },
    Setting {
        name: "tunnel_timeout",
        kind: Kind::Time { store: |c, v| c.tunnel_timeout = v },
        default: Default::Written("60s"),
        nginx: "`proxy_read_timeout`",
        about: "how long a switched-protocols tunnel (WebSocket) may carry nothing either way",
    },
    Setting {
        name: "client_max_body_size",
        kind: Kind::Size { min: 0, store: |c, v| c.client_max_body_size = v },
        default: Default::Written("1g"),
        nginx: "same (nginx: 1m)",
        about: "larger bodies get 413 without being read; 0 means no limit",
    },
    Setting {
        name: "client_body_buffer_size",
        kind: Kind::Size { min: 0, store: |c, v| c.client_body_buffer_size = usize_of(v) },
        default: Default::Written("16k"),
        nginx: "same",
        about: "bodies up to this stay in memory, larger ones go to `temp_path`",
    },
    Setting {
        name: "large_client_header_buffers",
        kind: Kind::Buffers {
            store: |c, count, size| {
                c.head_limits.line_size = usize_of(size);
                c.head_limits.head_size = usize_of(count.saturating_mul(size));
            },
        },
        default: Default::Buffers(4, "8k"),
        nginx: "same",
        about: "the request line (414 beyond) and each header line (431) fit in one buffer, the head in all of \
                them (431)",
    },
    Setting {
        name: "client_max_headers",
        kind: Kind::Count { min: 1, store: |c, v| c.head_limits.max_headers = usize_of(v) },
        default: Default::Number(100),
        nginx: "–",
        about: "more header fields get 431",
    },
    Setting {
        name: "temp_path",
        kind: Kind::Directory { store: |c, v| c.temp_path = v },
        default: Default::Computed { shown: "`Dir.tmpdir`", value: temp_dir },
        nginx: "`client_body_temp_path`",
        about: "where bodies and responses wait, in unlinked files; a tmpfs (`/dev/shm`) keeps disk writeback \
                from slowing the front under heavy spooling",
    },
    Setting {
        name: "max_connections",
        kind: Kind::Count { min: 1, store: |c, v| c.max_connections = usize_of(v) },
        default: Default::Number(10000),
        nginx: "`worker_connections`",
        about: "open client connections; past it the idle keep-alive ones that would time out soonest are closed \
                to make room, as nginx does, and failing that new clients wait in the listen backlog",
    },
    Setting {
        name: "max_connections_per_address",
        kind: Kind::CountOrAuto { min: 1, store: |c, v| c.connections_per_address = v.map(usize_of) },
        default: Default::Written("auto"),
        nginx: "`limit_conn`",
        about: "open connections one client address (an IPv6 /64) may hold; its next ones get a 503 and are \
                closed unread; `\"auto\"` is a tenth of `max_connections` for public addresses (an office behind \
                one NAT address fits, one attacker cannot hold every connection), and private, loopback and \
                link-local addresses are not counted: load balancers, Docker and Kubernetes NAT connect from \
                there, every client behind one address. A number counts every address but 127.0.0.1 and ::1 (a \
                local proxy or load test)",
    },
    Setting {
        name: "proxy_buffer_size",
        kind: Kind::Size { min: 1024, store: |c, v| c.proxy_buffer_size = usize_of(v) },
        default: Default::Written("32k"),
        nginx: "`proxy_buffers`",
        about: "memory per connection for a response the client has not taken yet; the rest goes to a temp file",
    },
    Setting {
        name: "max_temp_file_size",
        kind: Kind::Size { min: 0, store: |c, v| c.max_temp_file_size = v },
        default: Default::Written("1024m"),
        nginx: "`proxy_max_temp_file_size`",
        about: "how much of one response a temp file may hold; beyond it the worker waits for the client; 0 means \
                no file",
    },
    Setting {
        name: "temp_path_max_size",
        kind: Kind::SizeOrAuto { min: 0, store: |c, v| c.temp_path_max_size = v },
        default: Default::Written("auto"),
        nginx: "–",
        about: "what all temp files together may hold; past it responses spool no more and request bodies that \
                need a file get 503 with `Retry-After`, logged once a minute while it lasts; a worker waits on it a \
                second at most, then the clients holding the most and reading the slowest are shed (see What a \
                client can make the front hold); `\"auto\"` is half of what `temp_path` has free when the front \
                starts; 0 means no limit",
    },
    Setting {
        name: "shutdown_timeout",
        kind: Kind::Time { store: |c, v| c.shutdown_timeout = v },
        default: Default::Written("30s"),
        nginx: "`worker_shutdown_timeout`",
        about: "how long QUIT waits for requests in progress",
    },
    Setting {
        name: "in_flight_per_worker",
        kind: Kind::Count { min: 1, store: |c, v| c.in_flight_per_worker = usize_of(v) },
        default: Default::Number(16),
        nginx: "HAProxy's `maxconn` per server",
        about: "requests handed to the workers' accept queue per worker; the rest wait in the front (fewer \
                measured slower, see Benchmark)",
    },
    Setting {
        name: "requests_per_address",
        kind: Kind::CountOrAuto { min: 0, store: |c, v| c.requests_per_address = v.map(usize_of) },
        default: Default::Written("auto"),
        nginx: "– (nginx passes every request on)",
        about: "requests one client address (an IPv6 /64) may have with the workers at once, in flight or in the \
                front's queue; its next ones wait behind them, not in front of other clients (2,000 requests from \
                one address put a fresh client 27.7 s back in the queue); `\"auto\"` is as many as the master has \
                workers (at least 2; 16 for a front without workers of its own), for public addresses only, as \
                `max_connections_per_address` counts them; a number counts every address but 127.0.0.1 and ::1; \
                0 means no limit",
    },
    Setting {
        name: "max_queued_requests",
        kind: Kind::Count { min: 1, store: |c, v| c.max_queued_requests = usize_of(v) },
        default: Default::Number(1024),
        nginx: "nginx Plus's `queue`",
        about: "requests that may wait in the front for a worker; more get 503 with `Retry-After`",
    },
    Setting {
        name: "queue_timeout",
        kind: Kind::Time { store: |c, v| c.queue_timeout = v },
        default: Default::Written("60s"),
        nginx: "HAProxy's `timeout queue`",
        about: "how long a request may wait in the front for a worker; 503 with `Retry-After` after",
    },
    Setting {
        name: "upstream_connect_timeout",
        kind: Kind::Time { store: |c, v| c.upstream_connect_timeout = v },
        default: Default::Written("1.2s"),
        nginx: "`proxy_connect_timeout` (nginx: 60s)",
        about: "how long a TCP connect to an upstream (`upstream`, `backup`, `map`) may take; past it the host counts \
                as gone from the network, the request goes to the next server, and live traffic stays away from that \
                host until a probe (about once a second) reaches it. Not nginx's 60s: on a LAN a host that takes seconds \
                to answer a connect is gone, and each client behind it would wait that long. Not 1s either: a live \
                host whose accept queue is full drops the SYN, and Linux sends it again after one second",
    },
    Setting {
        name: "upstream_read_timeout",
        kind: Kind::Time { store: |c, v| c.upstream_read_timeout = v },
        default: Default::Written("60s"),
        nginx: "`proxy_read_timeout`",
        about: "how long an upstream may take to begin its response once it has the request; 504 after (the \
                master's own workers are bounded by Unicorn's `timeout` as well)",
    },
    Setting {
        name: "access_log",
        kind: Kind::FileOrOff { store: |c, v| c.access_log = v },
        default: Default::Written("off"),
        nginx: "same",
        about: "a file that gets a line for every request (see `access_log_format`), written off the event loop, \
                reopened on USR1 like Unicorn's logs; `\"off\"` logs none",
    },
    Setting {
        name: "access_log_format",
        kind: Kind::LogFormat { store: |c, v| c.access_log_format = v },
        default: Default::Written(DEFAULT_ACCESS_LOG_FORMAT),
        nginx: "`log_format`",
        about: "nginx's variables (`$remote_addr`, `$time_local`, `$request`, `$status`, `$body_bytes_sent`, \
                `$request_time`, `$http_NAME`, ...) and `$queue_time`, how long the request waited in the front for \
                a worker; `\"combined\"` is nginx's own; the default is combined with `$request_time $queue_time` \
                after it",
    },
    Setting {
        name: "access_log_buffer",
        kind: Kind::Size { min: 4096, store: |c, v| c.access_log_buffer = usize_of(v) },
        default: Default::Written("4m"),
        nginx: "`access_log ... buffer=` (nginx blocks instead)",
        about: "bytes of access log lines that may wait for a slow disk, each line's 64 bytes of bookkeeping \
                counted (a client chooses how long its line is); past it lines are dropped, counted in \
                `access_log_lines_lost` and said in the log once a minute: a stuck log disk never stops the front",
    },
];

/// nginx's combined format, with how long the request took and how long
/// of that it waited for a worker.
const DEFAULT_ACCESS_LOG_FORMAT: &str = concat!(
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "#,
    r#""$http_user_agent" $request_time $queue_time"#
);

/// The setting called `name`.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.name == name)
}

/// The README's table of settings.
pub fn markdown_table() -> String {
    let mut table = String::from("| setting | default | nginx | what it does |\n|---|---|---|---|\n");
    for setting in SETTINGS {
        let (name, default, nginx, about) = (setting.name, setting.default_shown(), setting.nginx, setting.about);
        table.push_str(&format!("| `{name}` | {default} | {nginx} | {about} |\n"));
    }
    table
}
