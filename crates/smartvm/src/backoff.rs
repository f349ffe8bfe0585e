//! Retry pacing towards a deadline, shared by everything that waits for a fresh Firecracker
//! process (its socket file, its API accepting connections).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// 50 µs doubling to 500 µs between attempts: the socket usually appears within ~1 ms of spawn
/// and a failed attempt (a stat, a refused connect) is cheap. (Tokio's timer rounds each wait up
/// to its 1 ms resolution; the first attempt is always immediate.)
pub(crate) struct Backoff {
    deadline: Instant,
    delay: Duration,
}

impl Backoff {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self { deadline: Instant::now() + timeout, delay: Duration::from_micros(50) }
    }

    /// Time left until the deadline.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits before the next attempt; false when that would pass the deadline.
    pub(crate) async fn wait(&mut self) -> bool {
        self.wait_or(std::future::pending::<()>()).await
    }

    /// Like [`wait`](Self::wait), but returns early (true) when `event` completes first.
    pub(crate) async fn wait_or(&mut self, event: impl Future) -> bool {
        if Instant::now() + self.delay > self.deadline {
            return false;
        }
        let _ = tokio::time::timeout(self.delay, event).await;
        self.delay = (self.delay * 2).min(Duration::from_micros(500));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_and_stops_at_the_deadline() {
        let start = Instant::now();
        let mut b = Backoff::new(Duration::from_millis(10));
        let mut attempts = 0;
        while b.wait().await {
            attempts += 1;
        }
        assert!(attempts >= 2, "retries until the deadline ({attempts})");
        assert!(start.elapsed() <= Duration::from_millis(11), "never waits past the deadline");
        assert!(b.remaining() < Duration::from_millis(2));
        let before = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(1));
        assert!(b.wait_or(async {}).await, "an event cuts the wait short");
        assert_eq!(before.elapsed(), Duration::ZERO);
    }
}
