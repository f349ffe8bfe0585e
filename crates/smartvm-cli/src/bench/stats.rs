//! Summaries of sample sets and the host's load while they were taken.

use serde::Serialize;

/// Mean, median, p95, min, max of a sample set (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

/// Nearest-rank percentiles; `None` for no samples.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    Some(Summary { n: s.len(), mean, median: rank(0.5), p95: rank(0.95), min: s[0], max: s[s.len() - 1] })
}

/// The 1-minute load average (`/proc/loadavg`), when readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max, s.p95, s.mean), (5, 3.0, 1.0, 5.0, 5.0, 3.0));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&hundred).unwrap();
        assert_eq!((s.median, s.p95), (50.0, 95.0));
        assert_eq!(summarize(&[]), None);
    }
}
