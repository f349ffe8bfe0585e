//! Remote base URLs, overridable for air-gapped hosts and internal mirrors.

/// Where releases, release assets and CI artifacts are fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    /// GitHub REST API (`SMARTVM_GITHUB_API_URL`, default `https://api.github.com`).
    pub github_api: String,
    /// GitHub web, for release downloads (`SMARTVM_GITHUB_URL`, default `https://github.com`).
    pub github: String,
    /// Firecracker CI artifact bucket (`SMARTVM_CI_ARTIFACTS_URL`,
    /// default `https://s3.amazonaws.com/spec.ccfc.min`).
    pub ci_artifacts: String,
}

impl Default for Mirrors {
    fn default() -> Self {
        Self {
            github_api: "https://api.github.com".into(),
            github: "https://github.com".into(),
            ci_artifacts: "https://s3.amazonaws.com/spec.ccfc.min".into(),
        }
    }
}

impl Mirrors {
    /// Defaults overridden by the `SMARTVM_*_URL` variables.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by `lookup` (testable without touching the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        let pick = |key: &str, default: String| {
            lookup(key).filter(|v| !v.is_empty()).map(|v| v.trim_end_matches('/').to_string()).unwrap_or(default)
        };
        Self {
            github_api: pick("SMARTVM_GITHUB_API_URL", d.github_api),
            github: pick("SMARTVM_GITHUB_URL", d.github),
            ci_artifacts: pick("SMARTVM_CI_ARTIFACTS_URL", d.ci_artifacts),
        }
    }

    /// The latest-release endpoint.
    pub fn latest_release_url(&self) -> String {
        format!("{}/repos/firecracker-microvm/firecracker/releases/latest", self.github_api)
    }

    /// Release tarball URL for `version` (`vX.Y.Z`) and `arch`.
    pub fn release_tarball_url(&self, version: &str, arch: &str) -> String {
        format!(
            "{}/firecracker-microvm/firecracker/releases/download/{version}/firecracker-{version}-{arch}.tgz",
            self.github
        )
    }

    /// URL of an artifact key in the CI bucket.
    pub fn artifact_url(&self, key: &str) -> String {
        format!("{}/{key}", self.ci_artifacts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_urls() {
        let m = Mirrors::from_lookup(|k| (k == "SMARTVM_GITHUB_URL").then(|| "http://127.0.0.1:9/gh/".to_string()));
        assert_eq!(m.github, "http://127.0.0.1:9/gh");
        assert_eq!(m.github_api, "https://api.github.com");
        assert_eq!(
            m.release_tarball_url("v1.12.1", "x86_64"),
            "http://127.0.0.1:9/gh/firecracker-microvm/firecracker/releases/download/v1.12.1/firecracker-v1.12.1-x86_64.tgz"
        );
        assert_eq!(Mirrors::default().artifact_url("a/b"), "https://s3.amazonaws.com/spec.ccfc.min/a/b");
    }
}
