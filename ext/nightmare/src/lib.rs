//! Ruby glue only: `Nightmare::Native`. Converts between Ruby values and the
//! front's Rust types; every decision lives in the `nightmare-front` crate.

use std::cell::RefCell;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use magnus::{Error, ExceptionClass, RHash, RModule, Ruby, TryConvert, function, method, prelude::*};
use nightmare_front::{Front, FrontConfig, descriptors, handoff};

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
    fn start(
        ruby: &Ruby,
        options: RHash,
        listener_fds: Vec<RawFd>,
        channel_fd: RawFd,
        log_fd: RawFd,
        workers: usize,
    ) -> Result<RubyFront, Error> {
        let config = front_config(ruby, options)?;
        let listeners = listener_fds.into_iter().map(|fd| duplicate(ruby, fd)).collect::<Result<Vec<_>, _>>()?;
        let channel = duplicate(ruby, channel_fd)?;
        let log = duplicate(ruby, log_fd)?;
        descriptors::set_nonblocking(log.as_fd()).map_err(|e| io_error(ruby, "log pipe", e))?;
        let front = Front::start(config, listeners, channel, log, workers).map_err(|error| {
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
        let stats = Self::with_front(ruby, rb_self, |front| front.stats())?;
        let hash = ruby.hash_new();
        hash.aset(ruby.to_symbol("open_connections"), stats.open_connections)?;
        hash.aset(ruby.to_symbol("requests_handed_off"), stats.requests_handed_off)?;
        hash.aset(ruby.to_symbol("workers"), stats.dispatch.limit)?;
        hash.aset(ruby.to_symbol("in_flight"), stats.dispatch.in_flight)?;
        hash.aset(ruby.to_symbol("queued"), stats.dispatch.queued)?;
        hash.aset(ruby.to_symbol("log_lines_dropped"), stats.log_lines_dropped)?;
        Ok(hash)
    }
}

/// Takes one request from the handoff channel, in a worker:
/// `[fd, client_addr, scheme, arrived_usec]`, or nil when another worker
/// took it first. The caller owns the descriptor.
fn receive_handoff(ruby: &Ruby, channel_fd: RawFd) -> Result<Option<(RawFd, String, &'static str, u64)>, Error> {
    // SAFETY: the caller passes `IO#fileno` of the channel it holds, which
    // raises for a closed IO, so the descriptor is open for this call. (No
    // check here: this runs once per request in every worker.)
    let channel = unsafe { std::os::fd::BorrowedFd::borrow_raw(channel_fd) };
    match handoff::receive(channel) {
        Ok(Some((socket, record))) => {
            Ok(Some((socket.into_raw_fd(), record.client_addr, record.scheme.as_str(), record.arrived_usec)))
        }
        Ok(None) => Ok(None),
        Err(error) => Err(io_error(ruby, "handoff channel", error)),
    }
}

fn front_config(ruby: &Ruby, options: RHash) -> Result<FrontConfig, Error> {
    let mut config = FrontConfig::default();
    let get = |key: &str| options.get(ruby.to_symbol(key));
    fn convert<T: TryConvert>(value: Option<magnus::Value>) -> Result<Option<T>, Error> {
        value.filter(|v| !v.is_nil()).map(T::try_convert).transpose()
    }
    let seconds = |value: Option<f64>| value.map(Duration::from_secs_f64);
    if let Some(threads) = convert::<usize>(get("threads"))? {
        config.threads = threads;
    }
    if let Some([count, size]) = convert::<[usize; 2]>(get("large_client_header_buffers"))? {
        config.head_limits.line_size = size;
        config.head_limits.head_size = count * size;
    }
    if let Some(max_headers) = convert::<usize>(get("client_max_headers"))? {
        config.head_limits.max_headers = max_headers;
    }
    if let Some(size) = convert::<usize>(get("client_body_buffer_size"))? {
        config.client_body_buffer_size = size;
    }
    if let Some(size) = convert::<u64>(get("client_max_body_size"))? {
        config.client_max_body_size = size;
    }
    if let Some(timeout) = seconds(convert::<f64>(get("client_header_timeout"))?) {
        config.client_header_timeout = timeout;
    }
    if let Some(timeout) = seconds(convert::<f64>(get("client_body_timeout"))?) {
        config.client_body_timeout = timeout;
    }
    if let Some(timeout) = seconds(convert::<f64>(get("send_timeout"))?) {
        config.send_timeout = timeout;
    }
    if let Some(timeout) = seconds(convert::<f64>(get("keepalive_timeout"))?) {
        config.keepalive_timeout = timeout;
    }
    if let Some(requests) = convert::<usize>(get("keepalive_requests"))? {
        config.keepalive_requests = requests;
    }
    if let Some(timeout) = seconds(convert::<f64>(get("tunnel_timeout"))?) {
        config.tunnel_timeout = timeout;
    }
    if let Some(timeout) = seconds(convert::<f64>(get("shutdown_timeout"))?) {
        config.shutdown_timeout = timeout;
    }
    if let Some(path) = convert::<String>(get("temp_path"))? {
        config.temp_path = Arc::from(Path::new(&path));
    }
    if let Some(limit) = convert::<usize>(get("max_connections"))? {
        config.max_connections = limit;
    }
    if let Some(size) = convert::<usize>(get("proxy_buffer_size"))? {
        config.proxy_buffer_size = size;
    }
    if let Some(size) = convert::<u64>(get("max_temp_file_size"))? {
        config.max_temp_file_size = size;
    }
    Ok(config)
}

/// The front keeps its own copies of the descriptors Ruby passes, so Ruby
/// may close or garbage-collect its IO objects without pulling the rug.
fn duplicate(ruby: &Ruby, fd: RawFd) -> Result<OwnedFd, Error> {
    descriptors::duplicate(fd).map_err(|error| io_error(ruby, &format!("descriptor {fd}"), error))
}

fn nightmare_error(ruby: &Ruby) -> ExceptionClass {
    ruby.class_object()
        .const_get::<_, RModule>("Nightmare")
        .and_then(|module| module.const_get::<_, ExceptionClass>("Error"))
        .unwrap_or_else(|_| ruby.exception_runtime_error())
}

fn io_error(ruby: &Ruby, context: &str, error: std::io::Error) -> Error {
    Error::new(nightmare_error(ruby), format!("{context}: {error}"))
}

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let nightmare = ruby.define_module("Nightmare")?;
    let native = nightmare.define_module("Native")?;
    native.define_module_function("receive_handoff", function!(receive_handoff, 1))?;
    let front = native.define_class("Front", ruby.class_object())?;
    front.define_singleton_method("start", function!(RubyFront::start, 5))?;
    front.define_method("worker_count=", method!(RubyFront::set_worker_count, 1))?;
    front.define_method("stop", method!(RubyFront::stop, 1))?;
    front.define_method("stopping?", method!(RubyFront::is_stopping, 0))?;
    front.define_method("finished_threads", method!(RubyFront::finished_threads, 0))?;
    front.define_method("finished?", method!(RubyFront::is_finished, 0))?;
    front.define_method("join", method!(RubyFront::join, 0))?;
    front.define_method("stats", method!(RubyFront::stats, 0))?;
    Ok(())
}
