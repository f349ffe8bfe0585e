//! [`ReleaseFetch`]: the orchestrator's auto-download of the Firecracker binary at a VM's start.

use std::path::PathBuf;

use super::{ImageManager, TracingProgress};
use crate::vm::{FetchBinary, FetchFuture};

/// Downloads one Firecracker release (verified against its published SHA-256s) into
/// `<data_dir>/bin/<version>/` when a VM starts and the binary is not there yet. One instance is
/// shared by an orchestrator's VMs: concurrent starts wait for one download.
#[derive(Debug)]
pub struct ReleaseFetch {
    images: ImageManager,
    version: String,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl ReleaseFetch {
    /// A fetcher of `version` (`vX.Y.Z`) through `images`.
    pub fn new(images: ImageManager, version: impl Into<String>) -> Self {
        Self { images, version: version.into(), one_at_a_time: tokio::sync::Mutex::new(()) }
    }

    /// Where the binary is (or will be once fetched).
    pub fn binary(&self) -> PathBuf {
        self.images.firecracker_path(&self.version)
    }
}

impl FetchBinary for ReleaseFetch {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let _one = self.one_at_a_time.lock().await;
            // Present (fetched by a start that held the lock before): nothing is downloaded.
            self.images.ensure_firecracker(&self.version, &TracingProgress::default()).await?;
            Ok(())
        })
    }
}
