//! Host networking for guests: a bridge with the gateway address, TAP devices enslaved to it,
//! IPv4 forwarding and NAT masquerade out of the default-route interface.
//!
//! [`plan`] decides addresses and names (pure); [`NetworkManager`] applies them through
//! rtnetlink, `TUNSETIFF` and an nftables table of its own, rolling back partial setups.

pub mod journal;
mod nat;
mod netlink;
pub mod plan;
mod tap;
pub use crate::host::tap_removal;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

pub use nat::{delete_ruleset, masquerade_ruleset, table_name};
pub use netlink::{LinkInfo, Netlink};
pub use plan::{mac_for, tap_name_for, validate_interface_name, LeasePool, SubnetPlan};

pub use crate::error::NetworkError;

type Cause = Box<dyn std::error::Error + Send + Sync>;

impl NetworkError {
    fn bridge(step: impl Into<String>, source: impl Into<Cause>) -> Self {
        NetworkError::BridgeSetup { step: step.into(), source: Some(source.into()) }
    }

    fn tap(name: &str, step: impl Into<String>, source: Option<Cause>) -> Self {
        NetworkError::TapCreate { name: name.into(), step: step.into(), source }
    }
}

/// A TAP created for one interface of one VM. Its JSON form has the seed's names
/// (`tapName`, `guestIp`, `gatewayIp`, `subnetMask`, `mac`); `name`, `gateway` and `netmask`
/// are read too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapDevice {
    /// Device name.
    #[serde(rename = "tapName", alias = "name")]
    pub name: String,
    /// Guest MAC assigned (in JSON as text, `02:a3:b1:c4:d2:e5`).
    #[serde(with = "mac_text")]
    pub mac: macaddr::MacAddr6,
    /// Guest IPv4 address.
    pub guest_ip: Ipv4Addr,
    /// Gateway (bridge) address.
    #[serde(rename = "gatewayIp", alias = "gateway")]
    pub gateway: Ipv4Addr,
    /// Netmask.
    #[serde(rename = "subnetMask", alias = "netmask")]
    pub netmask: Ipv4Addr,
    /// Owning VM.
    pub vm_id: String,
    /// Interface id in the VM config.
    pub iface_id: String,
}

/// A MAC address as the text the seed and Firecracker write (`macaddr` alone writes bytes).
mod mac_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &macaddr::MacAddr6, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::config::mac_text(*mac))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<macaddr::MacAddr6, D::Error> {
        let text = String::deserialize(d)?;
        crate::config::parse_mac(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a MAC address xx:xx:xx:xx:xx:xx")))
    }
}

impl TapDevice {
    /// The guest's `ip=` kernel argument for this interface.
    pub fn guest_boot_args(&self) -> String {
        format!("ip={}::{}:{}::eth0:off", self.guest_ip, self.gateway, self.netmask)
    }
}

/// How the manager sets up the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    /// Bridge name (default `svbr0`).
    pub bridge_name: String,
    /// Guest subnet (default `172.30.0.0/24`).
    pub subnet: String,
    /// Masquerade guest traffic out of the default-route interface (default true).
    pub nat: bool,
    /// Where the bridge and NAT table are journaled before they are created (the orchestrator
    /// uses `<runtime_dir>/.network`); `None` journals nothing.
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self { bridge_name: "svbr0".into(), subnet: "172.30.0.0/24".into(), nat: true, state_dir: None }
    }
}

#[derive(Debug, Default)]
struct State {
    ready: bool,
    bridge_created: bool,
    nat_table: Option<String>,
    leases: LeasePool,
    /// TAP name → (lease index, MAC), released when the TAP goes.
    held: HashMap<String, (u32, macaddr::MacAddr6)>,
    macs: HashSet<macaddr::MacAddr6>,
    taps: HashMap<String, TapDevice>,
}

impl State {
    /// Forgets TAP `name` and returns its address (after quarantine) and MAC to the pools.
    fn release(&mut self, name: &str) {
        self.taps.remove(name);
        if let Some((index, mac)) = self.held.remove(name) {
            self.leases.release(index, std::time::Instant::now());
            self.macs.remove(&mac);
        }
    }
}

