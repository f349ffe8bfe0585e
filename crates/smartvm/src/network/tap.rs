//! TAP devices through `TUNSETIFF` on `/dev/net/tun` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`),
//! made persistent so they outlive the creating file descriptor.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

mod ioctl {
    nix::ioctl_write_ptr_bad!(
        tunsetiff,
        nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
        super::IfReq
    );
    nix::ioctl_write_int!(tunsetpersist, b'T', 203);
}

/// Creates persistent TAP `name` (the caller checked that no link of that name exists).
pub fn create_persistent(name: &str) -> std::io::Result<()> {
    let tun = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, _pad: [0; 22] };
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "interface name too long"));
    }
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: valid fd and a properly sized, initialised ifreq.
    unsafe { ioctl::tunsetiff(tun.as_raw_fd(), &req) }.map_err(std::io::Error::from)?;
    // SAFETY: valid fd of an attached TAP.
    unsafe { ioctl::tunsetpersist(tun.as_raw_fd(), 1) }.map_err(std::io::Error::from)?;
    Ok(())
}
