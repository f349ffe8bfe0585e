//! The guest's network from the kernel's `ip=` argument (the form smartvm passes:
//! `ip=<address>::<gateway>:<netmask>:<hostname>:<device>:off`). A kernel built with
//! `CONFIG_IP_PNP` has applied it already and this changes nothing; otherwise the agent as PID 1
//! sets the address, netmask and default route itself (IPv4 ioctls: no netlink needed).

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

/// One interface's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The guest's address.
    pub address: Ipv4Addr,
    /// The default route's gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The netmask.
    pub netmask: Ipv4Addr,
    /// The hostname, if given.
    pub hostname: Option<String>,
    /// The interface (default `eth0`).
    pub device: String,
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The interface had an address already (the kernel applied `ip=`): left alone.
    AlreadyConfigured,
    /// The agent set it.
    Configured,
}

/// Parses the value of `ip=` (pure). `dhcp` and other autoconfiguration forms give `None`.
pub fn parse(spec: &str) -> Option<IpConfig> {
    let fields: Vec<&str> = spec.split(':').collect();
    let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    let address = field(0)?.parse().ok()?;
    let gateway = field(2).and_then(|g| g.parse().ok());
    let netmask = field(3).and_then(|m| m.parse().ok()).unwrap_or(Ipv4Addr::new(255, 255, 255, 0));
    Some(IpConfig {
        address,
        gateway,
        netmask,
        hostname: field(4).map(str::to_owned),
        device: field(5).unwrap_or("eth0").to_owned(),
    })
}

/// The `ip=` of a kernel command line.
pub fn from_cmdline(cmdline: &str) -> Option<IpConfig> {
    cmdline.split_whitespace().find_map(|arg| arg.strip_prefix("ip=")).and_then(parse)
}

fn ifreq(device: &str) -> io::Result<libc::ifreq> {
    // SAFETY: `ifreq` is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if device.len() >= request.ifr_name.len() || device.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {device:?}")));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(device.bytes()) {
        *slot = byte as libc::c_char;
    }
    Ok(request)
}

fn sockaddr(address: Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(address.octets()) },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it by family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

fn ioctl<T>(socket: &UdpSocket, request: libc::Ioctl, arg: &mut T) -> io::Result<()> {
    // SAFETY: each request used here reads or writes exactly one `T` through the pointer.
    if unsafe { libc::ioctl(socket.as_raw_fd(), request, arg as *mut T) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings the interface up with the configuration, unless it has an address already.
pub fn apply(config: &IpConfig) -> io::Result<Applied> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    let mut request = ifreq(&config.device)?;
    if ioctl(&socket, libc::SIOCGIFADDR, &mut request).is_ok() {
        return Ok(Applied::AlreadyConfigured);
    }
    let mut request = ifreq(&config.device)?;
    request.ifr_ifru.ifru_addr = sockaddr(config.address);
    ioctl(&socket, libc::SIOCSIFADDR, &mut request)?;
    let mut request = ifreq(&config.device)?;
    request.ifr_ifru.ifru_netmask = sockaddr(config.netmask);
    ioctl(&socket, libc::SIOCSIFNETMASK, &mut request)?;
    set_up(&socket, &config.device)?;
    if let Some(gateway) = config.gateway {
        // SAFETY: `rtentry` is plain data; all-zero is a valid value.
        let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
        route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        route.rt_gateway = sockaddr(gateway);
        route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        ioctl(&socket, libc::SIOCADDRT, &mut route)?;
    }
    Ok(Applied::Configured)
}

/// Sets `IFF_UP` on `device`.
pub fn set_up(socket: &UdpSocket, device: &str) -> io::Result<()> {
    let mut request = ifreq(device)?;
    ioctl(socket, libc::SIOCGIFFLAGS, &mut request)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(socket, libc::SIOCSIFFLAGS, &mut request)
}

/// Brings up `lo`.
pub fn loopback_up() -> io::Result<()> {
    set_up(&UdpSocket::bind("0.0.0.0:0")?, "lo")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smartvm_s_ip_argument_parses() {
        let cmdline = "console=ttyS0 ip=192.168.7.2::192.168.7.1:255.255.255.0::eth0:off init=/sbin/smartvm-guest";
        let config = from_cmdline(cmdline).unwrap();
        assert_eq!(config.address, Ipv4Addr::new(192, 168, 7, 2));
        assert_eq!(config.gateway, Some(Ipv4Addr::new(192, 168, 7, 1)));
        assert_eq!(config.netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!((config.hostname, config.device.as_str()), (None, "eth0"));
        let named = parse("10.0.0.5::10.0.0.1:255.0.0.0:box:ens3:off").unwrap();
        assert_eq!((named.hostname.as_deref(), named.device.as_str()), (Some("box"), "ens3"));
        assert_eq!(parse("dhcp"), None);
        assert_eq!(from_cmdline("console=ttyS0"), None);
        assert!(ifreq("a-name-far-too-long-for-linux").is_err());
    }
}
