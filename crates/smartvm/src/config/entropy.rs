//! `PUT /entropy`: the virtio-rng device.

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::rate_limiter::RateLimiter;
use super::resource::{FirecrackerResource, Validate};

/// The entropy device: smartvm's input and Firecracker's `PUT /entropy` body in one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct EntropyConfig {
    /// Rate limiter for bytes handed to the guest.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "rate_limiter")]
    pub rate_limiter: Option<RateLimiter>,
}

impl FirecrackerResource for EntropyConfig {
    const API_PATH: &'static str = "/entropy";
    const REFUSED_AS: &'static str = "EntropyDevice";
}

impl Validate for EntropyConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        if let Some(rl) = &self.rate_limiter {
            rl.validate(&format!("{at}.rateLimiter"), p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden() {
        assert_eq!(serde_json::to_value(EntropyConfig::default()).unwrap(), json!({}));
    }
}
