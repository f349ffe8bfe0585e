//! [`ImageError`]: failures of the [`images`](crate::images) layer, with their codes.

use std::path::PathBuf;

use super::{Cause, ErrorCode};

/// Failures while obtaining binaries, kernels, rootfs images and base-image bundles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// `UNTRUSTED_PATH`: the data dir (or a dir in it) could have been written by another user.
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
    /// `DOWNLOAD_FAILED`: an artifact could not be fetched or failed verification.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// What was fetched.
        url: String,
        /// What went wrong (status, size or checksum mismatch, …).
        reason: String,
        /// Underlying error.
        #[source]
        source: Option<Cause>,
    },
    /// `VERSION_FETCH_FAILED`: the latest Firecracker release could not be determined.
    #[error("cannot determine the latest Firecracker release from {url}: {reason}")]
    VersionFetch {
        /// Releases API URL.
        url: String,
        /// Why.
        reason: String,
        /// Underlying error.
        #[source]
        source: Option<Cause>,
    },
    /// `BASE_IMAGE_RESOLVE_FAILED`: no kernel/rootfs could be found for a preset.
    #[error("cannot resolve base image: {0}")]
    Resolve(String),
    /// `BASE_IMAGE_MANIFEST_FAILED`: a hosted manifest could not be read or parsed.
    #[error("cannot read base image manifest {location}: {reason}")]
    ManifestFetch {
        /// URL or path.
        location: String,
        /// Why.
        reason: String,
        /// Underlying error.
        #[source]
        source: Option<Cause>,
    },
    /// `INVALID_BASE_IMAGE_MANIFEST`: a manifest field breaks the schema.
    #[error("invalid base image manifest: {field}: {message}")]
    InvalidManifest {
        /// The field (`kernel.sha256`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// `INVALID_CONFIG`: a hosted manifest was given together with another named preset.
    #[error("preset {preset} conflicts with the hosted manifest {manifest}: a manifest implies the hosted preset; name either the manifest or another preset")]
    PresetConflict {
        /// The preset named.
        preset: &'static str,
        /// The manifest URL or path given.
        manifest: String,
    },
    /// `INVALID_BASE_IMAGE_CACHE_LIMIT`: `max_stored_base_images` is below 1.
    #[error("max_stored_base_images must be at least 1 (got {0})")]
    InvalidCacheLimit(usize),
    /// `BASE_IMAGE_PREPARE_FAILED`: the cache could not be written or verified.
    #[error("cannot prepare base image: {message}")]
    Prepare {
        /// What failed.
        message: String,
        /// Underlying error.
        #[source]
        source: Option<Cause>,
    },
    /// `ROOTFS_CREATE_FAILED`: a blank rootfs could not be made.
    #[error("cannot create rootfs {}: {message}", path.display())]
    RootfsCreate {
        /// Target.
        path: PathBuf,
        /// Why.
        message: String,
        /// Underlying error.
        #[source]
        source: Option<Cause>,
    },
    /// `ROOTFS_CREATE_FAILED`: the guest agent could not be installed into a rootfs image.
    #[error("cannot install the guest agent into {}: {message}", rootfs.display())]
    InjectAgent {
        /// The rootfs image.
        rootfs: PathBuf,
        /// Why.
        message: String,
        /// Underlying error.
        #[source]
        source: Option<Cause>,
    },
    /// `ROOTFS_CLONE_FAILED`: a rootfs could not be copied.
    #[error("cannot clone rootfs {} to {}", source_path.display(), target.display())]
    RootfsClone {
        /// Source image.
        source_path: PathBuf,
        /// Target.
        target: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ImageError::Untrusted(_) => ErrorCode::UntrustedPath,
            ImageError::Download { .. } => ErrorCode::DownloadFailed,
            ImageError::VersionFetch { .. } => ErrorCode::VersionFetchFailed,
            ImageError::Resolve(_) => ErrorCode::BaseImageResolveFailed,
            ImageError::ManifestFetch { .. } => ErrorCode::BaseImageManifestFailed,
            ImageError::InvalidManifest { .. } => ErrorCode::InvalidBaseImageManifest,
            ImageError::InvalidCacheLimit(_) => ErrorCode::InvalidBaseImageCacheLimit,
            ImageError::PresetConflict { .. } => ErrorCode::InvalidConfig,
            ImageError::Prepare { .. } => ErrorCode::BaseImagePrepareFailed,
            ImageError::RootfsCreate { .. } | ImageError::InjectAgent { .. } => ErrorCode::RootfsCreateFailed,
            ImageError::RootfsClone { .. } => ErrorCode::RootfsCloneFailed,
        }
    }

    pub(crate) fn download(url: &str, reason: impl Into<String>) -> Self {
        ImageError::Download { url: url.into(), reason: reason.into(), source: None }
    }

    pub(crate) fn prepare(message: impl Into<String>, source: impl Into<Cause>) -> Self {
        ImageError::Prepare { message: message.into(), source: Some(source.into()) }
    }

    pub(crate) fn manifest(field: impl Into<String>, message: impl Into<String>) -> Self {
        ImageError::InvalidManifest { field: field.into(), message: message.into() }
    }
}

impl From<crate::trust::EnsureDirError> for ImageError {
    fn from(e: crate::trust::EnsureDirError) -> Self {
        match e {
            crate::trust::EnsureDirError::Untrusted(t) => ImageError::Untrusted(t),
            crate::trust::EnsureDirError::Create { path, source } => {
                ImageError::prepare(format!("cannot create {}", path.display()), source)
            }
        }
    }
}
