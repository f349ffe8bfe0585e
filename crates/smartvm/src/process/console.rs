//! Capture of the guest serial console (Firecracker's stdout) and of Firecracker's stderr:
//! a bounded line buffer that followers read with a cursor (line numbers), and optionally a
//! file.
//!
//! Followers wait on one small `watch` per stream rather than a broadcast channel: a
//! broadcast channel preallocates its whole queue (a thousand slots, ~56 KiB) per stream, and
//! every VM has two streams; the buffer already holds the lines a follower has not read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// Lines kept in memory per stream unless configured otherwise.
pub const DEFAULT_CONSOLE_LINES: usize = 2000;

/// Bytes read from a stream at once: every complete line in them is taken in one go (one lock,
/// one wake-up), which matters for chatty guests by the dozen.
const READ_CHUNK: usize = 8192;

/// One line's text, without its line ending.
fn line_of(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).trim_end_matches(['\n', '\r']).to_string()
}

#[derive(Debug)]
struct Buffer {
    lines: VecDeque<String>,
    capacity: usize,
    closed: bool,
    /// Lines pushed so far: the number the next line gets.
    pushed: u64,
    /// Waiters for one marker line each (see [`Console::wait_for_marker`]).
    awaited: Vec<AwaitedLine>,
}

/// A waiter woken only by the line it waits for, or by the end of the stream.
#[derive(Debug)]
struct AwaitedLine {
    pred: fn(&str) -> bool,
    tx: Option<tokio::sync::oneshot::Sender<String>>,
}

impl Buffer {
    /// Hands `line` to the waiters it matches, and forgets waiters that gave up.
    fn fire_awaited(&mut self, line: &str) {
        self.awaited.retain_mut(|w| {
            let Some(tx) = w.tx.take().filter(|tx| !tx.is_closed()) else { return false };
            if (w.pred)(line) {
                let _ = tx.send(line.to_string());
                return false;
            }
            w.tx = Some(tx);
            true
        });
    }

    /// The number of the oldest kept line.
    fn first(&self) -> u64 {
        self.pushed - self.lines.len() as u64
    }

    /// The kept lines numbered `cursor` or later (a cursor behind the oldest kept line skips
    /// to it).
    fn since(&self, cursor: u64) -> impl Iterator<Item = &String> {
        let skip = cursor.saturating_sub(self.first()).min(self.lines.len() as u64) as usize;
        self.lines.iter().skip(skip)
    }
}

/// One captured output stream. Cloning shares the same buffer.
#[derive(Debug, Clone)]
pub struct Console {
    buffer: Arc<Mutex<Buffer>>,
    /// Bumped on every line; holds whether the stream ended.
    changes: watch::Sender<bool>,
}

/// Why [`Console::wait_for`] found no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitEnd {
    /// The time ran out; the stream goes on.
    #[error("no matching line within the time limit")]
    TimedOut,
    /// The stream ended (the process closed it) without a matching line.
    #[error("the stream ended without a matching line")]
    Ended,
}

