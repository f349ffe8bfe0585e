//! `PUT /mmds/config` (pre-boot) and the MMDS data store (`/mmds`).

use super::problems::NeedsNewerFirecracker;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::resource::{FirecrackerResource, Validate};
use crate::version::FirecrackerVersion;

/// MMDS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum MmdsVersion {
    V1,
    V2,
}

/// Which interfaces may reach MMDS, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct MmdsConfig {
    /// Interface ids (must exist in `networkInterfaces`).
    #[serde(alias = "network_interfaces")]
    pub network_interfaces: Vec<String>,
    /// Protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<MmdsVersion>,
    /// Link-local address MMDS answers on (default 169.254.169.254).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "ipv4_address")]
    pub ipv4_address: Option<Ipv4Addr>,
    /// EC2 IMDS-compatible responses (Firecracker v1.13+).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "imds_compat")]
    pub imds_compat: Option<bool>,
}

impl FirecrackerResource for MmdsConfig {
    const API_PATH: &'static str = "/mmds/config";
    const REFUSED_AS: &'static str = "MmdsConfig";
    fn check_version(&self, version: FirecrackerVersion) -> Result<(), NeedsNewerFirecracker> {
        NeedsNewerFirecracker::gate(self.imds_compat.is_some(), "imdsCompat", (1, 13), version)
    }
}

/// That the named interfaces exist is checked by [`VmConfig::validate`](super::VmConfig::validate).
impl Validate for MmdsConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        if self.network_interfaces.is_empty() {
            p.push(format!("{at}.networkInterfaces"), "must name at least one interface");
        }
        if let Some(ip) = self.ipv4_address {
            if !ip.is_link_local() {
                p.push(format!("{at}.ipv4Address"), format!("{ip} must be link-local (169.254.0.0/16)"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden_and_validation() {
        let m: MmdsConfig = serde_json::from_value(
            json!({"networkInterfaces": ["eth0"], "version": "V2", "ipv4Address": "169.254.170.2"}),
        )
        .unwrap();
        m.check_version(FirecrackerVersion::new(1, 12, 1)).unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"network_interfaces": ["eth0"], "version": "V2", "ipv4_address": "169.254.170.2"})
        );
        let mut p = Problems::default();
        let unnamed =
            MmdsConfig { ipv4_address: Some(Ipv4Addr::new(10, 0, 0, 1)), network_interfaces: vec![], ..m.clone() };
        unnamed.validate("mmdsConfig", &mut p);
        let fields: Vec<_> = p.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["mmdsConfig.networkInterfaces", "mmdsConfig.ipv4Address"]);
        let compat = MmdsConfig { imds_compat: Some(true), ..m };
        assert!(compat.check_version(FirecrackerVersion::new(1, 12, 1)).is_err());
        assert!(compat.check_version(FirecrackerVersion::new(1, 13, 0)).is_ok());
    }
}
