//! The local terminal for `exec -t` and `shell`: raw mode (restored on drop), its size, and
//! stdin read on a thread of its own (a blocking read cannot be cancelled on the runtime).

use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use smartvm::guest::protocol::WindowSize;
use tokio::sync::mpsc;

nix::ioctl_read_bad!(read_window_size, libc::TIOCGWINSZ, libc::winsize);

/// Ctrl-]: ends a `shell` session from the keyboard, as in `attach`.
pub const DETACH_KEY: u8 = 0x1d;

/// Raw mode on stdin while it lives.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin (a terminal) into raw mode; `None` when stdin is no terminal.
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the terminal on stdout (or stdin), else 24×80.
pub fn size() -> WindowSize {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer, which outlives the call.
        if unsafe { read_window_size(fd, &mut size) }.is_ok() && size.ws_row > 0 {
            return WindowSize { rows: size.ws_row, cols: size.ws_col };
        }
    }
    WindowSize { rows: 24, cols: 80 }
}

/// What the stdin reader saw.
pub enum Input {
    /// Bytes typed or piped.
    Data(Vec<u8>),
    /// The detach key: nothing follows.
    Detach,
}

/// Reads stdin into chunks until its end (the channel closes) or, with `detach`, Ctrl-].
pub fn read_stdin(detach: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut buf = [0u8; 32 * 1024];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            let chunk = &buf[..n];
            let end = detach.then(|| chunk.iter().position(|&b| b == DETACH_KEY)).flatten();
            let data = end.map_or(chunk, |at| &chunk[..at]).to_vec();
            if !data.is_empty() && tx.blocking_send(Input::Data(data)).is_err() {
                break;
            }
            if end.is_some() {
                let _ = tx.blocking_send(Input::Detach);
            }
            if n == 0 || end.is_some() {
                break;
            }
        }
    });
    rx
}
