//! `PUT /network-interfaces/{id}` (pre-boot) and `PATCH` (rate limiters, post-boot).

use super::problems::NeedsNewerFirecracker;
use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::rate_limiter::RateLimiter;
use super::resource::{FirecrackerResource, Validate};
use crate::version::FirecrackerVersion;

/// A virtio-net interface backed by a host TAP device: smartvm's input and Firecracker's
/// `PUT /network-interfaces/{id}` body in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct NetworkInterfaceConfig {
    /// Id, `[A-Za-z0-9_]`, unique within the VM.
    #[serde(alias = "iface_id")]
    pub iface_id: String,
    /// Host TAP device name. When absent, smartvm's network manager creates one at start.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "host_dev_name")]
    pub host_dev_name: Option<String>,
    /// Guest MAC address `xx:xx:xx:xx:xx:xx`.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "guest_mac")]
    pub guest_mac: Option<String>,
    /// Receive rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "rx_rate_limiter")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Transmit rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "tx_rate_limiter")]
    pub tx_rate_limiter: Option<RateLimiter>,
    /// Device MTU (Firecracker v1.16+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

/// Firecracker's `PATCH /network-interfaces/{id}` body: new rate limiters after boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterfaceUpdate {
    /// The interface.
    pub iface_id: String,
    /// New receive rate limiter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// New transmit rate limiter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl FirecrackerResource for NetworkInterfaceConfig {
    const API_PATH: &'static str = "/network-interfaces";
    const REFUSED_AS: &'static str = "NetDevice";
    fn api_path(&self) -> String {
        format!("{}/{}", Self::API_PATH, self.iface_id)
    }
    fn check_version(&self, version: FirecrackerVersion) -> Result<(), NeedsNewerFirecracker> {
        NeedsNewerFirecracker::gate(self.mtu.is_some(), "mtu", (1, 16), version)
    }
}

impl Validate for NetworkInterfaceConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        let field = |f: &str| format!("{at}.{f}");
        p.check_id(&field("ifaceId"), &self.iface_id);
        if let Some(dev) = &self.host_dev_name {
            if dev.is_empty() || dev.len() > 15 || dev.bytes().any(|b| b == b'/' || b.is_ascii_whitespace() || b == 0) {
                p.push(
                    field("hostDevName"),
                    format!("{dev:?} is not a valid interface name (1-15 bytes, no '/' or spaces)"),
                );
            }
        }
        if let Some(mac) = &self.guest_mac {
            if !is_valid_mac(mac) {
                p.push(field("guestMac"), format!("{mac:?} is not a MAC address xx:xx:xx:xx:xx:xx"));
            }
        }
        for (name, rl) in [("rxRateLimiter", &self.rx_rate_limiter), ("txRateLimiter", &self.tx_rate_limiter)] {
            if let Some(rl) = rl {
                rl.validate(&field(name), p);
            }
        }
    }
}

/// `mac` as a MAC address when it is in the form Firecracker accepts, `xx:xx:xx:xx:xx:xx`.
pub fn parse_mac(mac: &str) -> Option<macaddr::MacAddr6> {
    let parts: Vec<&str> = mac.split(':').collect();
    let colon_form = parts.len() == 6 && parts.iter().all(|p| p.len() == 2);
    colon_form.then(|| mac.parse().ok()).flatten()
}

/// True for `xx:xx:xx:xx:xx:xx` with hex digits.
pub fn is_valid_mac(mac: &str) -> bool {
    parse_mac(mac).is_some()
}

/// The lower-case `xx:xx:xx:xx:xx:xx` form Firecracker and guests report.
pub fn mac_text(mac: macaddr::MacAddr6) -> String {
    mac.to_string().to_ascii_lowercase()
}

impl NetworkInterfaceConfig {
    /// An interface on an existing TAP device.
    pub fn new(id: impl Into<String>, host_dev_name: impl Into<String>) -> Self {
        Self {
            iface_id: id.into(),
            host_dev_name: Some(host_dev_name.into()),
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
            mtu: None,
        }
    }

    /// An interface whose TAP (and MAC, unless set) smartvm's network manager creates at start.
    pub fn managed(id: impl Into<String>) -> Self {
        Self { host_dev_name: None, ..Self::new(id, String::new()) }
    }

    /// Sets the guest MAC.
    pub fn with_mac(mut self, mac: impl Into<String>) -> Self {
        self.guest_mac = Some(mac.into());
        self
    }

    /// The interface as Firecracker gets it: on TAP `host_dev_name` (given or created), with
    /// the MAC smartvm chose when none was given.
    pub fn resolved(&self, host_dev_name: &str, mac: Option<macaddr::MacAddr6>) -> Self {
        let guest_mac = self.guest_mac.clone().or_else(|| mac.map(mac_text));
        Self { host_dev_name: Some(host_dev_name.to_string()), guest_mac, ..self.clone() }
    }

    /// The hot-update body with new rate limiters.
    pub fn update(iface_id: &str, rx: Option<&RateLimiter>, tx: Option<&RateLimiter>) -> NetworkInterfaceUpdate {
        NetworkInterfaceUpdate {
            iface_id: iface_id.to_string(),
            rx_rate_limiter: rx.cloned(),
            tx_rate_limiter: tx.cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rate_limiter::TokenBucket;
    use serde_json::json;

    #[test]
    fn golden_payloads_per_version() {
        let mut n = NetworkInterfaceConfig::new("eth0", "tap0").with_mac("02:00:00:00:00:01");
        n.rx_rate_limiter = Some(RateLimiter { bandwidth: Some(TokenBucket::new(10, 20)), ops: None });
        let v12 = FirecrackerVersion::new(1, 12, 1);
        n.check_version(v12).unwrap();
        assert_eq!(
            serde_json::to_value(n.resolved("tap0", None)).unwrap(),
            json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "02:00:00:00:00:01",
                   "rx_rate_limiter": {"bandwidth": {"size": 10, "refill_time": 20}}})
        );
        n.mtu = Some(1400);
        assert!(n.check_version(v12).unwrap_err().to_string().contains("v1.16"));
        n.check_version(FirecrackerVersion::new(1, 16, 0)).unwrap();
        assert_eq!(serde_json::to_value(&n).unwrap()["mtu"], 1400);
        let managed =
            NetworkInterfaceConfig::managed("eth1").resolved("sv01", Some(macaddr::MacAddr6::new(2, 0, 0, 0, 0, 0xAB)));
        assert_eq!(
            serde_json::to_value(&managed).unwrap(),
            json!({"iface_id": "eth1", "host_dev_name": "sv01", "guest_mac": "02:00:00:00:00:ab"})
        );
        assert_eq!(managed.api_path(), "/network-interfaces/eth1");
        let upd = NetworkInterfaceConfig::update("eth0", None, Some(&RateLimiter::default()));
        assert_eq!(serde_json::to_value(upd).unwrap(), json!({"iface_id": "eth0", "tx_rate_limiter": {}}));
    }

    #[test]
    fn mac_syntax() {
        assert!(is_valid_mac("02:aB:00:00:00:ff"));
        for bad in ["02:00:00:00:00", "02:00:00:00:00:0g", "0200:00:00:00:00", "02-00-00-00-00-00"] {
            assert!(!is_valid_mac(bad), "{bad}");
        }
    }
}
