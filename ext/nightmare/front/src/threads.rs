//! Starting the front's own threads (event loops, temp file writers) so
//! that they never take a signal meant for the process.

use std::io;
use std::thread::JoinHandle;

/// Loop threads block every signal, so signals reach the process's main
/// thread (Ruby's) and a SIGPIPE from a write to a closed peer stays a mere
/// EPIPE.
pub fn spawn_without_signals<F>(name: String, body: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: sigset_t is plain data, filled by sigfillset before use; the
    // calling thread's mask is restored right after the spawn.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
        let spawned = std::thread::Builder::new().name(name).spawn(body);
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        spawned
    }
}
