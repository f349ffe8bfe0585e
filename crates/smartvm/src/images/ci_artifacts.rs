//! Firecracker CI artifacts: parsing S3 `ListObjectsV2` answers and picking a train's newest
//! kernel and rootfs (pure).

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct ListBucketResult {
    #[serde(rename = "Contents", default)]
    contents: Vec<Contents>,
    #[serde(rename = "IsTruncated", default)]
    is_truncated: bool,
    #[serde(rename = "NextContinuationToken", default)]
    next_continuation_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Contents {
    #[serde(rename = "Key")]
    key: String,
}

/// One page of a listing: keys, and the token of the next page if truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Object keys.
    pub keys: Vec<String>,
    /// Continuation token when more pages follow.
    pub next: Option<String>,
}

/// Why a CI bucket listing gave no bundle.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// Not a `ListObjectsV2` answer.
    #[error("unexpected bucket listing")]
    Xml(#[from] quick_xml::DeError),
    /// No `vmlinux-X.Y.Z` under the prefix.
    #[error("no vmlinux-X.Y.Z kernel under {0}")]
    NoKernel(String),
    /// No `ubuntu-X.Y.{squashfs,ext4}` under the prefix.
    #[error("no ubuntu rootfs under {0}")]
    NoRootfs(String),
}

/// Parses a `ListObjectsV2` XML answer.
pub fn parse_list(xml: &str) -> Result<ListPage, ListingError> {
    let r: ListBucketResult = quick_xml::de::from_str(xml)?;
    let next = if r.is_truncated { r.next_continuation_token } else { None };
    Ok(ListPage { keys: r.contents.into_iter().map(|c| c.key).collect(), next })
}

/// The key prefix of a CI train: `firecracker-ci/v1.12/x86_64/`.
pub fn train_prefix(train: &str, arch: &str) -> String {
    format!("firecracker-ci/{train}/{arch}/")
}

/// `v1.12` from `v1.12.1`.
pub fn train_of(version: &str) -> Option<String> {
    let v = version.trim_start_matches('v');
    let mut it = v.split('.');
    let (major, minor) = (it.next()?, it.next()?);
    (major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok()).then(|| format!("v{major}.{minor}"))
}

/// Dotted numbers of `<prefix><n.n[.n]><suffix>` (each part at most 3 digits), for sorting.
fn versioned(name: &str, prefix: &str, suffix: &str, parts: usize) -> Option<Vec<u32>> {
    let core = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let nums: Vec<&str> = core.split('.').collect();
    if nums.len() != parts || nums.iter().any(|n| n.is_empty() || n.len() > 3 || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    nums.iter().map(|n| n.parse().ok()).collect()
}

/// The artifacts chosen for one train.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainArtifacts {
    /// Kernel key (`…/vmlinux-6.1.141`).
    pub kernel_key: String,
    /// Rootfs key (`…/ubuntu-24.04.squashfs`).
    pub rootfs_key: String,
    /// `squashfs` or `ext4`.
    pub rootfs_type: &'static str,
}

/// Picks the newest `vmlinux-X.Y.Z` and the newest `ubuntu-X.Y.squashfs` (else `.ext4`) directly
/// under `prefix` (like `sort -V | tail -1`).
pub fn select(keys: &[String], prefix: &str) -> Result<TrainArtifacts, ListingError> {
    let names: Vec<(&str, &str)> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(prefix).filter(|n| !n.contains('/')).map(|n| (k.as_str(), n)))
        .collect();
    let newest = |prefix: &str, suffix: &str, parts: usize| {
        names
            .iter()
            .filter_map(|(k, n)| versioned(n, prefix, suffix, parts).map(|v| (v, *k)))
            .max()
            .map(|(_, k)| k.to_string())
    };
    let kernel_key = newest("vmlinux-", "", 3).ok_or_else(|| ListingError::NoKernel(prefix.into()))?;
    let (rootfs_key, rootfs_type) = match newest("ubuntu-", ".squashfs", 2) {
        Some(k) => (k, "squashfs"),
        None => (newest("ubuntu-", ".ext4", 2).ok_or_else(|| ListingError::NoRootfs(prefix.into()))?, "ext4"),
    };
    Ok(TrainArtifacts { kernel_key, rootfs_key, rootfs_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("firecracker-ci/v1.12/x86_64/{n}")).collect()
    }

    #[test]
    fn picks_newest_kernel_and_prefers_squashfs() {
        let p = train_prefix("v1.12", "x86_64");
        let k = keys(&[
            "vmlinux-5.10.239",
            "vmlinux-6.1.9",
            "vmlinux-6.1.141",
            "vmlinux-6.1.141.config",
            "vmlinux-6.1.141.debug",
            "vmlinux-no-acpi-6.1.200",
            "ubuntu-22.04.ext4",
            "ubuntu-24.04.ext4",
            "ubuntu-22.04.squashfs",
            "ubuntu-24.04.squashfs",
            "ubuntu-24.04.id_rsa",
            "sub/vmlinux-9.9.9",
        ]);
        let t = select(&k, &p).unwrap();
        assert_eq!(t.kernel_key, "firecracker-ci/v1.12/x86_64/vmlinux-6.1.141");
        assert_eq!(t.rootfs_key, "firecracker-ci/v1.12/x86_64/ubuntu-24.04.squashfs");
        assert_eq!(t.rootfs_type, "squashfs");
        let ext4_only = keys(&["vmlinux-5.10.209", "vmlinux-5.10.210", "ubuntu-22.04.ext4"]);
        let t = select(&ext4_only, &p).unwrap();
        assert_eq!((t.kernel_key.ends_with("5.10.210"), t.rootfs_type), (true, "ext4"));
        assert!(select(&keys(&["ubuntu-22.04.ext4"]), &p).unwrap_err().to_string().contains("vmlinux"));
        assert!(select(&keys(&["vmlinux-5.10.1"]), &p).unwrap_err().to_string().contains("rootfs"));
    }

    #[test]
    fn parses_listings() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>spec.ccfc.min</Name>
<Prefix>firecracker-ci/v1.12/x86_64/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>
<NextContinuationToken>tok</NextContinuationToken>
<Contents><Key>firecracker-ci/v1.12/x86_64/vmlinux-6.1.141</Key><Size>1</Size></Contents>
<Contents><Key>firecracker-ci/v1.12/x86_64/ubuntu-24.04.squashfs</Key><Size>2</Size></Contents>
</ListBucketResult>"#;
        let page = parse_list(xml).unwrap();
        assert_eq!(page.keys.len(), 2);
        assert_eq!(page.next.as_deref(), Some("tok"));
        let empty = parse_list("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>").unwrap();
        assert!(empty.keys.is_empty() && empty.next.is_none());
        assert!(parse_list("<html>oops").is_err());
        assert_eq!(train_of("v1.12.1").as_deref(), Some("v1.12"));
        assert_eq!(train_of("garbage"), None);
    }
}
