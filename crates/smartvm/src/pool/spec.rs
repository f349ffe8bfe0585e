//! What a pool is: its name, size, kind and refill budget, checked before anything is made.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigErrors, ConfigProblem, VmConfig};
use crate::error::{Result, SnapshotError};
use crate::snapshot::Snapshot;

/// Longest pool name: it prefixes the ids (and runtime dir names) of its VMs.
pub const MAX_POOL_NAME: usize = 32;
/// Most VMs one pool keeps ready.
pub const MAX_POOL_SIZE: usize = 1024;

/// How a pool's VMs wait.
#[derive(Debug, Clone)]
pub enum PoolKind {
    /// Firecracker spawned with its API up and nothing configured; a checkout configures it
    /// (with this config, or the one it is given) and boots it.
    Cold(VmConfig),
    /// Like [`Cold`](Self::Cold), with this config already sent to Firecracker (and its
    /// drives staged, its TAPs made): a checkout only starts the instance. Checkouts take the
    /// pool's config and no other.
    Configured(VmConfig),
    /// Restored from this snapshot and paused; a checkout resumes it. The VMs have the config
    /// the snapshot carries (or `config`, which must describe the same machine).
    Template {
        /// The snapshot every VM is restored from.
        snapshot: Snapshot,
        /// The config of the restored VMs.
        config: VmConfig,
    },
}

impl PoolKind {
    /// A template pool of the snapshot bundle in `dir` (see [`Snapshot::load`]), with the
    /// config the bundle carries (without its id: the pool gives ids).
    pub fn template(dir: &Path) -> Result<Self> {
        let snapshot = Snapshot::load(dir)?;
        let mut config = *snapshot.vm_config.clone().ok_or_else(|| SnapshotError::NoConfig(dir.to_path_buf()))?;
        config.id = None;
        Ok(PoolKind::Template { snapshot, config })
    }

    /// `cold` or `template`.
    pub fn name(&self) -> &'static str {
        match self {
            PoolKind::Cold(_) => "cold",
            PoolKind::Configured(_) => "configured",
            PoolKind::Template { .. } => "template",
        }
    }

    /// The config its VMs are made with (and a cold pool's checkouts default to).
    pub fn config(&self) -> &VmConfig {
        match self {
            PoolKind::Cold(config) | PoolKind::Configured(config) | PoolKind::Template { config, .. } => config,
        }
    }
}

/// A pool: `size` VMs of `kind` kept ready under `name`, at most `refill_concurrency` of them
/// being made at once (the CPU a refill may take from the VMs that run).
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Names the pool; its VMs are `<name>-<12 hex digits>`. Letters, digits, `-` and `_`.
    pub name: String,
    /// How many VMs wait ready.
    pub size: usize,
    /// How they wait.
    pub kind: PoolKind,
    /// How many VMs are made at once while refilling (default 1).
    pub refill_concurrency: usize,
}

impl PoolSpec {
    /// A pool of `size` VMs of `kind`, refilled one at a time.
    pub fn new(name: impl Into<String>, size: usize, kind: PoolKind) -> Self {
        Self { name: name.into(), size, kind, refill_concurrency: 1 }
    }

    /// Sets how many VMs are made at once while refilling.
    pub fn with_refill_concurrency(mut self, n: usize) -> Self {
        self.refill_concurrency = n;
        self
    }

    /// Every problem with the spec (`INVALID_CONFIG`), the config's included (as `config.*`).
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        let mut push = |field: &str, message: String| {
            problems.push(ConfigProblem { field: field.to_string(), message });
        };
        let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.name.is_empty() || self.name.len() > MAX_POOL_NAME || !self.name.chars().all(name_ok) {
            push("name", format!("must be 1 to {MAX_POOL_NAME} letters, digits, '-' or '_'"));
        }
        if self.size == 0 || self.size > MAX_POOL_SIZE {
            push("size", format!("must be 1 to {MAX_POOL_SIZE}"));
        }
        if self.refill_concurrency == 0 || self.refill_concurrency > self.size.max(1) {
            push("refillConcurrency", "must be 1 to the pool's size".into());
        }
        if self.kind.config().id.is_some() {
            push("config.id", "is the pool's to give (`<name>-<12 hex digits>`); leave it unset".into());
        }
        if let Err(config) = self.kind.config().validate() {
            for p in config.problems {
                push(&format!("config.{}", p.field), p.message);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors { problems })
        }
    }
}

/// What a pool holds and has done, as of one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStats {
    /// The pool's name.
    pub name: String,
    /// `cold` or `template`.
    pub kind: String,
    /// The size it refills to.
    pub size: usize,
    /// VMs ready to hand out.
    pub ready: usize,
    /// VMs being made.
    pub warming: usize,
    /// VMs handed out ready.
    pub handed_out: u64,
    /// Checkouts that found none ready and made their VM on the spot.
    pub misses: u64,
    /// Ready VMs destroyed because their process ended or failed its identity check.
    pub discarded: u64,
    /// VMs that could not be made.
    pub failed: u64,
}