impl Console {
    pub(crate) fn new(capacity: usize) -> Self {
        let buffer =
            Buffer { lines: VecDeque::new(), capacity: capacity.max(1), closed: false, pushed: 0, awaited: Vec::new() };
        Self { buffer: Arc::new(Mutex::new(buffer)), changes: watch::channel(false).0 }
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A panic while holding this lock cannot leave the buffer inconsistent: keep using it.
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `reader` line by line until EOF into the buffer (waking followers) and `file`.
    pub(crate) fn spawn_reader<R>(&self, reader: R, mut file: Option<tokio::fs::File>)
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let console = self.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut reader = reader;
            let (mut chunk, mut partial) = (vec![0u8; READ_CHUNK], Vec::new());
            loop {
                let n = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Some(f) = file.as_mut() {
                    if f.write_all(&chunk[..n]).await.is_err() {
                        file = None;
                    }
                }
                partial.extend_from_slice(&chunk[..n]);
                console.push_lines(&mut partial);
            }
            if !partial.is_empty() {
                console.push_all(vec![line_of(&partial)]);
            }
            if let Some(f) = file.as_mut() {
                let _ = f.flush().await;
            }
            console.close();
        });
    }

    /// Follows the file at `path` (which a process appends to, e.g. a detached Firecracker's
    /// stdout) from its start into the buffer (waking followers): read to its end, then wait
    /// for inotify (one instance for the whole process) to report more, until `ended` says the
    /// writer is gone (then read what is
    /// left and end the stream). A last line without a newline is kept until it is complete.
    pub(crate) fn spawn_file_follower(&self, path: std::path::PathBuf, mut ended: tokio::sync::watch::Receiver<bool>) {
        let console = self.clone();
        tokio::spawn(async move {
            let Ok(file) = tokio::fs::File::open(&path).await else { return console.close() };
            let Ok(watch) = super::file_watch::Watch::new(&path) else { return console.close() };
            let mut reader = BufReader::new(file);
            let mut partial = Vec::new();
            loop {
                let done = *ended.borrow_and_update();
                console.read_available(&mut reader, &mut partial).await;
                if done {
                    break;
                }
                tokio::select! {
                    _ = watch.changed() => {}
                    _ = ended.changed() => {}
                }
            }
            if !partial.is_empty() {
                console.push(String::from_utf8_lossy(&partial).into_owned());
            }
            console.close();
        });
    }

    /// Reads `reader` to its current end, pushing complete lines.
    async fn read_available(&self, reader: &mut BufReader<tokio::fs::File>, partial: &mut Vec<u8>) {
        loop {
            match reader.read_until(b'\n', partial).await {
                Ok(0) | Err(_) => return,
                Ok(_) if partial.ends_with(b"\n") => {
                    let line = String::from_utf8_lossy(partial).trim_end_matches(['\n', '\r']).to_string();
                    partial.clear();
                    self.push(line);
                }
                Ok(_) => {} // an incomplete last line: wait for its end
            }
        }
    }

    /// Marks the end of the stream and wakes waiters so they notice it (no line is added).
    fn close(&self) {
        {
            let mut b = self.lock();
            b.closed = true;
            // Their senders dropped: marker waiters learn the stream ended.
            b.awaited.clear();
        }
        self.changes.send_replace(true);
    }

    /// Completes once the stream has ended (at once if it has); every line is in the buffer by
    /// then.
    pub async fn ended(&self) {
        let mut rx = self.changes.subscribe();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    fn push(&self, line: String) {
        self.push_all(vec![line]);
    }

    /// Takes the complete lines at the front of `partial` (leaving an unfinished last one).
    fn push_lines(&self, partial: &mut Vec<u8>) {
        let Some(end) = partial.iter().rposition(|&b| b == b'\n') else { return };
        let lines = partial[..end].split(|&b| b == b'\n').map(line_of).collect();
        partial.drain(..=end);
        self.push_all(lines);
    }

    fn push_all(&self, lines: Vec<String>) {
        {
            let mut b = self.lock();
            for line in lines {
                if !b.awaited.is_empty() {
                    b.fire_awaited(&line);
                }
                if b.lines.len() == b.capacity {
                    b.lines.pop_front();
                }
                b.lines.push_back(line);
                b.pushed += 1;
            }
        }
        // After the lines are in: a follower that read the buffer before them is woken for them.
        self.changes.send_modify(|_| {});
    }

    /// The buffered lines (the last `capacity` ones).
    pub fn lines(&self) -> Vec<String> {
        self.lock().lines.iter().cloned().collect()
    }

    /// Every line in order until the stream ends: with `history` the lines kept so far first,
    /// then each new one (a follower that falls more than the buffer's capacity behind skips
    /// to the oldest kept line). The one way to follow a console to its end (the CLI's stdout,
    /// the agent's `logs -f`).
    pub fn stream(&self, history: bool) -> impl futures_util::Stream<Item = String> + Send + 'static {
        // Subscribed before the cursor is taken: a line pushed in between wakes the follower.
        let changes = self.changes.subscribe();
        let cursor = {
            let b = self.lock();
            if history {
                b.first()
            } else {
                b.pushed
            }
        };
        let state = (self.clone(), changes, cursor, VecDeque::new());
        futures_util::stream::unfold(state, |(console, mut changes, mut cursor, mut pending)| async move {
            loop {
                if let Some(line) = pending.pop_front() {
                    return Some((line, (console, changes, cursor, pending)));
                }
                let closed = {
                    let b = console.lock();
                    pending.extend(b.since(cursor).cloned());
                    cursor = b.pushed;
                    b.closed
                };
                if pending.is_empty() {
                    if closed {
                        return None;
                    }
                    // The sender lives in `console`: this only ends with a change.
                    let _ = changes.changed().await;
                }
            }
        })
    }

    /// True once the stream reached EOF (the process closed it).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until a line (buffered or new) satisfies `pred`, the stream ends, or `timeout`;
    /// `None` in both of the latter cases (see [`wait_for`](Self::wait_for) to tell them apart).
    pub async fn wait_for_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.wait_for(timeout, pred).await.ok()
    }

    /// Waits until a line (buffered or new) satisfies `pred`; says whether the time ran out or
    /// the stream ended without one.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String, WaitEnd> {
        let mut changes = self.changes.subscribe();
        let mut cursor = 0;
        let wait = async {
            loop {
                {
                    let b = self.lock();
                    if let Some(line) = b.since(cursor).find(|l| pred(l)) {
                        return Ok(line.clone());
                    }
                    if b.closed {
                        return Err(WaitEnd::Ended);
                    }
                    cursor = b.pushed;
                }
                let _ = changes.changed().await;
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(Err(WaitEnd::TimedOut))
    }

    /// [`wait_for`](Self::wait_for) for a marker line (`pred` a plain function): the waiter is
    /// woken only by that line or by the end of the stream, not by every line, which matters
    /// when many VMs confirm their boot at once.
    pub(crate) async fn wait_for_marker(&self, timeout: Duration, pred: fn(&str) -> bool) -> Result<String, WaitEnd> {
        let answer = {
            let mut b = self.lock();
            if let Some(line) = b.lines.iter().find(|l| pred(l)) {
                return Ok(line.clone());
            }
            if b.closed {
                return Err(WaitEnd::Ended);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            b.awaited.push(AwaitedLine { pred, tx: Some(tx) });
            rx
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(_)) => Err(WaitEnd::Ended),
            Err(_) => Err(WaitEnd::TimedOut),
        }
    }

    /// The last `n` lines joined, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let b = self.lock();
        let skip = b.lines.len().saturating_sub(n);
        b.lines.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_bounded_and_waits_for_lines() {
        let console = Console::new(2);
        let (mut w, r) = tokio::io::duplex(64);
        console.spawn_reader(r, None);
        let waiter = {
            let c = console.clone();
            tokio::spawn(async move { c.wait_for_line(Duration::from_secs(5), |l| l.starts_with("three")).await })
        };
        w.write_all(b"one\ntwo\r\nthree x\n").await.unwrap();
        assert_eq!(waiter.await.unwrap().as_deref(), Some("three x"));
        drop(w);
        assert_eq!(console.wait_for_line(Duration::from_secs(5), |l| l == "never").await, None);
        assert!(console.is_closed());
        assert_eq!(console.lines(), ["two", "three x"]);
        assert_eq!(console.tail(1), "three x");
    }

    /// Lines split across reads and many lines in one read each come out once, whole, in
    /// order; an unfinished last line is kept when the stream ends.
    #[tokio::test]
    async fn lines_are_whole_however_the_bytes_arrive() {
        let console = Console::new(100);
        let (mut w, r) = tokio::io::duplex(4);
        console.spawn_reader(r, None);
        let mut expected = Vec::new();
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!("line {i}\r\n"));
            expected.push(format!("line {i}"));
        }
        text.push_str("unfinished");
        expected.push("unfinished".into());
        for piece in text.as_bytes().chunks(7) {
            w.write_all(piece).await.unwrap();
        }
        drop(w);
        console.ended().await;
        assert_eq!(console.lines(), expected);
    }

    #[tokio::test]
    async fn a_followed_file_streams_lines_as_they_are_appended() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"one\ntw").unwrap();
        let console = Console::new(10);
        let (ended, watch) = tokio::sync::watch::channel(false);
        console.spawn_file_follower(path.clone(), watch);
        assert_eq!(console.wait_for_line(Duration::from_secs(5), |l| l == "one").await.as_deref(), Some("one"));
        f.write_all(b"o\nthree\n").unwrap();
        assert!(console.wait_for_line(Duration::from_secs(5), |l| l == "three").await.is_some());
        f.write_all(b"last, unterminated").unwrap();
        ended.send(true).unwrap();
        assert_eq!(console.wait_for_line(Duration::from_secs(5), |l| l == "never").await, None);
        assert!(console.is_closed());
        assert_eq!(console.lines(), ["one", "two", "three", "last, unterminated"]);
    }

    #[tokio::test]
    async fn a_timeout_and_the_end_are_told_apart_and_the_end_is_no_line() {
        use futures_util::StreamExt;
        let console = Console::new(10);
        let live = console.stream(false);
        console.push("a".into());
        assert_eq!(console.wait_for(Duration::from_millis(20), |l| l == "b").await, Err(WaitEnd::TimedOut));
        console.close();
        assert_eq!(console.wait_for(Duration::from_secs(5), |l| l == "b").await, Err(WaitEnd::Ended));
        console.ended().await;
        assert_eq!(live.collect::<Vec<_>>().await, ["a"], "no empty line marks the end");
    }

    #[tokio::test]
    async fn a_stream_yields_history_and_new_lines_and_ends_with_the_console() {
        use futures_util::StreamExt;
        let console = Console::new(10);
        console.push("old".into());
        let all = console.stream(true);
        let new = console.stream(false);
        console.push("new".into());
        console.close();
        assert_eq!(all.collect::<Vec<_>>().await, ["old", "new"]);
        assert_eq!(new.collect::<Vec<_>>().await, ["new"]);
    }

    #[tokio::test]
    async fn a_match_right_before_the_end_is_not_lost() {
        let console = Console::new(10);
        let wait = console.wait_for_line(Duration::from_secs(5), |l| l == "match");
        tokio::pin!(wait);
        assert!(futures_util::FutureExt::now_or_never(&mut wait).is_none(), "subscribed, nothing yet");
        // Everything arrives and the stream ends before the waiter runs again.
        console.push("other".into());
        console.push("match".into());
        console.close();
        assert_eq!(wait.await.as_deref(), Some("match"));
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_skips_to_the_oldest_kept_line() {
        use futures_util::StreamExt;
        let console = Console::new(2);
        let mut all = std::pin::pin!(console.stream(true));
        console.push("0".into());
        assert_eq!(all.next().await.as_deref(), Some("0"));
        for n in 1..6 {
            console.push(n.to_string());
        }
        console.close();
        assert_eq!(all.collect::<Vec<_>>().await, ["4", "5"]);
        // A waiter scans only what is kept, and tells the end from a timeout.
        assert_eq!(console.wait_for(Duration::from_secs(5), |l| l == "5").await.as_deref(), Ok("5"));
        assert_eq!(console.wait_for(Duration::from_secs(5), |l| l == "1").await, Err(WaitEnd::Ended));
    }

    #[tokio::test]
    async fn many_followers_each_see_every_line_once() {
        use futures_util::StreamExt;
        let console = Console::new(1000);
        let followers: Vec<_> = (0..8).map(|_| tokio::spawn(console.stream(false).collect::<Vec<_>>())).collect();
        let writer = {
            let console = console.clone();
            tokio::spawn(async move {
                for n in 0..500 {
                    console.push(n.to_string());
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                console.close();
            })
        };
        writer.await.unwrap();
        let expected: Vec<String> = (0..500).map(|n| n.to_string()).collect();
        for f in followers {
            assert_eq!(f.await.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn a_marker_waiter_sees_buffered_and_new_lines_the_end_and_the_time_limit() {
        use std::future::Future;
        fn marker(l: &str) -> bool {
            l.starts_with("booted")
        }
        /// Counts how often the waiter is woken.
        struct Wakes(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Wakes {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(Wakes(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let woken = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        let console = Console::new(10);
        let early = console.wait_for_marker(Duration::from_secs(5), marker);
        tokio::pin!(early);
        assert!(early.as_mut().poll(&mut std::task::Context::from_waker(&waker)).is_pending(), "registered");
        for n in 0..5 {
            console.push(format!("other {n}"));
        }
        assert_eq!(woken(), 0, "other lines wake nobody");
        console.push("booted 1".into());
        assert_eq!(woken(), 1, "the marker line wakes the waiter once");
        assert_eq!(early.await.as_deref(), Ok("booted 1"));
        assert_eq!(console.wait_for_marker(Duration::from_secs(5), marker).await.as_deref(), Ok("booted 1"));
        let quiet = Console::new(10);
        assert_eq!(quiet.wait_for_marker(Duration::from_millis(20), marker).await, Err(WaitEnd::TimedOut));
        quiet.push("after a waiter gave up".into());
        assert!(quiet.lock().awaited.is_empty(), "a waiter that gave up is forgotten");
        let waiting = quiet.wait_for_marker(Duration::from_secs(5), marker);
        quiet.close();
        assert_eq!(waiting.await, Err(WaitEnd::Ended));
    }
}
