//! Firecracker versions and the API differences between them.

use std::fmt;
use std::str::FromStr;

/// A Firecracker release version (`v1.12.1`). Payloads are generated for one version, so that a
/// field the running binary does not know is never sent (Firecracker answers 400 to unknown fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FirecrackerVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl FirecrackerVersion {
    /// The version smartvm is developed and tested against.
    pub const DEFAULT: FirecrackerVersion = FirecrackerVersion::new(1, 12, 1);

    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// True when this version is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// Parses the first `vX.Y.Z` found in `firecracker --version` output.
    pub fn from_version_output(text: &str) -> Option<Self> {
        text.split_whitespace().find_map(|w| w.parse().ok())
    }
}

impl fmt::Display for FirecrackerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Error for a string that is not `[v]X.Y[.Z][-suffix]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Firecracker version: {0:?}")]
pub struct ParseVersionError(pub String);

impl FromStr for FirecrackerVersion {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseVersionError(s.to_string());
        let core = s.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next().ok_or_else(err)?;
        let mut parts = core.split('.');
        let mut next = |required: bool| -> Result<u32, ParseVersionError> {
            match parts.next() {
                Some(p) => p.parse().map_err(|_| err()),
                None if required => Err(err()),
                None => Ok(0),
            }
        };
        let v = FirecrackerVersion::new(next(true)?, next(true)?, next(false)?);
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(v)
    }
}

impl serde::Serialize for FirecrackerVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FirecrackerVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_and_output() {
        assert_eq!("v1.12.1".parse(), Ok(FirecrackerVersion::new(1, 12, 1)));
        assert_eq!("1.7".parse(), Ok(FirecrackerVersion::new(1, 7, 0)));
        assert_eq!("1.17.0-dev".parse(), Ok(FirecrackerVersion::new(1, 17, 0)));
        assert!("x1.2".parse::<FirecrackerVersion>().is_err());
        assert!("1".parse::<FirecrackerVersion>().is_err());
        assert!("1.2.3.4".parse::<FirecrackerVersion>().is_err());
        let out = "Firecracker v1.12.1\n\n2026-11-29T14:16:51 [anonymous-instance:main] exiting";
        assert_eq!(FirecrackerVersion::from_version_output(out), Some(FirecrackerVersion::new(1, 12, 1)));
    }

    #[test]
    fn orders_and_compares() {
        let v = FirecrackerVersion::new(1, 12, 1);
        assert!(v.at_least(1, 12) && v.at_least(1, 7) && !v.at_least(1, 13));
        assert!(FirecrackerVersion::new(1, 9, 0) < FirecrackerVersion::new(1, 10, 0));
        assert_eq!(v.to_string(), "v1.12.1");
    }
}
