//! NAT masquerade in an nftables table owned by smartvm (one per bridge), so removing the
//! table removes exactly what smartvm added. Rules go through the `nftables` crate's typed
//! JSON schema (applied by the `nft` tool).

use std::borrow::Cow;

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

/// Applies a ruleset with `nft -j -f -`.
pub fn apply(ruleset: &Nftables) -> Result<(), nftables::helper::NftablesError> {
    nftables::helper::apply_ruleset(ruleset)
}

#[cfg(test)]
mod tests {
    use super::*;

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
