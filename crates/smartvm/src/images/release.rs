//! Pure parsing of Firecracker release metadata: the latest-release JSON, `.sha256.txt` files
//! and the tarball's `SHA256SUMS`.

use serde::Deserialize;

#[derive(Deserialize)]
struct LatestRelease {
    tag_name: String,
}

/// Why a latest-release answer was not understood.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseJsonError {
    /// Not the JSON shape of GitHub's latest-release answer.
    #[error("unexpected release JSON")]
    Json(#[from] serde_json::Error),
    /// `tag_name` is empty.
    #[error("empty tag_name")]
    EmptyTag,
}

/// `tag_name` of the GitHub latest-release JSON.
pub fn parse_latest_tag(json: &str) -> Result<String, ReleaseJsonError> {
    let r: LatestRelease = serde_json::from_str(json)?;
    if r.tag_name.is_empty() {
        return Err(ReleaseJsonError::EmptyTag);
    }
    Ok(r.tag_name)
}

/// True for 64 hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Entries `<hex>  <name>` (also `<hex> *<name>` and `./<name>`), as (lowercase hex, bare name).
pub fn parse_checksum_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let hex = parts.next()?;
            let name = parts.next()?.trim_start_matches('*').trim_start_matches("./");
            is_sha256_hex(hex).then(|| (hex.to_ascii_lowercase(), name.to_string()))
        })
        .collect()
}

/// The checksum listed for `name` (matched on the file name).
pub fn checksum_for(text: &str, name: &str) -> Option<String> {
    parse_checksum_lines(text)
        .into_iter()
        .find(|(_, n)| n == name || n.rsplit('/').next() == Some(name))
        .map(|(h, _)| h)
}

/// `vX.Y.Z` from `X.Y.Z` or `vX.Y.Z`.
pub fn normalize_version(v: &str) -> String {
    let v = v.trim();
    if v.starts_with('v') {
        v.to_string()
    } else {
        format!("v{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_metadata() {
        assert_eq!(parse_latest_tag(r#"{"tag_name":"v1.12.1","name":"Firecracker v1.12.1"}"#).unwrap(), "v1.12.1");
        assert!(parse_latest_tag("{").is_err());
        assert!(parse_latest_tag(r#"{"name":"x"}"#).is_err());
        let h = "a".repeat(64);
        let sums =
            format!("{h}  ./firecracker-v1.12.1-x86_64\n{}  ./jailer-v1.12.1-x86_64\nnot a line\n", "B".repeat(64));
        assert_eq!(checksum_for(&sums, "firecracker-v1.12.1-x86_64"), Some(h.clone()));
        assert_eq!(checksum_for(&sums, "jailer-v1.12.1-x86_64"), Some("b".repeat(64)));
        assert_eq!(
            checksum_for(&format!("{h} *firecracker-v1.12.1-x86_64.tgz"), "firecracker-v1.12.1-x86_64.tgz"),
            Some(h)
        );
        assert_eq!(checksum_for(&sums, "missing"), None);
        assert_eq!(normalize_version("1.7.0"), "v1.7.0");
    }
}
