//! Pure network planning: subnet normalisation, gateway and guest addresses, MACs, TAP names
//! and the guest's `ip=` boot argument. No system calls here.

use std::net::Ipv4Addr;

use super::NetworkError;

/// A normalised IPv4 subnet with smartvm's address plan: gateway = first usable address,
/// guests from the second usable address up to the last before broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetPlan {
    /// Network address (host bits cleared).
    pub network: Ipv4Addr,
    /// Prefix length, 1-30.
    pub prefix: u8,
}

impl SubnetPlan {
    /// Parses `a.b.c.d/p` (ipnet), clearing host bits; prefix must be 1-30 (`INVALID_SUBNET`).
    pub fn parse(s: &str) -> Result<Self, NetworkError> {
        let bad = |why: &str| NetworkError::InvalidSubnet(format!("{s:?}: {why}"));
        let net: ipnet::Ipv4Net = s.trim().parse().map_err(|_| bad("expected an IPv4 a.b.c.d/prefix"))?;
        if !(1..=30).contains(&net.prefix_len()) {
            return Err(bad("prefix must be 1-30"));
        }
        let net = net.trunc();
        Ok(Self { network: net.network(), prefix: net.prefix_len() })
    }

    fn net(&self) -> ipnet::Ipv4Net {
        ipnet::Ipv4Net::new(self.network, self.prefix).unwrap_or_default()
    }

    /// The netmask.
    pub fn netmask(&self) -> Ipv4Addr {
        self.net().netmask()
    }

    /// The gateway (bridge) address: the first usable address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Number of guest addresses (usable hosts minus the gateway).
    pub fn guest_capacity(&self) -> u32 {
        let net = self.net();
        u32::from(net.broadcast()) - u32::from(net.network()) - 2
    }

    /// The `n`-th guest address (0-based), or `IP_EXHAUSTED`.
    pub fn guest(&self, n: u32) -> Result<Ipv4Addr, NetworkError> {
        if n >= self.guest_capacity() {
            return Err(NetworkError::IpExhausted(self.to_string()));
        }
        Ok(Ipv4Addr::from(u32::from(self.network) + 2 + n))
    }

    /// `ip=<guest>::<gateway>:<mask>::eth0:off` for the kernel command line.
    pub fn guest_boot_args(&self, guest: Ipv4Addr) -> String {
        format!("ip={guest}::{}:{}::eth0:off", self.gateway(), self.netmask())
    }
}

