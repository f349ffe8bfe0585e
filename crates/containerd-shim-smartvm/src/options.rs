//! Runtime options: defaults for every task of a runtime, from a TOML file containerd names —
//! CRI's `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.smartvm.options]` with
//! `ConfigPath = "/etc/smartvm/shim.toml"`, or `ctr run --runtime-config-path`. Both reach the
//! shim as containerd's `runtimeoptions.v1.Options` (its field 2, `config_path`). A task's own
//! `io.smartvm.*` annotations override these defaults.
//!
//! ```toml
//! kernel = "/var/lib/smartvm/kernels/vmlinux"   # io.smartvm.kernel
//! boot_args = "console=ttyS0 reboot=k panic=1"  # io.smartvm.boot_args
//! init = "agent"                                # io.smartvm.init
//! vcpus = 2                                     # io.smartvm.vcpus
//! mem_mib = 256                                 # io.smartvm.mem_mib
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{Message, UnknownValueRef};
use serde::Deserialize;

/// The type containerd gives runtime options of a runtime other than runc.
const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// Runtime options that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The options message is not what containerd sends.
    #[error("runtime options of type {0:?}: smartvm takes runtimeoptions.v1.Options (ConfigPath)")]
    Type(String),
    /// Its bytes do not decode.
    #[error("runtime options do not decode")]
    Decode(#[source] containerd_shim_protos::protobuf::Error),
    /// The config file is not one smartvm may trust (or read).
    #[error("runtime config {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The file's keys; each is the `io.smartvm.<key>` annotation's default.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDefaults {
    guest: Option<String>,
    kernel: Option<String>,
    boot_args: Option<String>,
    init: Option<String>,
    vcpus: Option<u32>,
    mem_mib: Option<u32>,
}

impl RuntimeDefaults {
    /// Parses the file's text (pure).
    pub fn parse(text: &str) -> Result<RuntimeDefaults, toml::de::Error> {
        toml::from_str(text)
    }

    /// The defaults as annotations (`io.smartvm.<key>` → value).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let numbers = [("vcpus", self.vcpus), ("mem_mib", self.mem_mib)];
        let texts =
            [("guest", &self.guest), ("kernel", &self.kernel), ("boot_args", &self.boot_args), ("init", &self.init)];
        let texts = texts.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v)));
        let numbers = numbers.into_iter().filter_map(|(k, v)| v.map(|v| (k, v.to_string())));
        texts.chain(numbers).map(|(k, v)| (format!("{}{k}", crate::spec::PREFIX), v)).collect()
    }
}

/// The config path in containerd's runtime options (`None`: no options, or no path).
pub fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>, OptionsError> {
    let Some(any) = options.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else { return Ok(None) };
    if any.type_url.trim_start_matches('/').rsplit('/').next() != Some(RUNTIME_OPTIONS_TYPE) {
        return Err(OptionsError::Type(any.type_url.clone()));
    }
    // Field 2 of runtimeoptions.v1.Options, read as an unknown field of an empty message.
    let message = Empty::parse_from_bytes(&any.value).map_err(OptionsError::Decode)?;
    match message.special_fields.unknown_fields().get(2) {
        Some(UnknownValueRef::LengthDelimited(bytes)) if !bytes.is_empty() => {
            Ok(Some(PathBuf::from(String::from_utf8_lossy(bytes).into_owned())))
        }
        _ => Ok(None),
    }
}

/// Reads the defaults at `path`: a file no other user could have written (smartvm's trust
/// check), since it names the kernel every task boots.
pub fn load(path: &Path) -> Result<RuntimeDefaults, OptionsError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| OptionsError::File { path: path.into(), source };
    smartvm::trust::check(path, smartvm::trust::Expect::File).map_err(|e| fail(Box::new(e)))?;
    let text = std::fs::read_to_string(path).map_err(|e| fail(Box::new(e)))?;
    RuntimeDefaults::parse(&text).map_err(|e| fail(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(type_url: &str, path: &str) -> Any {
        // config_path = field 2, length-delimited: tag (2 << 3 | 2), length, bytes.
        let mut value = vec![0x12, path.len() as u8];
        value.extend_from_slice(path.as_bytes());
        Any { type_url: type_url.into(), value, ..Default::default() }
    }

    #[test]
    fn the_config_path_is_read_from_containerd_s_runtime_options() {
        let any = options("runtimeoptions.v1.Options", "/etc/smartvm/shim.toml");
        assert_eq!(config_path(Some(&any)).unwrap(), Some(PathBuf::from("/etc/smartvm/shim.toml")));
        let url = options("type.googleapis.com/runtimeoptions.v1.Options", "/x.toml");
        assert_eq!(config_path(Some(&url)).unwrap(), Some(PathBuf::from("/x.toml")));
        assert_eq!(config_path(None).unwrap(), None);
        assert_eq!(config_path(Some(&Any::default())).unwrap(), None);
        let runc = options("containerd.runc.v1.Options", "/x");
        assert!(matches!(config_path(Some(&runc)), Err(OptionsError::Type(_))));
    }

    #[test]
    fn defaults_become_annotations_and_unknown_keys_are_refused() {
        let defaults = RuntimeDefaults::parse("kernel = \"/k/vmlinux\"\nvcpus = 2\ninit = \"agent\"\n").unwrap();
        let annotations = defaults.annotations();
        assert_eq!(annotations.get("io.smartvm.kernel").map(String::as_str), Some("/k/vmlinux"));
        assert_eq!(annotations.get("io.smartvm.vcpus").map(String::as_str), Some("2"));
        assert_eq!(annotations.len(), 3);
        assert!(RuntimeDefaults::parse("colour = \"red\"").is_err());
        assert!(RuntimeDefaults::parse("vcpus = \"two\"").is_err());
    }

    #[test]
    fn a_config_another_user_could_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.toml");
        std::fs::write(&path, "vcpus = 2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(load(&path), Err(OptionsError::File { .. })));
    }
}
