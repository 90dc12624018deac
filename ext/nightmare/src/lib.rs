//! Ruby glue only: `Nightmare::Native`. Converts between Ruby values and the
//! front's Rust types; every decision lives in the `nightmare-front` crate.

use std::cell::RefCell;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd, RawFd};

use magnus::{
    Error, ExceptionClass, Float, Integer, RArray, RHash, RModule, RString, Ruby, Symbol, TryConvert, function, method,
    prelude::*,
};
use nightmare_front::acme::{AcmeSettings, ChallengeKind};
use nightmare_front::config::given::{Given, GivenValue};
use nightmare_front::config::settings::{self, Normal};
use nightmare_front::http::error_pages::ErrorPages;
use nightmare_front::net::descriptors;
use nightmare_front::net::tls::{self, CertificatePair, TlsSettings, TlsVersion};
use nightmare_front::static_files::StaticSettings;
use nightmare_front::static_files::accel::SendfileRoot;
use nightmare_front::status_page::StatusPage;
use nightmare_front::upstream::address::UpstreamAddress;
use nightmare_front::upstream::proxy_header::{self, Secret};
use nightmare_front::upstream::spec::{HostPattern, HostRoute, ServerSpec, UpstreamSpec};
use nightmare_front::{Front, FrontConfig, FrontSetup, InheritedListener, LocalWorkers};
use std::time::Duration;

/// The front as Ruby holds it. Ruby 3.1 frees wrapped objects at exit in
/// every process, forked children included, so the pid of the process that
/// started the threads is kept: elsewhere the threads do not exist.
#[magnus::wrap(class = "Nightmare::Native::Front", free_immediately, size)]
struct RubyFront {
    front: RefCell<Option<Front>>,
    owner_pid: u32,
}

impl Drop for RubyFront {
    fn drop(&mut self) {
        let Some(front) = self.front.get_mut().take() else {
            return;
        };
        if std::process::id() == self.owner_pid {
            // Freeing must not block: ask the loops to end and let them go.
            front.stop(false);
            drop(front);
        } else {
            std::mem::forget(front);
        }
    }
}

impl RubyFront {
    /// `setup` is `{options:, listeners:, tls:, local:, log_fd:,
    /// access_log_fd:}`: the normalized settings, the listeners as `[fd,
    /// ssl block index or nil]` pairs, the ssl blocks' settings (see
    /// `tls_settings`), the master's own workers as `{socket:, secret:,
    /// workers:}` (nil when standalone), the log pipe's write end, and the
    /// access log's descriptor (nil when off), which the caller keeps open.
    fn start(ruby: &Ruby, setup: RHash) -> Result<RubyFront, Error> {
        let get = |key: &str| -> Result<magnus::Value, Error> {
            setup
                .get(ruby.to_symbol(key))
                .ok_or_else(|| Error::new(ruby.exception_arg_error(), format!("the front's setup lacks {key}")))
        };
        let config = front_config(ruby, RHash::try_convert(get("options")?)?)?;
        let listeners = Vec::<(RawFd, Option<usize>)>::try_convert(get("listeners")?)?
            .into_iter()
            .map(|(fd, tls)| Ok(InheritedListener { fd: duplicate(ruby, fd)?, tls }))
            .collect::<Result<Vec<_>, Error>>()?;
        let tls = tls_settings_list(ruby, RArray::try_convert(get("tls")?)?)?;
        let log = duplicate(ruby, RawFd::try_convert(get("log_fd")?)?)?;
        descriptors::set_nonblocking(log.as_fd()).map_err(|e| io_error(ruby, "log pipe", e))?;
        let local = Option::<RHash>::try_convert(get("local")?)?
            .map(|local| -> Result<LocalWorkers, Error> {
                let field = |key: &str| {
                    local
                        .get(ruby.to_symbol(key))
                        .ok_or_else(|| Error::new(ruby.exception_arg_error(), format!("the local workers lack {key}")))
                };
                Ok(LocalWorkers {
                    socket: String::try_convert(field("socket")?)?.into(),
                    secret: secret_from(ruby, RString::try_convert(field("secret")?)?)?,
                    workers: usize::try_convert(field("workers")?)?,
                    per_worker: 1,
                })
            })
            .transpose()?;
        let setup = FrontSetup {
            config,
            listeners,
            tls,
            local,
            log,
            access_log: Option::<RawFd>::try_convert(get("access_log_fd")?)?,
        };
        let front = Front::start(setup).map_err(|error| {
            if error.kind() == std::io::ErrorKind::InvalidInput {
                Error::new(ruby.exception_arg_error(), error.to_string())
            } else {
                io_error(ruby, "cannot start the front", error)
            }
        })?;
        Ok(RubyFront { front: RefCell::new(Some(front)), owner_pid: std::process::id() })
    }