impl std::fmt::Display for SubnetPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Linux interface names: 1-15 bytes (IFNAMSIZ - 1), no `/`, whitespace, `:` or NUL, not `.`/`..`.
pub fn validate_interface_name(name: &str) -> Result<(), NetworkError> {
    let bad = |reason: &str| NetworkError::InvalidInterfaceName { name: name.to_string(), reason: reason.to_string() };
    if name.is_empty() || name.len() > 15 {
        return Err(bad("must be 1-15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("must not be . or .."));
    }
    if name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace() || !b.is_ascii_graphic()) {
        return Err(bad("must not contain '/', ':', whitespace or control characters"));
    }
    Ok(())
}

fn fnv1a(parts: &[&str]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// Guest address leases by index (see [`SubnetPlan::guest`]): never-used addresses first, then
/// released ones, each only after a quarantine so a new guest does not inherit an address that
/// peers may still have in their ARP caches. Pure: time is passed in.
#[derive(Debug, Default, Clone)]
pub struct LeasePool {
    next: u32,
    released: std::collections::VecDeque<(u32, std::time::Instant)>,
}

impl LeasePool {
    /// How long a released address rests before it is handed out again.
    pub const QUARANTINE: std::time::Duration = std::time::Duration::from_secs(2);

    /// A free index below `capacity`, or `None` when every address is leased or resting.
    pub fn acquire(&mut self, capacity: u32, now: std::time::Instant) -> Option<u32> {
        if self.next < capacity {
            self.next += 1;
            return Some(self.next - 1);
        }
        match self.released.front() {
            Some(&(index, at)) if now.duration_since(at) >= Self::QUARANTINE => {
                self.released.pop_front();
                Some(index)
            }
            _ => None,
        }
    }

    /// Returns `index` to the pool as of `now`.
    pub fn release(&mut self, index: u32, now: std::time::Instant) {
        self.released.push_back((index, now));
    }
}

/// A locally administered unicast MAC `02:xx:xx:xx:xx:xx`, stable for (vm id, iface id, salt).
pub fn mac_for(vm_id: &str, iface_id: &str, salt: u32) -> macaddr::MacAddr6 {
    let h = fnv1a(&[vm_id, iface_id, &salt.to_string()]).to_be_bytes();
    macaddr::MacAddr6::new(0x02, h[0], h[1], h[2], h[3], h[4])
}

/// A TAP name `sv<10 hex>` (12 bytes), stable for (vm id, iface id, salt).
pub fn tap_name_for(vm_id: &str, iface_id: &str, salt: u32) -> String {
    let h = fnv1a(&["tap", vm_id, iface_id, &salt.to_string()]);
    format!("sv{:010x}", h & 0xff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_reused_after_their_quarantine() {
        let t0 = std::time::Instant::now();
        let mut pool = LeasePool::default();
        assert_eq!((pool.acquire(2, t0), pool.acquire(2, t0), pool.acquire(2, t0)), (Some(0), Some(1), None));
        pool.release(1, t0);
        assert_eq!(pool.acquire(2, t0), None, "still resting");
        let later = t0 + LeasePool::QUARANTINE;
        assert_eq!(pool.acquire(2, later), Some(1));
        assert_eq!(pool.acquire(2, later), None);
    }

    #[test]
    fn subnets_normalise_and_validate() {
        let p = SubnetPlan::parse("172.30.0.77/24").unwrap();
        assert_eq!(p.to_string(), "172.30.0.0/24");
        assert_eq!((p.gateway(), p.netmask()), (Ipv4Addr::new(172, 30, 0, 1), Ipv4Addr::new(255, 255, 255, 0)));
        for bad in ["172.30.0.0", "172.30.0.0/31", "172.30.0.0/0", "172.30.0.0/x", "300.1.1.1/24", "/24"] {
            assert_eq!(SubnetPlan::parse(bad).unwrap_err().code(), "INVALID_SUBNET", "{bad}");
        }
    }

    #[test]
    fn guest_addresses_at_the_edges() {
        let p30 = SubnetPlan::parse("10.0.0.0/30").unwrap();
        assert_eq!(p30.guest(0).unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p30.guest(1).unwrap_err().code(), "IP_EXHAUSTED", "/30: .1 gateway, .2 guest, .3 broadcast");
        let p29 = SubnetPlan::parse("10.0.0.8/29").unwrap();
        let all: Vec<Ipv4Addr> = (0..p29.guest_capacity()).map(|n| p29.guest(n).unwrap()).collect();
        assert_eq!(all.first(), Some(&Ipv4Addr::new(10, 0, 0, 10)));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(10, 0, 0, 14)));
        assert!(p29.guest(5).is_err());
        let p24 = SubnetPlan::parse("192.168.7.0/24").unwrap();
        assert_eq!(p24.guest(252).unwrap(), Ipv4Addr::new(192, 168, 7, 254));
        assert!(p24.guest(253).is_err());
        assert_eq!(p24.guest_boot_args(p24.guest(0).unwrap()), "ip=192.168.7.2::192.168.7.1:255.255.255.0::eth0:off");
    }

    #[test]
    fn names_and_macs() {
        assert!(validate_interface_name("svbr0").is_ok());
        for bad in ["", "sixteen-chars-xx", "a/b", "a b", "a:b", "..", "é"] {
            assert_eq!(validate_interface_name(bad).unwrap_err().code(), "INVALID_INTERFACE_NAME", "{bad:?}");
        }
        let mac = mac_for("vm", "eth0", 0);
        assert_eq!(mac, mac_for("vm", "eth0", 0), "stable");
        assert_ne!(mac, mac_for("vm", "eth1", 0));
        assert_ne!(mac, mac_for("vm", "eth0", 1));
        let text = crate::config::mac_text(mac);
        assert!(text.starts_with("02:") && crate::config::parse_mac(&text) == Some(mac), "{text}");
        assert!(mac.is_local() && mac.is_unicast());
        let tap = tap_name_for("a-very-long-vm-id-0000-1111-2222", "eth0", 0);
        assert_eq!(tap.len(), 12);
        validate_interface_name(&tap).unwrap();
        assert_eq!(tap, tap_name_for("a-very-long-vm-id-0000-1111-2222", "eth0", 0));
    }
}
