//! Descriptors that arrive as bare numbers from outside Rust (Ruby's IO
//! objects): the front takes its own copies so their owners may close theirs.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A close-on-exec copy of `fd`, owned by the caller.
pub fn duplicate(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads its arguments; a bad descriptor
    // yields EBADF.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: copy is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Borrows `fd` after checking it is open; the caller keeps it open for the
/// borrow's lifetime.
pub fn borrow_open(fd: RawFd) -> io::Result<BorrowedFd<'static>> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and the caller vouches
    // it stays open while borrowed.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Sets O_NONBLOCK on the open file description (shared by every copy).
pub fn set_nonblocking(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn duplicates_outlive_the_original() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let copy = duplicate(a.as_raw_fd()).unwrap();
        assert_ne!(copy.as_raw_fd(), a.as_raw_fd());
        drop(a);
        assert!(borrow_open(copy.as_raw_fd()).is_ok());
        set_nonblocking(copy.as_fd()).unwrap();
    }

    #[test]
    fn closed_descriptors_are_errors() {
        assert_eq!(duplicate(987_654).unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert!(borrow_open(987_654).is_err());
    }
}