    fn with_front<T>(ruby: &Ruby, rb_self: &Self, body: impl FnOnce(&mut Front) -> T) -> Result<T, Error> {
        let mut front = rb_self.front.borrow_mut();
        match front.as_mut() {
            Some(front) if std::process::id() == rb_self.owner_pid => Ok(body(front)),
            _ => Err(Error::new(nightmare_error(ruby), "this front does not run in this process")),
        }
    }

    fn set_worker_count(ruby: &Ruby, rb_self: &Self, workers: usize) -> Result<(), Error> {
        Self::with_front(ruby, rb_self, |front| front.set_worker_count(workers))
    }

    /// New certificates for every ssl block; raises ArgumentError naming
    /// the file at fault, and then the running ones stay.
    fn reload_tls(ruby: &Ruby, rb_self: &Self, tls: RArray) -> Result<(), Error> {
        let settings = tls_settings_list(ruby, tls)?;
        Self::with_front(ruby, rb_self, |front| front.reload_tls(&settings))?
            .map_err(|error| Error::new(ruby.exception_arg_error(), error.to_string()))
    }

    fn stop(ruby: &Ruby, rb_self: &Self, graceful: bool) -> Result<(), Error> {
        Self::with_front(ruby, rb_self, |front| front.stop(graceful))
    }

    fn is_stopping(ruby: &Ruby, rb_self: &Self) -> Result<bool, Error> {
        Self::with_front(ruby, rb_self, |front| front.is_stopping())
    }

    fn finished_threads(ruby: &Ruby, rb_self: &Self) -> Result<usize, Error> {
        Self::with_front(ruby, rb_self, |front| front.finished_threads())
    }

    fn is_finished(ruby: &Ruby, rb_self: &Self) -> Result<bool, Error> {
        Self::with_front(ruby, rb_self, |front| front.is_finished())
    }

    /// Call only once `finished?` is true: joining never blocks then.
    fn join(ruby: &Ruby, rb_self: &Self) -> Result<usize, Error> {
        Self::with_front(ruby, rb_self, |front| front.join())
    }

    fn stats(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let figures = Self::with_front(ruby, rb_self, |front| front.stats())?;
        let hash = ruby.hash_new();
        for (name, value) in figures {
            hash.aset(ruby.to_symbol(name), value)?;
        }
        Ok(hash)
    }
}

/// Reads the preamble the front writes ahead of each request, in a worker:
/// with the master's secret on the private listener, or without (nil) on
/// a listener marked `proxy_protocol` that a front on another host uses.
#[magnus::wrap(class = "Nightmare::Native::PreambleReader", free_immediately, size)]
struct PreambleReader {
    secret: Option<Secret>,
}

impl PreambleReader {
    fn new(ruby: &Ruby, secret: Option<RString>) -> Result<PreambleReader, Error> {
        Ok(PreambleReader { secret: secret.map(|secret| secret_from(ruby, secret)).transpose()? })
    }

