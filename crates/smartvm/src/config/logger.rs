//! `PUT /logger` and `PUT /metrics`: Firecracker's own log and metrics files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::resource::{FirecrackerResource, Validate};

/// Firecracker log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

/// Where and how Firecracker logs. smartvm creates the file before sending the config (versions
/// before v1.14 require it to exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct LoggerConfig {
    /// Log file (or FIFO).
    #[serde(alias = "log_path")]
    pub log_path: PathBuf,
    /// Level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Prefix lines with the level.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "show_level")]
    pub show_level: Option<bool>,
    /// Prefix lines with file:line.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "show_log_origin")]
    pub show_log_origin: Option<bool>,
    /// Only log this module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Where Firecracker writes metrics (flushed every 60 s and on `FlushMetrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct MetricsConfig {
    /// Metrics file (or FIFO).
    #[serde(alias = "metrics_path")]
    pub metrics_path: PathBuf,
}

fn check_output_path(field: &str, path: &std::path::Path, p: &mut Problems) {
    p.check_path(field, path, false);
    if path.is_absolute() && !path.parent().is_some_and(|d| d.is_dir()) {
        p.push(field, format!("directory of {} does not exist", path.display()));
    }
}

impl LoggerConfig {
    /// Log to `path` at `level`.
    pub fn new(path: impl Into<PathBuf>, level: LogLevel) -> Self {
        Self { log_path: path.into(), level: Some(level), show_level: None, show_log_origin: None, module: None }
    }
}

impl FirecrackerResource for LoggerConfig {
    const API_PATH: &'static str = "/logger";
    const REFUSED_AS: &'static str = "Logger";
}

impl Validate for LoggerConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        check_output_path(&format!("{at}.logPath"), &self.log_path, p);
    }
}

impl FirecrackerResource for MetricsConfig {
    const API_PATH: &'static str = "/metrics";
    const REFUSED_AS: &'static str = "Metrics";
}

impl Validate for MetricsConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        check_output_path(&format!("{at}.metricsPath"), &self.metrics_path, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden() {
        let mut l = LoggerConfig::new("/tmp/fc.log", LogLevel::Warning);
        l.show_level = Some(true);
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!({"log_path": "/tmp/fc.log", "level": "Warning", "show_level": true})
        );
        let m = MetricsConfig { metrics_path: "/tmp/m".into() };
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({"metrics_path": "/tmp/m"}));
    }
}
