//! `PUT /mmds/config` (pre-boot) and the MMDS data store (`/mmds`).

use super::problems::NeedsNewerFirecracker;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::problems::Problems;
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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

/// Firecracker's `/mmds/config` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MmdsConfigPayload {
    network_interfaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<MmdsVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4_address: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    imds_compat: Option<bool>,
}

impl MmdsConfig {
    pub(crate) fn validate(&self, iface_ids: &[&str], p: &mut Problems) {
        if self.network_interfaces.is_empty() {
            p.push("mmdsConfig.networkInterfaces", "must name at least one interface");
        }
        for (i, id) in self.network_interfaces.iter().enumerate() {
            if !iface_ids.contains(&id.as_str()) {
                p.push(format!("mmdsConfig.networkInterfaces[{i}]"), format!("no network interface {id:?}"));
            }
        }
        if let Some(ip) = self.ipv4_address {
            if !ip.is_link_local() {
                p.push("mmdsConfig.ipv4Address", format!("{ip} must be link-local (169.254.0.0/16)"));
            }
        }
    }

    /// Firecracker's payload for `version`.
    pub fn payload(&self, version: FirecrackerVersion) -> Result<MmdsConfigPayload, NeedsNewerFirecracker> {
        NeedsNewerFirecracker::gate(self.imds_compat.is_some(), "imdsCompat", (1, 13), version)?;
        Ok(MmdsConfigPayload {
            network_interfaces: self.network_interfaces.clone(),
            version: self.version,
            ipv4_address: self.ipv4_address,
            imds_compat: self.imds_compat,
        })
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
        assert_eq!(
            serde_json::to_value(m.payload(FirecrackerVersion::new(1, 12, 1)).unwrap()).unwrap(),
            json!({"network_interfaces": ["eth0"], "version": "V2", "ipv4_address": "169.254.170.2"})
        );
        let mut p = Problems::default();
        MmdsConfig { ipv4_address: Some(Ipv4Addr::new(10, 0, 0, 1)), ..m.clone() }.validate(&["eth1"], &mut p);
        assert_eq!(p.0.len(), 2);
        let compat = MmdsConfig { imds_compat: Some(true), ..m };
        assert!(compat.payload(FirecrackerVersion::new(1, 12, 1)).is_err());
        assert!(compat.payload(FirecrackerVersion::new(1, 13, 0)).is_ok());
    }
}
