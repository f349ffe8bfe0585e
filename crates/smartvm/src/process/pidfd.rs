//! Process file descriptors (`pidfd_open`, `pidfd_send_signal`, `poll`): a handle on one
//! process that a recycled pid can never be confused with. The one place these syscalls live.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A pidfd for `pid` (`O_NONBLOCK` with `nonblocking`); `ESRCH` when there is no such process.
pub(crate) fn open(pid: i32, nonblocking: bool) -> std::io::Result<OwnedFd> {
    let flags = if nonblocking { libc::O_NONBLOCK } else { 0 };
    // SAFETY: pidfd_open returns a new descriptor (or -1), owned by the OwnedFd below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) } as i32;
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process behind `pidfd` (an exited one answers `ESRCH`).
pub(crate) fn send_signal(pidfd: impl AsFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: a valid pidfd, a plain signal number, no siginfo.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_fd().as_raw_fd(), signal, 0usize, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Blocks until the process behind `pidfd` has exited, at most `timeout`; true when it has.
pub(crate) fn wait_exited(pidfd: impl AsFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: pidfd.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: a valid pollfd array of length 1.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(i32::MAX as u128) as i32) == 1 }
}
