//! VM configs as files give them (paths relative to the file) and the probe kernel a config
//! may boot: shared by `run` and `pool create`.

use std::path::PathBuf;

use smartvm::{probe, SmartVmError, SmartVmOptions, VmConfig};

use crate::exit::{CliError, Exit};

/// Writes the probe kernel when the config boots it, but only after every other field has
/// been validated: bad input never leaves files behind.
pub fn install_probe_if_used(cfg: &VmConfig, options: &SmartVmOptions) -> Result<(), CliError> {
    let dir = options.data_dir.join("kernels");
    if cfg.boot_source.kernel_image_path != probe::probe_kernel_path(&dir) {
        return Ok(());
    }
    if let Err(mut errors) = cfg.validate() {
        errors.problems.retain(|p| p.field != "bootSource.kernelImagePath");
        if !errors.problems.is_empty() {
            return Err(SmartVmError::from(errors).into());
        }
    }
    probe::install_probe_kernel(&dir).map(drop).map_err(|e| CliError::new(Exit::HostUnfit, e))
}

/// The config in the file at `path`; paths in it are relative to the file, as in compose files.
pub fn config_from_file(path: &std::path::Path) -> Result<VmConfig, CliError> {
    let mut cfg = VmConfig::from_file(path).map_err(SmartVmError::from)?;
    let base = std::path::absolute(path).ok().and_then(|p| p.parent().map(std::path::Path::to_path_buf));
    if let Some(base) = base {
        resolve_relative(&mut cfg, &base);
    }
    Ok(cfg)
}

/// Makes every relative host path in `cfg` relative to `base`.
fn resolve_relative(cfg: &mut VmConfig, base: &std::path::Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    fix(&mut cfg.boot_source.kernel_image_path);
    if let Some(initrd) = cfg.boot_source.initrd_path.as_mut() {
        fix(initrd);
    }
    for d in &mut cfg.drives {
        fix(&mut d.path_on_host);
    }
    if let Some(l) = cfg.logger.as_mut() {
        fix(&mut l.log_path);
    }
    if let Some(m) = cfg.metrics.as_mut() {
        fix(&mut m.metrics_path);
    }
    if let Some(v) = cfg.vsock.as_mut() {
        fix(&mut v.uds_path);
    }
}