/// Bridge, TAPs, forwarding and NAT for one subnet. Everything it creates it removes in
/// [`cleanup`](Self::cleanup); a guest address comes back to the pool when its TAP goes and is
/// handed out again after a short quarantine ([`LeasePool`]).
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), smartvm::network::NetworkError> {
/// use smartvm::network::{NetworkManager, NetworkOptions};
///
/// let network = NetworkManager::new(NetworkOptions { subnet: "172.31.0.0/24".into(), ..Default::default() })?;
/// let tap = network.create_tap("web", "eth0").await?; // bridge + NAT on first use
/// println!("{} gets {} via {} (MAC {})", tap.name, tap.guest_ip, tap.gateway, tap.mac);
/// network.cleanup().await?; // TAPs, bridge and the nftables table
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NetworkManager {
    options: NetworkOptions,
    plan: SubnetPlan,
    state: tokio::sync::Mutex<State>,
}

fn netlink() -> Result<Netlink, NetworkError> {
    Netlink::connect().map_err(|e| NetworkError::bridge("cannot open a netlink socket", e))
}

impl NetworkManager {
    /// Validates `options` (`INVALID_SUBNET`, `INVALID_INTERFACE_NAME`); touches nothing.
    pub fn new(options: NetworkOptions) -> Result<Self, NetworkError> {
        validate_interface_name(&options.bridge_name)?;
        let plan = SubnetPlan::parse(&options.subnet)?;
        Ok(Self { options, plan, state: tokio::sync::Mutex::new(State::default()) })
    }

    /// The subnet plan.
    pub fn plan(&self) -> &SubnetPlan {
        &self.plan
    }

    /// The bridge name.
    pub fn bridge_name(&self) -> &str {
        &self.options.bridge_name
    }

    /// TAPs currently owned.
    pub async fn taps(&self) -> Vec<TapDevice> {
        self.state.lock().await.taps.values().cloned().collect()
    }

    /// Creates (if missing) the bridge with the gateway address, enables IPv4 forwarding and
    /// installs the NAT table. Idempotent. On failure everything this call created is removed.
    pub async fn ensure_bridge(&self) -> Result<(), NetworkError> {
        let mut st = self.state.lock().await;
        self.ensure_bridge_locked(&mut st).await
    }

    async fn ensure_bridge_locked(&self, st: &mut State) -> Result<(), NetworkError> {
        if st.ready {
            return Ok(());
        }
        let nl = netlink()?;
        let mut created_bridge = false;
        let result = self.setup_steps(&nl, st, &mut created_bridge).await;
        match result {
            Ok(()) => {
                st.ready = true;
                st.bridge_created |= created_bridge;
                Ok(())
            }
            Err(e) => {
                if let Some(table) = st.nat_table.take() {
                    let _ = nat::apply(&nat::delete_ruleset(&table));
                }
                if created_bridge {
                    if let Ok(Some(link)) = nl.link(&self.options.bridge_name).await {
                        let _ = nl.delete(link.index).await;
                    }
                }
                if !st.bridge_created {
                    self.forget_journal();
                }
                Err(e)
            }
        }
    }

    /// Journals what this manager is about to create (no-op without a state dir). A bridge an
    /// earlier smartvm created stays smartvm's, whoever uses it next: its journal keeps saying
    /// so until a reclaim (or this manager's cleanup) removes it. Returns whether the bridge is
    /// smartvm's.
    fn journal(&self, bridge_created: bool, nat_table: Option<String>) -> Result<bool, NetworkError> {
        let Some(dir) = &self.options.state_dir else { return Ok(bridge_created) };
        let pid = std::process::id() as i32;
        let bridge = &self.options.bridge_name;
        let earlier = journal::NetworkJournal::read(&journal::NetworkJournal::path(dir, bridge));
        let bridge_created = bridge_created || earlier.is_ok_and(|j| j.bridge_created && &j.bridge == bridge);
        let j = journal::NetworkJournal {
            bridge: bridge.clone(),
            bridge_created,
            nat_table,
            owner_pid: Some(pid),
            owner_start_time: crate::host::identity::this_process_start_time(),
        };
        j.write(dir).map_err(|e| NetworkError::bridge("cannot journal the bridge", e))?;
        Ok(bridge_created)
    }

    fn forget_journal(&self) {
        if let Some(dir) = &self.options.state_dir {
            let _ = std::fs::remove_file(journal::NetworkJournal::path(dir, &self.options.bridge_name));
        }
    }

    async fn setup_steps(&self, nl: &Netlink, st: &mut State, created: &mut bool) -> Result<(), NetworkError> {
        let name = &self.options.bridge_name;
        let bridge = match nl.link(name).await.map_err(|e| NetworkError::bridge("cannot look up the bridge", e))? {
            Some(l) => l,
            None => {
                self.journal(true, None)?;
                nl.add_bridge(name)
                    .await
                    .map_err(|e| NetworkError::bridge(format!("cannot create bridge {name}"), e))?;
                *created = true;
                nl.link(name).await.map_err(|e| NetworkError::bridge("cannot look up the bridge", e))?.ok_or_else(
                    || NetworkError::BridgeSetup { step: format!("bridge {name} vanished"), source: None },
                )?
            }
        };
        let gateway = self.plan.gateway();
        let addrs =
            nl.addresses(bridge.index).await.map_err(|e| NetworkError::bridge("cannot list bridge addresses", e))?;
        if !addrs.contains(&(gateway, self.plan.prefix)) {
            nl.add_address(bridge.index, gateway, self.plan.prefix)
                .await
                .map_err(|e| NetworkError::bridge(format!("cannot add {gateway}/{} to {name}", self.plan.prefix), e))?;
        }
        nl.set_up(bridge.index).await.map_err(|e| NetworkError::bridge(format!("cannot set {name} up"), e))?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1")
            .map_err(|e| NetworkError::bridge("cannot enable IPv4 forwarding", e))?;
        if self.options.nat {
            let out_if = nl
                .default_route_interface()
                .await
                .map_err(|e| NetworkError::bridge("cannot read routes", e))?
                .ok_or_else(|| NetworkError::BridgeSetup {
                    step: "no IPv4 default route to masquerade through".into(),
                    source: None,
                })?;
            let table = nat::table_name(name);
            st.bridge_created |= self.journal(*created || st.bridge_created, Some(table.clone()))?;
            nat::apply(&nat::masquerade_ruleset(&table, &self.plan, &out_if))
                .map_err(|e| NetworkError::bridge(format!("cannot install nftables table {table}"), e))?;
            st.nat_table = Some(table);
        }
        Ok(())
    }

    /// Creates a TAP for (`vm_id`, `iface_id`) with the next guest address and a stable MAC,
    /// enslaved to the bridge and up. A name already taken → `TAP_CREATE_FAILED`, nothing left.
    pub async fn create_tap(&self, vm_id: &str, iface_id: &str) -> Result<TapDevice, NetworkError> {
        self.create_tap_recorded(vm_id, iface_id, &mut |_| Ok(())).await
    }

    /// Like [`create_tap`](Self::create_tap), calling `record` with the chosen name before the
    /// device is created (so a journal names it before it exists); an error from `record`
    /// creates nothing.
    pub async fn create_tap_recorded(
        &self,
        vm_id: &str,
        iface_id: &str,
        record: &mut (dyn FnMut(&str) -> std::io::Result<()> + Send),
    ) -> Result<TapDevice, NetworkError> {
        let mut st = self.state.lock().await;
        self.ensure_bridge_locked(&mut st).await?;
        let (index, mac, name) = self.reserve(&mut st, vm_id, iface_id)?;
        if let Err(e) = self.make_link(&name, record).await {
            st.leases.release(index, std::time::Instant::now());
            return Err(e);
        }
        st.macs.insert(mac);
        st.held.insert(name.clone(), (index, mac));
        let dev = TapDevice {
            name: name.clone(),
            mac,
            guest_ip: self.plan.guest(index)?,
            gateway: self.plan.gateway(),
            netmask: self.plan.netmask(),
            vm_id: vm_id.into(),
            iface_id: iface_id.into(),
        };
        st.taps.insert(name, dev.clone());
        Ok(dev)
    }

    /// Deletes a TAP (by name); unknown or already gone is fine.
    pub async fn remove_tap(&self, name: &str) -> Result<(), NetworkError> {
        self.state.lock().await.release(name);
        delete_link(name).await.map(drop)
    }

    /// A free address (lease index), an unused MAC and an unused TAP name for one interface.
    fn reserve(
        &self,
        st: &mut State,
        vm_id: &str,
        iface_id: &str,
    ) -> Result<(u32, macaddr::MacAddr6, String), NetworkError> {
        let index = st
            .leases
            .acquire(self.plan.guest_capacity(), std::time::Instant::now())
            .ok_or_else(|| NetworkError::IpExhausted(self.plan.to_string()))?;
        let mac = (0..)
            .map(|salt| mac_for(vm_id, iface_id, salt))
            .find(|m| !st.macs.contains(m))
            .unwrap_or(macaddr::MacAddr6::nil());
        let name = (0..)
            .map(|salt| tap_name_for(vm_id, iface_id, salt))
            .find(|n| !st.taps.contains_key(n))
            .unwrap_or_default();
        Ok((index, mac, name))
    }

    /// Creates TAP `name` (journaled through `record` first), enslaved to the bridge and up;
    /// on failure nothing of it remains.
    async fn make_link(
        &self,
        name: &str,
        record: &mut (dyn FnMut(&str) -> std::io::Result<()> + Send),
    ) -> Result<(), NetworkError> {
        let nl = netlink()?;
        if nl.link(name).await.map_err(|e| NetworkError::tap(name, "lookup failed", Some(Box::new(e))))?.is_some() {
            return Err(NetworkError::tap(name, "an interface with this name already exists", None));
        }
        record(name).map_err(|e| NetworkError::tap(name, "cannot journal it", Some(Box::new(e))))?;
        let n = name.to_string();
        tokio::task::spawn_blocking(move || tap::create_persistent(&n))
            .await
            .map_err(|e| NetworkError::tap(name, "task failed", Some(Box::new(e))))?
            .map_err(|e| NetworkError::tap(name, "TUNSETIFF failed", Some(Box::new(e))))?;
        let attach = async {
            let link = nl.link(name).await?.ok_or(rtnetlink::Error::RequestFailed)?;
            let bridge = nl.link(&self.options.bridge_name).await?.ok_or(rtnetlink::Error::RequestFailed)?;
            nl.set_master(link.index, bridge.index).await?;
            nl.set_up(link.index).await
        };
        if let Err(e) = attach.await {
            if let Ok(Some(link)) = nl.link(name).await {
                let _ = nl.delete(link.index).await;
            }
            return Err(NetworkError::tap(name, "cannot attach it to the bridge", Some(Box::new(e))));
        }
        Ok(())
    }

    /// Removes every TAP this manager created, then the bridge (if it created it) and its NAT table.
    pub async fn cleanup(&self) -> Result<(), NetworkError> {
        let mut st = self.state.lock().await;
        let mut first_error = None;
        for name in st.taps.drain().map(|(n, _)| n).collect::<Vec<_>>() {
            if let Err(e) = delete_link(&name).await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(table) = st.nat_table.take() {
            if let Err(e) = nat::apply(&nat::delete_ruleset(&table)) {
                first_error.get_or_insert(NetworkError::bridge(format!("cannot delete table {table}"), e));
            }
        }
        if st.bridge_created {
            if let Err(e) = delete_link(&self.options.bridge_name).await {
                first_error.get_or_insert(e);
            }
            st.bridge_created = false;
        }
        st.ready = false;
        if first_error.is_none() {
            self.forget_journal();
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Removes the bridges and NAT tables journaled in `dir` whose creator is gone, unless
/// `in_use` (VMs that may still need them remain). Returns what was removed, and the failures.
pub async fn reclaim_journaled(dir: &std::path::Path, in_use: bool) -> (Vec<String>, Vec<NetworkError>) {
    let (mut removed, mut failures) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(dir) else { return (removed, failures) };
    for path in entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")) {
        let Ok(j) = journal::NetworkJournal::read(&path) else { continue };
        if in_use || j.owner_alive() || validate_interface_name(&j.bridge).is_err() {
            continue;
        }
        if let Some(table) = j.nat_table.as_ref().filter(|t| **t == nat::table_name(&j.bridge)) {
            match nat::apply(&nat::delete_ruleset(table)) {
                Ok(()) => removed.push(format!("nftables table {table}")),
                Err(e) => failures.push(NetworkError::bridge(format!("cannot delete table {table}"), e)),
            }
        }
        if j.bridge_created {
            match delete_link(&j.bridge).await {
                Ok(true) => removed.push(format!("bridge {}", j.bridge)),
                Ok(false) => {}
                Err(e) => failures.push(e),
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    (removed, failures)
}

pub use crate::host::ledger::is_smartvm_tap_name;

/// Forgets a TAP another path (the ledger's unwind) already removed.
impl NetworkManager {
    /// Drops `name` from this manager's bookkeeping.
    pub async fn forget_tap(&self, name: &str) {
        self.state.lock().await.release(name);
    }
}

/// Deletes TAP `name` synchronously (usable from `Drop` and the ledger's unwind); a link of that
/// name that is not a TAP is refused, a missing one is fine.
pub fn remove_tap_blocking(name: &str) -> Result<bool, tap_removal::TapRemovalError> {
    tap_removal::remove_tap(name)
}

/// Deletes link `name` if it exists (true when it did).
pub async fn delete_link(name: &str) -> Result<bool, NetworkError> {
    let nl = netlink()?;
    let fail = |e| NetworkError::BridgeSetup { step: format!("cannot delete {name}"), source: Some(Box::new(e)) };
    match nl.link(name).await.map_err(fail)? {
        Some(link) => nl.delete(link.index).await.map_err(fail).map(|()| true),
        None => Ok(false),
    }
}