    /// `[address, request_start]`: the client's address as Unicorn reports
    /// it, and the bytes of the request read with the preamble (`nil` if
    /// none came with it). Raises Nightmare::PreambleRefused, saying why,
    /// for a connection that is not a request from this master's front.
    fn read(ruby: &Ruby, rb_self: &Self, fd: RawFd) -> Result<(String, Option<RString>), Error> {
        // SAFETY: the caller passes `IO#fileno` of the socket it just
        // accepted and holds, which is open for this call.
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        // As much as Unicorn's own first read of a request takes.
        let mut buffer = [0u8; 16 * 1024];
        // Only the master's own front knows its secret; others are remote.
        let patience = match rb_self.secret {
            Some(_) => proxy_header::WORKER_PATIENCE,
            None => proxy_header::REMOTE_FRONT_PATIENCE,
        };
        match proxy_header::read(socket, rb_self.secret.as_ref(), patience, &mut buffer) {
            // Local is shown as what Unicorn reports for UNIX-socket clients.
            Ok(Ok((client, 0))) => Ok((client.to_string(), None)),
            Ok(Ok((client, length))) => {
                let start = proxy_header::PREAMBLE_LEN;
                Ok((client.to_string(), Some(ruby.str_from_slice(&buffer[start..start + length]))))
            }
            Ok(Err(proxy_header::Refusal::Probe)) => {
                Err(Error::new(nightmare_class(ruby, "PreambleProbe"), proxy_header::Refusal::Probe.describe()))
            }
            Ok(Err(refusal)) => Err(Error::new(nightmare_class(ruby, "PreambleRefused"), refusal.describe())),
            Err(error) => Err(io_error(ruby, "reading a request's preamble", error)),
        }
    }
}

/// `Nightmare::Native.accept(listener_fd)`: `[fd, ip]` for the next
/// connection on a worker's listener (the caller owns the descriptor; `ip`
/// is nil for a UNIX socket), or nil when none is waiting.
fn accept(ruby: &Ruby, listener: RawFd) -> Result<Option<(RawFd, Option<String>)>, Error> {
    // SAFETY: the caller passes `IO#fileno` of a listener it holds open.
    let listener = unsafe { std::os::fd::BorrowedFd::borrow_raw(listener) };
    match nightmare_front::net::accept::accept(listener) {
        Ok(Some((socket, peer))) => Ok(Some((socket.into_raw_fd(), peer.map(|ip| ip.to_string())))),
        Ok(None) => Ok(None),
        Err(error) => Err(io_error(ruby, "accepting a connection", error)),
    }
}

/// `Nightmare::Native.check_tls(settings)`: reads and parses every file of
/// one ssl block, as the master does when it loads the config; raises
/// ArgumentError naming the directive and the file at fault.
fn check_tls(ruby: &Ruby, settings: RHash) -> Result<(), Error> {
    let settings = tls_settings(ruby, settings)?;
    tls::check(&settings).map_err(|error| Error::new(ruby.exception_arg_error(), error.to_string()))
}

fn tls_settings_list(ruby: &Ruby, list: RArray) -> Result<Vec<TlsSettings>, Error> {
    list.into_iter().map(|item| tls_settings(ruby, RHash::try_convert(item)?)).collect()
}

