//! What every Firecracker resource shares: one struct is both smartvm's input (camelCase or
//! snake_case keys) and Firecracker's wire body (snake_case keys, by serde renames), so a resource
//! has exactly one shape. [`resource_table!`] lists them in configuration order; the pre-boot
//! requests, the `--config-file` sections, the version checks and the mapping of Firecracker's
//! config-file refusals all follow from that one list.

use serde::Serialize;

use super::problems::{NeedsNewerFirecracker, Problems};
use crate::version::FirecrackerVersion;

/// A resource Firecracker configures before boot with one `PUT`.
///
/// Its `Serialize` impl is Firecracker's body for that `PUT` and its section of the
/// `--config-file` document.
pub trait FirecrackerResource: Serialize {
    /// The API path of the collection (`/drives`) or of the resource itself (`/machine-config`).
    const API_PATH: &'static str;
    /// Firecracker's `ResourcesError` variant when its `--config-file` refuses this resource.
    const REFUSED_AS: &'static str;

    /// The path this resource is `PUT` to (`/drives/rootfs` for a drive).
    fn api_path(&self) -> String {
        Self::API_PATH.to_string()
    }

    /// Refuses a field the running Firecracker does not know.
    fn check_version(&self, _version: FirecrackerVersion) -> Result<(), NeedsNewerFirecracker> {
        Ok(())
    }
}

/// Something done with each resource of a config in configuration order
/// ([`VmConfig::visit_resources`](super::VmConfig::visit_resources)): the boot plan turns each
/// into its `PUT` request.
pub trait ResourceVisitor {
    /// What stops the visit.
    type Error;
    /// Called once per resource present.
    fn visit<R: FirecrackerResource>(&mut self, resource: &R) -> Result<(), Self::Error>;
}

/// The checks of one resource on its own; `field` is where it sits in the camelCase input
/// (`drives[2]`). Checks across resources (duplicate ids, one root device, the balloon against
/// guest memory) are [`VmConfig::validate`](super::VmConfig::validate)'s.
pub(crate) trait Validate {
    fn validate(&self, field: &str, p: &mut Problems);
}

/// A field of [`VmConfig`](super::VmConfig) holding resources of one kind: exactly one, maybe
/// one, or a list.
pub(crate) trait Slots<R> {
    fn slots(&self) -> &[R];
    /// The input path of the resource at `index` (`drives[2]` for a list, `balloon` otherwise).
    fn field(&self, name: &str, index: usize) -> String {
        let _ = index;
        name.to_string()
    }
}

impl<R: FirecrackerResource> Slots<R> for R {
    fn slots(&self) -> &[R] {
        std::slice::from_ref(self)
    }
}

impl<R: FirecrackerResource> Slots<R> for Option<R> {
    fn slots(&self) -> &[R] {
        self.as_slice()
    }
}

impl<R: FirecrackerResource> Slots<R> for Vec<R> {
    fn slots(&self) -> &[R] {
        self.as_slice()
    }
    fn field(&self, name: &str, index: usize) -> String {
        format!("{name}[{index}]")
    }
}

/// Declares [`VmConfig`](super::VmConfig)'s resource fields in the order Firecracker is
/// configured: logger and metrics first (later failures get logged), MMDS config last (it names
/// interfaces that must exist). Each line is `field (camelCase input name): Type`.
macro_rules! resource_table {
    ($($field:ident ($input:literal): $ty:ty,)*) => {
        impl VmConfig {
            /// Hands each resource present to `visitor`, in configuration order.
            pub fn visit_resources<V: ResourceVisitor>(&self, visitor: &mut V) -> Result<(), V::Error> {
                $(for r in resource::Slots::<$ty>::slots(&self.$field) {
                    visitor.visit(r)?;
                })*
                Ok(())
            }

            /// Refuses any field the Firecracker `version` does not know, naming it.
            pub fn check_version(&self, version: FirecrackerVersion) -> Result<(), ConfigErrors> {
                $(for (i, r) in resource::Slots::<$ty>::slots(&self.$field).iter().enumerate() {
                    r.check_version(version)
                        .map_err(|e| e.at(&resource::Slots::<$ty>::field(&self.$field, $input, i)))?;
                })*
                Ok(())
            }

            fn validate_each(&self, p: &mut Problems) {
                $(for (i, r) in resource::Slots::<$ty>::slots(&self.$field).iter().enumerate() {
                    resource::Validate::validate(r, &resource::Slots::<$ty>::field(&self.$field, $input, i), p);
                })*
            }
        }

        /// Firecracker's `ResourcesError` variants of the resources and the API path that
        /// configures the same resource.
        pub(crate) const REFUSALS: &[(&str, &str)] = &[
            $((<$ty as resource::FirecrackerResource>::REFUSED_AS, <$ty as resource::FirecrackerResource>::API_PATH),)*
        ];
    };
}

pub(crate) use resource_table;
