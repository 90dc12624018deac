//! The workers' private listener as the front reaches it: a UNIX stream
//! socket the master made for its workers alone. The front connects once
//! per request without blocking; the kernel's accept queue then holds the
//! request until a worker takes it, exactly as behind nginx.

use std::io;
use std::os::unix::net::SocketAddr;
use std::path::Path;

use mio::net::UnixStream;

use crate::upstream::proxy_header::Secret;

/// Where the workers listen, and the secret that proves a connection came
/// from their own front.
#[derive(Debug)]
pub struct WorkerListener {
    address: SocketAddr,
    path: Box<Path>,
    pub secret: Secret,
}

/// Why a connection to the workers could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// The accept queue is full: the request waits for a worker to finish.
    Busy,
    /// Nothing listens (the master is gone, or the socket file was removed).
    Absent(io::Error),
    Failed(io::Error),
}

impl WorkerListener {
    pub fn new(path: &Path, secret: Secret) -> io::Result<WorkerListener> {
        Ok(WorkerListener { address: SocketAddr::from_pathname(path)?, path: path.into(), secret })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn connect(&self) -> Result<UnixStream, ConnectError> {
        UnixStream::connect_addr(&self.address).map_err(|error| match error.raw_os_error() {
            Some(libc::EAGAIN) => ConnectError::Busy,
            Some(libc::ECONNREFUSED | libc::ENOENT) => ConnectError::Absent(error),
            _ => ConnectError::Failed(error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn listen(path: &Path, backlog: libc::c_int) -> std::os::unix::net::UnixListener {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        // SAFETY: listen on a socket we own, to shrink its backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), backlog) }, 0);
        listener
    }

    #[test]
    fn connects_and_tells_a_full_queue_from_an_absent_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workers.sock");
        let workers = WorkerListener::new(&path, [0; 16]).unwrap();
        assert!(matches!(workers.connect(), Err(ConnectError::Absent(_))), "no socket file");

        let listener = listen(&path, 0);
        let mut held = Vec::new();
        let busy = loop {
            match workers.connect() {
                Ok(stream) => held.push(stream),
                Err(error) => break error,
            }
            assert!(held.len() < 16, "a backlog of 0 fills within a few connections");
        };
        assert!(matches!(busy, ConnectError::Busy), "{busy:?}");
        assert!(listener.accept().is_ok(), "queued connections are real");

        drop(listener);
        assert!(matches!(workers.connect(), Err(ConnectError::Absent(_))), "a socket file nobody listens on");
    }
}