/// `{certificates: [[cert, key], ...], protocols: ["TLSv1.2", "TLSv1.3"],
/// prefer_server_ciphers: bool, http2: bool, redirect: bool}`, as
/// Nightmare::TlsSettings#to_native makes it.
fn tls_settings(ruby: &Ruby, hash: RHash) -> Result<TlsSettings, Error> {
    let get = |key: &str| hash.get(ruby.to_symbol(key)).filter(|value| !value.is_nil());
    let mut settings = TlsSettings::default();
    if let Some(pairs) = get("certificates") {
        settings.certificates = Vec::<(String, String)>::try_convert(pairs)?
            .into_iter()
            .map(|(certificate, key)| CertificatePair { certificate: certificate.into(), key: key.into() })
            .collect();
    }
    if let Some(protocols) = get("protocols") {
        settings.versions = Vec::<String>::try_convert(protocols)?
            .iter()
            .map(|name| match name.as_str() {
                "TLSv1.2" => Ok(TlsVersion::Tls12),
                "TLSv1.3" => Ok(TlsVersion::Tls13),
                other => Err(Error::new(ruby.exception_arg_error(), format!("ssl_protocols: rustls has no {other}"))),
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(prefer) = get("prefer_server_ciphers") {
        settings.prefer_server_ciphers = bool::try_convert(prefer)?;
    }
    if let Some(http2) = get("http2") {
        settings.http2 = bool::try_convert(http2)?;
    }
    if let Some(redirect) = get("redirect") {
        settings.redirect = bool::try_convert(redirect)?;
    }
    if let Some(acme) = get("acme") {
        settings.acme = Some(acme_settings(ruby, RHash::try_convert(acme)?)?);
    }
    Ok(settings)
}

/// `{directory:, contact: [...], state_path:, accept_terms_of_service:,
/// ca_file:, challenge:, certificates: [[name, ...], ...]}`, as
/// Nightmare::AcmeSettings#to_native makes it.
fn acme_settings(ruby: &Ruby, hash: RHash) -> Result<AcmeSettings, Error> {
    let get = |key: &str| hash.get(ruby.to_symbol(key)).filter(|value| !value.is_nil());
    let mut settings = AcmeSettings::default();
    if let Some(directory) = get("directory") {
        settings.directory = String::try_convert(directory)?;
    }
    if let Some(contact) = get("contact") {
        settings.contact = Vec::<String>::try_convert(contact)?;
    }
    if let Some(state_path) = get("state_path") {
        settings.state_path = String::try_convert(state_path)?.into();
    }
    if let Some(accept) = get("accept_terms_of_service") {
        settings.accept_terms_of_service = bool::try_convert(accept)?;
    }
    if let Some(ca_file) = get("ca_file") {
        settings.ca_file = Some(String::try_convert(ca_file)?.into());
    }
    if let Some(certificates) = get("certificates") {
        settings.certificates = Vec::<Vec<String>>::try_convert(certificates)?;
    }
    if let Some(challenge) = get("challenge") {
        let name = String::try_convert(challenge)?;
        settings.challenge = Some(ChallengeKind::from_name(&name).ok_or_else(|| {
            Error::new(
                ruby.exception_arg_error(),
                format!("acme_issuer challenge: {name} is not http-01 or tls-alpn-01"),
            )
        })?);
    }
    Ok(settings)
}

fn secret_from(ruby: &Ruby, secret: RString) -> Result<Secret, Error> {
    // SAFETY: the bytes are copied out before Ruby runs again.
    let bytes = unsafe { secret.as_slice() };
    bytes.try_into().map_err(|_| {
        let message = format!("the front's secret must be {} bytes", proxy_header::SECRET_LEN);
        Error::new(ruby.exception_arg_error(), message)
    })
}

/// A FrontConfig from the normalized settings `Nightmare::Options` holds
/// (and `read_settings` made), with try_files, the status page, upstreams,
/// HSTS, the error pages (`[[status, html], ...]`) and the sendfile roots
/// (`[[directory, prefix], ...]`).
fn front_config(ruby: &Ruby, options: RHash) -> Result<FrontConfig, Error> {
    let try_files = options.get(ruby.to_symbol("try_files")).filter(|value| !value.is_nil());
    options.delete::<_, magnus::Value>(ruby.to_symbol("try_files"))?;
    let status_page = options.get(ruby.to_symbol("status_page")).filter(|value| !value.is_nil());
    options.delete::<_, magnus::Value>(ruby.to_symbol("status_page"))?;
    let upstreams = options.get(ruby.to_symbol("upstreams")).filter(|value| !value.is_nil());
    options.delete::<_, magnus::Value>(ruby.to_symbol("upstreams"))?;
    let hsts = options.get(ruby.to_symbol("hsts")).filter(|value| !value.is_nil());
    options.delete::<_, magnus::Value>(ruby.to_symbol("hsts"))?;
    let error_pages = options.get(ruby.to_symbol("error_pages")).filter(|value| !value.is_nil());
    options.delete::<_, magnus::Value>(ruby.to_symbol("error_pages"))?;
    let sendfile_roots = options.get(ruby.to_symbol("sendfile_roots")).filter(|value| !value.is_nil());
    options.delete::<_, magnus::Value>(ruby.to_symbol("sendfile_roots"))?;
    let (mut config, _) = FrontConfig::from_given(&given_pairs(options)?)
        .map_err(|message| Error::new(ruby.exception_arg_error(), message))?;
    if let Some(try_files) = try_files {
        config.static_files = Some(static_settings(ruby, RHash::try_convert(try_files)?)?);
    }
    if let Some(page) = status_page {
        let (path, allow) = <(String, Vec<String>)>::try_convert(page)?;
        config.status_page = Some(check_status_page(ruby, path, allow)?);
    }
    if let Some(upstreams) = upstreams {
        config.upstreams = upstream_spec(ruby, RHash::try_convert(upstreams)?)?;
    }
    if let Some(hsts) = hsts {
        config.hsts = Some(String::try_convert(hsts)?.into());
    }
    if let Some(pages) = error_pages {
        // UTF-8, as Nightmare::ErrorPages checked.
        let pages = Vec::<(u16, String)>::try_convert(pages)?
            .into_iter()
            .map(|(status, page)| (status, page.into_bytes()))
            .collect();
        config.error_pages =
            ErrorPages::new(pages).map_err(|message| Error::new(ruby.exception_arg_error(), message))?;
    }
    if let Some(roots) = sendfile_roots {
        config.sendfile_roots = Vec::<(String, String)>::try_convert(roots)?
            .into_iter()
            .map(|(root, prefix)| SendfileRoot { root: root.into(), prefix })
            .collect();
    }
    Ok(config)
}

/// `{servers: [server, ...], routes: [[host pattern, [server, ...]], ...]}`
/// with each server `{address:, backup:, max_conns:, max_fails:,
/// fail_timeout:, proxy_protocol:}`, as Nightmare::Upstreams#to_native
/// makes it. Names are resolved now, each address a server of its own.
fn upstream_spec(ruby: &Ruby, hash: RHash) -> Result<UpstreamSpec, Error> {
    let argument_error = |message: String| Error::new(ruby.exception_arg_error(), message);
    let servers = |list: magnus::Value| -> Result<Vec<ServerSpec>, Error> {
        let mut servers = Vec::new();
        for server in RArray::try_convert(list)? {
            let server = RHash::try_convert(server)?;
            let field = |key: &str| server.get(ruby.to_symbol(key)).filter(|value| !value.is_nil());
            let address = String::try_convert(
                field("address").ok_or_else(|| argument_error("a server lacks its address".into()))?,
            )?;
            for resolved in UpstreamAddress::resolve(&address).map_err(argument_error)? {
                let mut spec = ServerSpec::new(resolved);
                if let Some(value) = field("backup") {
                    spec.backup = bool::try_convert(value)?;
                }
                if let Some(value) = field("max_conns") {
                    spec.max_conns = usize::try_convert(value)?;
                }
                if let Some(value) = field("max_fails") {
                    spec.max_fails = u32::try_convert(value)?;
                }
                if let Some(value) = field("fail_timeout") {
                    let seconds = f64::try_convert(value)?;
                    spec.fail_timeout = Duration::try_from_secs_f64(seconds)
                        .map_err(|_| argument_error(format!("fail_timeout: not a usable time: {seconds}")))?;
                }
                if let Some(value) = field("proxy_protocol") {
                    spec.proxy_protocol = bool::try_convert(value)?;
                }
                servers.push(spec);
            }
        }
        Ok(servers)
    };
    let mut spec = UpstreamSpec::default();
    if let Some(list) = hash.get(ruby.to_symbol("servers")) {
        spec.servers = servers(list)?;
    }
    if let Some(routes) = hash.get(ruby.to_symbol("routes")) {
        for route in RArray::try_convert(routes)? {
            let (pattern, list) = <(String, magnus::Value)>::try_convert(route)?;
            let pattern = HostPattern::parse(&pattern).map_err(argument_error)?;
            spec.routes.push(HostRoute { pattern, servers: servers(list)? });
        }
    }
    Ok(spec)
}

/// `Nightmare::Native.resolve_upstream(address)`: the addresses an
/// upstream's name stands for now, as strings; ArgumentError naming what
/// does not read or resolve.
fn resolve_upstream(ruby: &Ruby, address: String) -> Result<Vec<String>, Error> {
    UpstreamAddress::resolve(&address)
        .map(|addresses| addresses.iter().map(ToString::to_string).collect())
        .map_err(|message| Error::new(ruby.exception_arg_error(), message))
}

/// `Nightmare::Native.read_time(name, value)`: seconds, from a Numeric or
/// a String like "30s", as the settings read times; ArgumentError naming
/// `name` otherwise.
fn read_time(ruby: &Ruby, name: String, value: magnus::Value) -> Result<f64, Error> {
    nightmare_front::config::given::time(&name, &given(value))
        .map(|duration| duration.as_secs_f64())
        .map_err(|message| Error::new(ruby.exception_arg_error(), message))
}

/// `Nightmare::Native.check_host_pattern(pattern)`: raises ArgumentError
/// for a map key that is no host name.
fn check_host_pattern(ruby: &Ruby, pattern: String) -> Result<(), Error> {
    HostPattern::parse(&pattern).map(|_| ()).map_err(|message| Error::new(ruby.exception_arg_error(), message))
}

/// `Nightmare::Native.check_status_page(path, allow)`: the status_path
/// directive read, or an ArgumentError naming what does not read.
fn check_status_page(ruby: &Ruby, path: String, allow: Vec<String>) -> Result<StatusPage, Error> {
    StatusPage::new(&path, &allow).map_err(|message| Error::new(ruby.exception_arg_error(), message))
}

/// `Nightmare::Native.read_settings(hash)`: the `nightmare` directive's
/// settings checked and read, every setting present (defaults filled in),
/// as `{name: value}` with sizes in bytes, times in seconds and "auto"
/// kept; raises ArgumentError naming the setting and the fix.
fn read_settings(ruby: &Ruby, given: RHash) -> Result<RHash, Error> {
    let (_, read) = FrontConfig::from_given(&given_pairs(given)?)
        .map_err(|message| Error::new(ruby.exception_arg_error(), message))?;
    let hash = ruby.hash_new();
    for (name, value) in read {
        let value = match value {
            Normal::Integer(number) => ruby.integer_from_u64(number).as_value(),
            Normal::Seconds(seconds) => ruby.float_from_f64(seconds).as_value(),
            Normal::Path(path) => ruby.str_new(&path).as_value(),
            Normal::Pair(count, size) => {
                ruby.ary_new_from_values(&[ruby.integer_from_u64(count), ruby.integer_from_u64(size)]).as_value()
            }
            Normal::Text(text) => ruby.str_new(&text).as_value(),
            Normal::Auto => ruby.str_new("auto").as_value(),
            Normal::Off => ruby.str_new("off").as_value(),
        };
        hash.aset(ruby.to_symbol(name), value)?;
    }
    Ok(hash)
}

/// `Nightmare::Native.settings_table`: the README's table of settings.
fn settings_table() -> String {
    settings::markdown_table()
}

fn given_pairs(hash: RHash) -> Result<Vec<(Given, Given)>, Error> {
    let mut pairs = Vec::new();
    hash.foreach(|name: magnus::Value, value: magnus::Value| {
        pairs.push((given(name), given(value)));
        Ok(magnus::r_hash::ForEach::Continue)
    })?;
    Ok(pairs)
}

/// A Ruby value as the settings table reads it, and as Ruby shows it.
fn given(value: magnus::Value) -> Given {
    let shown = value.inspect();
    let value = if let Some(integer) = Integer::from_value(value) {
        // Beyond i64 no setting can take it; shown as given, refused as too much.
        integer.to_i64().map_or(GivenValue::Float(f64::INFINITY), GivenValue::Integer)
    } else if let Some(float) = Float::from_value(value) {
        GivenValue::Float(float.to_f64())
    } else if let Some(text) = RString::from_value(value) {
        text.to_string().map_or(GivenValue::Other, GivenValue::Text)
    } else if let Some(symbol) = Symbol::from_value(value) {
        symbol.name().map_or(GivenValue::Other, |name| GivenValue::Text(name.into_owned()))
    } else if let Some(list) = RArray::from_value(value) {
        GivenValue::List(list.into_iter().map(given).collect())
    } else if magnus::value::Qtrue::from_value(value).is_some() {
        GivenValue::Bool(true)
    } else if magnus::value::Qfalse::from_value(value).is_some() {
        GivenValue::Bool(false)
    } else {
        GivenValue::Other
    };
    Given { value, shown }
}

/// `{root:, candidates: [...], dotfiles:, symlinks_outside:, precompressed:}`,
/// as Nightmare::TryFiles#to_native makes it.
fn static_settings(ruby: &Ruby, hash: RHash) -> Result<StaticSettings, Error> {
    let get = |key: &str| hash.get(ruby.to_symbol(key)).filter(|value| !value.is_nil());
    let root = get("root").ok_or_else(|| Error::new(ruby.exception_arg_error(), "try_files needs a root"))?;
    let mut settings = StaticSettings::new(String::try_convert(root)?.into());
    if let Some(candidates) = get("candidates") {
        settings.candidates = Vec::<String>::try_convert(candidates)?;
    }
    if let Some(value) = get("dotfiles") {
        settings.dotfiles = bool::try_convert(value)?;
    }
    if let Some(value) = get("symlinks_outside") {
        settings.symlinks_outside = bool::try_convert(value)?;
    }
    if let Some(value) = get("precompressed") {
        settings.precompressed = bool::try_convert(value)?;
    }
    Ok(settings)
}

/// The front keeps its own copies of the descriptors Ruby passes, so Ruby
/// may close or garbage-collect its IO objects without pulling the rug.
fn duplicate(ruby: &Ruby, fd: RawFd) -> Result<OwnedFd, Error> {
    descriptors::duplicate(fd).map_err(|error| io_error(ruby, &format!("descriptor {fd}"), error))
}

fn nightmare_error(ruby: &Ruby) -> ExceptionClass {
    nightmare_class(ruby, "Error")
}

fn nightmare_class(ruby: &Ruby, name: &str) -> ExceptionClass {
    ruby.class_object()
        .const_get::<_, RModule>("Nightmare")
        .and_then(|module| module.const_get::<_, ExceptionClass>(name))
        .unwrap_or_else(|_| ruby.exception_runtime_error())
}

fn io_error(ruby: &Ruby, context: &str, error: std::io::Error) -> Error {
    Error::new(nightmare_error(ruby), format!("{context}: {error}"))
}

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let nightmare = ruby.define_module("Nightmare")?;
    let native = nightmare.define_module("Native")?;
    let reader = native.define_class("PreambleReader", ruby.class_object())?;
    reader.define_singleton_method("new", function!(PreambleReader::new, 1))?;
    reader.define_method("read", method!(PreambleReader::read, 1))?;
    let front = native.define_class("Front", ruby.class_object())?;
    native.define_singleton_method("accept", function!(accept, 1))?;
    native.define_singleton_method("check_tls", function!(check_tls, 1))?;
    native.define_singleton_method("read_settings", function!(read_settings, 1))?;
    native.define_singleton_method("settings_table", function!(settings_table, 0))?;
    native.define_singleton_method("resolve_upstream", function!(resolve_upstream, 1))?;
    native.define_singleton_method("check_host_pattern", function!(check_host_pattern, 1))?;
    native.define_singleton_method("read_time", function!(read_time, 2))?;
    native.define_singleton_method(
        "check_status_page",
        function!(|ruby: &Ruby, path: String, allow: Vec<String>| check_status_page(ruby, path, allow).map(|_| ()), 2),
    )?;
    front.define_singleton_method("start", function!(RubyFront::start, 1))?;
    front.define_method("reload_tls", method!(RubyFront::reload_tls, 1))?;
    front.define_method("worker_count=", method!(RubyFront::set_worker_count, 1))?;
    front.define_method("stop", method!(RubyFront::stop, 1))?;
    front.define_method("stopping?", method!(RubyFront::is_stopping, 0))?;
    front.define_method("finished_threads", method!(RubyFront::finished_threads, 0))?;
    front.define_method("finished?", method!(RubyFront::is_finished, 0))?;
    front.define_method("join", method!(RubyFront::join, 0))?;
    front.define_method("stats", method!(RubyFront::stats, 0))?;
    Ok(())
}
