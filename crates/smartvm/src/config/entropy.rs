//! `PUT /entropy`: the virtio-rng device.

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::rate_limiter::{RateLimiter, RateLimiterPayload};

/// The entropy device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntropyConfig {
    /// Rate limiter for bytes handed to the guest.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "rate_limiter")]
    pub rate_limiter: Option<RateLimiter>,
}

/// Firecracker's `/entropy` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntropyPayload {
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limiter: Option<RateLimiterPayload>,
}

impl EntropyConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        if let Some(rl) = &self.rate_limiter {
            rl.validate("entropy.rateLimiter", p);
        }
    }

    /// Firecracker's payload shape.
    pub fn payload(&self) -> EntropyPayload {
        EntropyPayload { rate_limiter: self.rate_limiter.as_ref().map(RateLimiter::payload) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden() {
        assert_eq!(serde_json::to_value(EntropyConfig::default().payload()).unwrap(), json!({}));
    }
}
