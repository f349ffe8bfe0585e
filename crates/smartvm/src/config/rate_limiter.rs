//! Token-bucket rate limiters, shared by drives, network interfaces and the entropy device.
//! Input in camelCase (or snake_case); serialised in Firecracker's snake_case.

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// A token bucket: `size` tokens refilled every `refill_time` ms, plus an optional initial burst.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct TokenBucket {
    /// Bucket size in tokens (bytes or operations).
    pub size: u64,
    /// Refill period in milliseconds.
    #[serde(alias = "refill_time")]
    pub refill_time: u64,
    /// Extra tokens available once at start.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "one_time_burst")]
    pub one_time_burst: Option<u64>,
}

/// A rate limiter with optional bandwidth (bytes) and ops buckets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct RateLimiter {
    /// Bytes per refill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Operations per refill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

impl TokenBucket {
    /// A bucket of `size` tokens refilled every `refill_time_ms`.
    pub fn new(size: u64, refill_time_ms: u64) -> Self {
        Self { size, refill_time: refill_time_ms, one_time_burst: None }
    }
}

impl RateLimiter {
    pub(crate) fn validate(&self, field: &str, p: &mut Problems) {
        for (name, bucket) in [("bandwidth", &self.bandwidth), ("ops", &self.ops)] {
            if let Some(b) = bucket {
                if b.size == 0 {
                    p.push(format!("{field}.{name}.size"), "must be greater than 0");
                }
                if b.refill_time == 0 {
                    p.push(format!("{field}.{name}.refillTime"), "must be greater than 0 ms");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden_payload_and_input_shapes() {
        let rl: RateLimiter =
            serde_json::from_value(json!({"bandwidth": {"size": 1000, "refillTime": 100, "oneTimeBurst": 5}})).unwrap();
        assert_eq!(
            serde_json::to_value(&rl).unwrap(),
            json!({"bandwidth": {"size": 1000, "refill_time": 100, "one_time_burst": 5}})
        );
        let snake: RateLimiter = serde_json::from_value(json!({"ops": {"size": 10, "refill_time": 1}})).unwrap();
        assert_eq!(serde_json::to_value(&snake).unwrap(), json!({"ops": {"size": 10, "refill_time": 1}}));
        assert!(serde_json::from_value::<RateLimiter>(json!({"bandwith": {}})).is_err());
    }

    #[test]
    fn rejects_empty_buckets() {
        let rl = RateLimiter { bandwidth: Some(TokenBucket::new(0, 0)), ops: None };
        let mut p = Problems::default();
        rl.validate("drives[0].rateLimiter", &mut p);
        let fields: Vec<_> = p.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["drives[0].rateLimiter.bandwidth.size", "drives[0].rateLimiter.bandwidth.refillTime"]);
    }
}
