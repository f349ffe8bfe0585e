//! NAT masquerade in an nftables table owned by smartvm (one per bridge), so removing the
//! table removes exactly what smartvm added. Rules go through the `nftables` crate's typed
//! JSON schema (applied by the `nft` tool).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};

use super::plan::SubnetPlan;

/// The table smartvm owns for `bridge`.
pub fn table_name(bridge: &str) -> String {
    format!("smartvm_{}", bridge.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
}

/// The ruleset (re)creating the table: a `nat` chain on `postrouting` masquerading `subnet`
/// leaving through `out_if` (pure).
pub fn masquerade_ruleset(table: &str, subnet: &SubnetPlan, out_if: &str) -> Nftables<'static> {
    let table: Cow<'static, str> = table.to_string().into();
    let mut batch = Batch::new();
    let owned = Table { family: NfFamily::IP, name: table.clone(), handle: None };
    // add + flush in one transaction: idempotent, and replaces what a crashed run left.
    batch.add(NfListObject::Table(owned.clone()));
    batch.add_cmd(NfCmd::Flush(FlushObject::Table(owned)));
    batch.add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: table.clone(),
        name: "postrouting".into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(100),
        ..Chain::default()
    }));
    let saddr = Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
            protocol: "ip".into(),
            field: "saddr".into(),
        }))),
        right: Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(subnet.network.to_string().into())),
            len: subnet.prefix as u32,
        })),
        op: Operator::EQ,
    });
    let oif = Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Oifname })),
        right: Expression::String(out_if.to_string().into()),
        op: Operator::EQ,
    });
    batch.add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table,
        chain: "postrouting".into(),
        expr: vec![saddr, oif, Statement::Masquerade(None)].into(),
        ..Rule::default()
    }));
    batch.to_nftables()
}

/// The ruleset deleting the table (and everything in it).
pub fn delete_ruleset(table: &str) -> Nftables<'static> {
    let mut batch = Batch::new();
    let owned = Table { family: NfFamily::IP, name: table.to_string().into(), handle: None };
    // add (a no-op when it exists) + delete in one transaction: deleting is idempotent.
    batch.add(NfListObject::Table(owned.clone()));
    batch.delete(NfListObject::Table(owned));
    batch.to_nftables()
}

/// How long one `nft` call may take before it is killed.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `nft` is looked for (a root-owned system dir; `PATH` is not consulted as root).
const NFT_PATHS: [&str; 4] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"];

/// Why an `nft` call failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// No trusted `nft` binary.
    #[error("no trusted nft binary in {NFT_PATHS:?} (install nftables)")]
    NotFound,
    /// It could not be run.
    #[error("cannot run {}", program.display())]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// It did not finish in time (it was killed).
    #[error("nft did not finish within {0:?}")]
    TimedOut(Duration),
    /// It refused the ruleset.
    #[error("nft failed ({status}): {stderr}")]
    Failed {
        /// Exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

/// Applies a ruleset with `nft -j -f -`, bounded by a timeout.
pub fn apply(ruleset: &Nftables) -> Result<(), NftError> {
    let program = NFT_PATHS
        .iter()
        .map(Path::new)
        .find(|p| crate::trust::check(p, crate::trust::Expect::Executable).is_ok())
        .ok_or(NftError::NotFound)?;
    apply_with(program, ruleset, NFT_TIMEOUT)
}

fn apply_with(program: &Path, ruleset: &Nftables, timeout: Duration) -> Result<(), NftError> {
    let spawn = |source| NftError::Spawn { program: program.to_path_buf(), source };
    let json = serde_json::to_vec(ruleset).map_err(|e| spawn(std::io::Error::other(e)))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(["-j", "-f", "-"]);
    match crate::process::output_within_input(&mut cmd, Some(json), timeout).map_err(spawn)? {
        None => Err(NftError::TimedOut(timeout)),
        Some(out) if out.status.success() => Ok(()),
        Some(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(NftError::Failed { status: out.status, stderr })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_calls_are_bounded_and_failures_carry_what_nft_said() {
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            p
        };
        let ruleset = delete_ruleset("smartvm_x");
        let hang = script("hang", "exec sleep 30");
        let started = std::time::Instant::now();
        let err = apply_with(&hang, &ruleset, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, NftError::TimedOut(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "killed at the deadline");
        let fail = script("fail", "cat >/dev/null; echo 'Error: no such table' >&2; exit 1");
        let err = apply_with(&fail, &ruleset, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("no such table"), "{err}");
        let ok = script("ok", "grep -q smartvm_x");
        apply_with(&ok, &ruleset, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn ruleset_shape() {
        let plan = SubnetPlan::parse("172.30.0.0/24").unwrap();
        let json = serde_json::to_value(masquerade_ruleset(&table_name("svbr0"), &plan, "eth0")).unwrap();
        let text = json.to_string();
        assert!(text.contains(r#""table":{"family":"ip","name":"smartvm_svbr0""#), "{text}");
        assert!(text.contains(r#"{"flush":{"table":{"family":"ip","name":"smartvm_svbr0"}}}"#), "{text}");
        assert!(text.contains(r#""hook":"postrouting""#) && text.contains(r#""type":"nat""#));
        assert!(text.contains(r#""prefix":{"addr":"172.30.0.0","len":24}"#), "{text}");
        assert!(text.contains(r#""meta":{"key":"oifname"}"#) && text.contains(r#""right":"eth0""#));
        assert!(text.contains(r#""masquerade":null"#), "{text}");
        let del = serde_json::to_value(delete_ruleset("smartvm_svbr0")).unwrap().to_string();
        assert!(del.contains(r#""delete":{"table":{"family":"ip","name":"smartvm_svbr0"}}"#), "{del}");
        assert_eq!(table_name("br-x.1"), "smartvm_br_x_1");
    }
}
