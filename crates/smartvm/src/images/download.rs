//! HTTP downloads (reqwest) into temporary files that become visible only once verified.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::ImageError;

/// Receives download progress; the library never prints. The CLI renders a progress bar.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes (if known) named `label` begins.
    fn start(&self, label: &str, total: Option<u64>);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
    /// The transfer ended (successfully or not).
    fn finish(&self);
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Progress as `tracing` events, the library's one channel for what it does: `info` when a
/// transfer starts and ends (bytes moved), nothing per chunk.
#[derive(Debug, Default)]
pub struct TracingProgress {
    label: std::sync::Mutex<String>,
    bytes: std::sync::atomic::AtomicU64,
}

impl Progress for TracingProgress {
    fn start(&self, label: &str, total: Option<u64>) {
        *self.label.lock().unwrap_or_else(|p| p.into_inner()) = label.to_string();
        self.bytes.store(0, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(label, total, "download started");
    }
    fn advance(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    fn finish(&self) {
        let label = self.label.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let bytes = self.bytes.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(label, bytes, "download ended");
    }
}

/// What a finished download must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// Lowercase hex SHA-256.
    pub sha256: Option<String>,
    /// Exact size in bytes.
    pub size: Option<u64>,
}

/// A verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Where it is.
    pub path: PathBuf,
    /// Its SHA-256 (lowercase hex).
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

/// A private (0600) temporary file beside `final_path` (same directory, so renaming it onto
/// `final_path` is atomic), removed on drop unless persisted.
pub(crate) fn temp_beside(final_path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = final_path.parent().unwrap_or(Path::new("."));
    tempfile::Builder::new().prefix(&format!(".{name}.part-")).tempfile_in(dir)
}

/// The HTTP client used for every download.
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
}

impl Default for Downloader {
    fn default() -> Self {
        Self::new()
    }
}

impl Downloader {
    /// A client with connect/read timeouts and smartvm's user agent (GitHub requires one).
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("smartvm/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self { client }
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response, ImageError> {
        let response = self.client.get(url).send().await.map_err(|e| ImageError::Download {
            url: url.into(),
            reason: "request failed".into(),
            source: Some(Box::new(e)),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(ImageError::download(url, format!("HTTP {status}")));
        }
        Ok(response)
    }

    /// A small text document (JSON, checksums, XML), at most 16 MiB.
    pub async fn text(&self, url: &str) -> Result<String, ImageError> {
        let response = self.get(url).await?;
        if response.content_length().is_some_and(|n| n > 16 << 20) {
            return Err(ImageError::download(url, "document larger than 16 MiB"));
        }
        response.text().await.map_err(|e| ImageError::Download {
            url: url.into(),
            reason: "reading the body failed".into(),
            source: Some(Box::new(e)),
        })
    }

    /// Streams `url` into a temporary file beside `dest`, hashing on the way; checks the
    /// announced length, `expect`ed size and SHA-256; then renames onto `dest`. A failed or
    /// interrupted download leaves nothing at `dest` (and removes its temporary file).
    pub async fn file(
        &self,
        url: &str,
        dest: &Path,
        expect: &Expect,
        progress: &dyn Progress,
    ) -> Result<Downloaded, ImageError> {
        let response = self.get(url).await?;
        let announced = response.content_length();
        let tmp = temp_beside(dest).map_err(|e| ImageError::Download {
            url: url.into(),
            reason: format!("cannot create a temporary file beside {}", dest.display()),
            source: Some(Box::new(e)),
        })?;
        let tmp_path = tmp.path().to_path_buf();
        let io_err = |what: &str, e: std::io::Error| ImageError::Download {
            url: url.into(),
            reason: format!("{what} {}", tmp_path.display()),
            source: Some(Box::new(e)),
        };
        let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| io_err("cannot open", e))?);
        // Never accept more than was declared: a server that keeps sending is cut off.
        let limit = expect.size.or(announced);
        let label = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        progress.start(&label, announced.or(expect.size));
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut stream = response.bytes_stream();
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| ImageError::Download {
                    url: url.into(),
                    reason: format!("transfer interrupted after {size} bytes"),
                    source: Some(Box::new(e)),
                })?;
                if limit.is_some_and(|max| size + chunk.len() as u64 > max) {
                    let max = limit.unwrap_or_default();
                    return Err(ImageError::download(url, format!("larger than the declared {max} bytes; cut off")));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| io_err("cannot write", e))?;
                size += chunk.len() as u64;
                progress.advance(chunk.len() as u64);
            }
            file.sync_all().await.map_err(|e| io_err("cannot sync", e))?;
            Ok::<(), ImageError>(())
        }
        .await;
        progress.finish();
        result?;
        if let Some(n) = announced.filter(|n| *n != size) {
            return Err(ImageError::download(url, format!("truncated: {size} of {n} bytes")));
        }
        if let Some(n) = expect.size.filter(|n| *n != size) {
            return Err(ImageError::download(url, format!("size {size} bytes, expected {n}")));
        }
        let sha256 = hex::encode(hasher.finalize());
        if let Some(want) = &expect.sha256 {
            if !want.eq_ignore_ascii_case(&sha256) {
                return Err(ImageError::download(url, format!("SHA-256 mismatch: got {sha256}, expected {want}")));
            }
        }
        tmp.persist(dest).map_err(|e| io_err("cannot rename", e.error))?;
        Ok(Downloaded { path: dest.to_path_buf(), sha256, size })
    }
}

/// SHA-256 and size of a local file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut f, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}
