//! Pseudo-terminals for `exec` with a TTY.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{openpty, Winsize};
use smartvm_guest_protocol::WindowSize;
use tokio::net::unix::pipe;

nix::ioctl_write_ptr_bad!(set_window_size, libc::TIOCSWINSZ, Winsize);

/// A terminal pair: the agent keeps the master, the command gets the slave.
pub struct Pty {
    /// The agent's side.
    pub master: OwnedFd,
    /// The command's side (its stdin, stdout and stderr).
    pub slave: OwnedFd,
}

fn winsize(size: WindowSize) -> Winsize {
    Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 }
}

/// Opens a terminal of `size`.
pub fn open(size: WindowSize) -> io::Result<Pty> {
    let pair = openpty(Some(&winsize(size)), None).map_err(io::Error::from)?;
    for fd in [&pair.master, &pair.slave] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    }
    Ok(Pty { master: pair.master, slave: pair.slave })
}

/// Sets the terminal's size (the kernel sends SIGWINCH to its foreground group).
pub fn resize(master: &impl AsFd, size: WindowSize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `Winsize` from the pointer, which outlives the call.
    unsafe { set_window_size(master.as_fd().as_raw_fd(), &winsize(size)) }.map(drop).map_err(io::Error::from)
}

/// The master as an async reader and writer (two descriptors of the same terminal).
pub fn async_halves(master: &OwnedFd) -> io::Result<(pipe::Receiver, pipe::Sender)> {
    let read = master.try_clone()?;
    let write = master.try_clone()?;
    for fd in [&read, &write] {
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?);
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    }
    // A terminal master polls like a pipe; tokio's pipe types only read, write and poll.
    Ok((pipe::Receiver::from_owned_fd_unchecked(read)?, pipe::Sender::from_owned_fd_unchecked(write)?))
}
