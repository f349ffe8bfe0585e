//! The pre-boot configuration, planned as data before anything is sent: the config with every
//! host-side name resolved, which is both the list of `PUT` requests and the `--config-file`.

use crate::api::PutResource;
use crate::config::{ConfigErrors, FirecrackerResource, ResourceVisitor, VmConfig};
use crate::error::{Result, SmartVmError};
use crate::version::FirecrackerVersion;

pub use crate::host::ResolvedResources;

/// The config exactly as Firecracker gets it: staged drive paths, TAP names and MACs, the
/// guest's `ip=` argument, paths as a jailed Firecracker sees them; smartvm's own fields
/// consumed; checked against the Firecracker version.
#[derive(Debug, Clone, PartialEq)]
pub struct BootPlan {
    config: VmConfig,
}

impl BootPlan {
    /// The `PUT` requests in configuration order (see the resource table in [`crate::config`]).
    pub fn requests(&self) -> Result<Vec<PutResource>> {
        struct Requests(Vec<PutResource>);
        impl ResourceVisitor for Requests {
            type Error = serde_json::Error;
            fn visit<R: FirecrackerResource>(&mut self, resource: &R) -> Result<(), serde_json::Error> {
                self.0.push(PutResource::of(resource)?);
                Ok(())
            }
        }
        let mut requests = Requests(Vec::new());
        self.config.visit_resources(&mut requests).map_err(encode_error)?;
        Ok(requests.0)
    }

    /// Firecracker's `--config-file` document carrying the same resources.
    pub fn config_file(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.config).map_err(encode_error)
    }

    /// The resolved config.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }
}

fn encode_error(e: serde_json::Error) -> SmartVmError {
    SmartVmError::io("cannot encode the pre-boot config", std::io::Error::other(e))
}

/// The plan for `config` on `version`, with the host-side names of `resolved`.
pub fn boot_plan(
    config: &VmConfig,
    resolved: &ResolvedResources,
    version: FirecrackerVersion,
) -> Result<BootPlan, ConfigErrors> {
    let mut boot_source = config.boot_source.clone();
    if let Some(extra) = &resolved.extra_boot_args {
        boot_source.boot_args = Some(match &boot_source.boot_args {
            Some(args) => format!("{args} {extra}"),
            None => extra.clone(),
        });
    }
    if let Some(args) = boot_source.boot_args.as_ref().filter(|a| a.len() >= crate::config::MAX_BOOT_ARGS) {
        let why = format!(
            "is {} bytes with smartvm's ip= argument; the limit is {}",
            args.len(),
            crate::config::MAX_BOOT_ARGS
        );
        return Err(ConfigErrors::single("bootSource.bootArgs", why));
    }
    boot_source.kernel_image_path = resolved.kernel_path.clone().unwrap_or(boot_source.kernel_image_path);
    boot_source.initrd_path = resolved.initrd_path.clone().or(boot_source.initrd_path);
    let drives = config
        .drives
        .iter()
        .map(|d| d.resolved(resolved.drive_paths.get(&d.drive_id).unwrap_or(&d.path_on_host)))
        .collect();
    let mut network_interfaces = Vec::with_capacity(config.network_interfaces.len());
    for (i, n) in config.network_interfaces.iter().enumerate() {
        let tap = resolved.tap_names.get(&n.iface_id).or(n.host_dev_name.as_ref()).ok_or_else(|| {
            ConfigErrors::single(
                format!("networkInterfaces[{i}].hostDevName"),
                "is required (no TAP was created for it)",
            )
        })?;
        network_interfaces.push(n.resolved(tap, resolved.guest_macs.get(&n.iface_id).copied()));
    }
    let vsock = config.vsock.as_ref().map(|v| crate::config::VsockConfig {
        uds_path: resolved.vsock_path.clone().unwrap_or_else(|| v.uds_path.clone()),
        ..v.clone()
    });
    let plan = VmConfig {
        id: None,
        logger: resolved.logger(config),
        metrics: resolved.metrics(config),
        boot_source,
        drives,
        network_interfaces,
        vsock,
        ..config.clone()
    };
    plan.check_version(version)?;
    Ok(BootPlan { config: plan })
}

/// The version-dependent checks, done before anything exists (at `create_vm`): the plan for
/// `version` is built as if every managed TAP had been created.
pub fn check_for_version(config: &VmConfig, version: FirecrackerVersion) -> Result<(), ConfigErrors> {
    let mut resolved = ResolvedResources::default();
    for n in config.network_interfaces.iter().filter(|n| n.host_dev_name.is_none()) {
        resolved.tap_names.insert(n.iface_id.clone(), "sv0000000000".into());
    }
    boot_plan(config, &resolved, version).map(drop)
}

#[cfg(test)]
mod tests;
