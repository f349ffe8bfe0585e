//! One inotify instance for every file this process follows (a detached VM's console and log):
//! the kernel allows 128 instances per user by default, so one per file would stop the 65th
//! detached VM from being followed. A thread of its own reads the events (it outlives any
//! tokio runtime) and wakes the follower of each file through a [`Notify`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::Notify;

struct FileWatch {
    watches: Mutex<Watches>,
    /// Followers per watched file (one file may be followed twice: one kernel watch).
    followers: Arc<Mutex<HashMap<WatchDescriptor, Vec<Arc<Notify>>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn shared() -> std::io::Result<&'static FileWatch> {
    static SHARED: OnceLock<Result<FileWatch, Arc<std::io::Error>>> = OnceLock::new();
    let made = SHARED.get_or_init(|| {
        let mut inotify = Inotify::init()?;
        let followers: Arc<Mutex<HashMap<WatchDescriptor, Vec<Arc<Notify>>>>> = Arc::default();
        let watches = inotify.watches();
        let wake = followers.clone();
        std::thread::Builder::new().name("smartvm-file-watch".into()).spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(events) = inotify.read_events_blocking(&mut buffer) {
                let followers = lock(&wake);
                for event in events {
                    // A stored permit if the follower is not waiting yet: no wakeup is lost.
                    followers.get(&event.wd).into_iter().flatten().for_each(|n| n.notify_one());
                }
            }
        })?;
        Ok(FileWatch { watches: Mutex::new(watches), followers })
    });
    // Made once: a failure to make it is every caller's, with its cause.
    made.as_ref().map_err(|e| std::io::Error::other(e.clone()))
}

/// A follower's watch on one file; dropping it ends the watch.
pub(crate) struct Watch {
    wd: WatchDescriptor,
    notify: Arc<Notify>,
}

impl Watch {
    /// Watches `path` for appended data.
    pub(crate) fn new(path: &Path) -> std::io::Result<Self> {
        let shared = shared()?;
        let wd = lock(&shared.watches).add(path, WatchMask::MODIFY)?;
        let notify = Arc::new(Notify::new());
        lock(&shared.followers).entry(wd.clone()).or_default().push(notify.clone());
        Ok(Self { wd, notify })
    }

    /// Completes once the file changed since the last call (at once if it did meanwhile).
    pub(crate) async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Ok(shared) = shared() else { return };
        let mut followers = lock(&shared.followers);
        let last = followers.get_mut(&self.wd).is_some_and(|list| {
            list.retain(|n| !Arc::ptr_eq(n, &self.notify));
            list.is_empty()
        });
        if last {
            followers.remove(&self.wd);
            let _ = lock(&shared.watches).remove(self.wd.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More files than the kernel's default 128 inotify instances per user, each followed.
    #[tokio::test]
    async fn many_files_are_followed_through_one_instance() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..300).map(|i| dir.path().join(format!("f{i}"))).collect();
        let mut watches = Vec::new();
        for p in &paths {
            std::fs::write(p, b"").unwrap();
            watches.push(Watch::new(p).unwrap());
        }
        for p in &paths {
            use std::io::Write;
            std::fs::OpenOptions::new().append(true).open(p).unwrap().write_all(b"x\n").unwrap();
        }
        let deadline = std::time::Duration::from_secs(10);
        for w in &watches {
            tokio::time::timeout(deadline, w.changed()).await.expect("each follower is woken");
        }
        // The same file followed twice: both woken; one leaving keeps the other's watch.
        let twice = Watch::new(&paths[0]).unwrap();
        drop(watches.swap_remove(0));
        std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&paths[0]).unwrap(), b"y\n")
            .unwrap();
        tokio::time::timeout(deadline, twice.changed()).await.expect("the remaining follower still hears");
    }
}
