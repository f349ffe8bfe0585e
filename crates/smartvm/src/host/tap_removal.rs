//! Removing a TAP synchronously (from `Drop`, the ledger's unwind and `reclaim`) through two
//! plain rtnetlink requests on a blocking socket, in the calling thread's network namespace:
//! `RTM_GETLINK` by name (it must be a `tun`-kind link), then `RTM_DELLINK` by index. Unlike
//! detaching through `/dev/net/tun`, deleting a link works however the device is held.

use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Why a TAP was not removed.
#[derive(Debug, thiserror::Error)]
pub enum TapRemovalError {
    /// The link exists but is not a TUN/TAP device.
    #[error("link {0} is not a TAP")]
    NotATap(String),
    /// A netlink request failed.
    #[error("netlink request about {0} failed")]
    Netlink(String, #[source] std::io::Error),
}

/// Deletes TAP `name`; `Ok(false)` when no such link exists.
pub fn remove_tap(name: &str) -> Result<bool, TapRemovalError> {
    let nl = |e: std::io::Error| TapRemovalError::Netlink(name.to_string(), e);
    let socket = open().map_err(nl)?;
    let mut get = LinkMessage::default();
    get.attributes.push(LinkAttribute::IfName(name.to_string()));
    let reply = request(&socket, RouteNetlinkMessage::GetLink(get), NLM_F_REQUEST).map_err(nl)?;
    let link = match reply {
        Reply::Link(link) => link,
        Reply::Error(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(false),
        Reply::Error(e) => return Err(nl(e)),
        Reply::Ack => return Err(nl(std::io::Error::other("no link in the answer"))),
    };
    let is_tun = link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Tun))),
        _ => false,
    });
    if !is_tun {
        return Err(TapRemovalError::NotATap(name.to_string()));
    }
    let mut del = LinkMessage::default();
    del.header.index = link.header.index;
    match request(&socket, RouteNetlinkMessage::DelLink(del), NLM_F_REQUEST | NLM_F_ACK).map_err(nl)? {
        Reply::Ack | Reply::Link(_) => Ok(true),
        Reply::Error(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Reply::Error(e) => Err(nl(e)),
    }
}

enum Reply {
    Link(LinkMessage),
    Ack,
    Error(std::io::Error),
}

fn open() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn request(socket: &Socket, message: RouteNetlinkMessage, flags: u16) -> std::io::Result<Reply> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let (bytes, _) = socket.recv_from_full()?;
    let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).map_err(std::io::Error::other)?;
    Ok(match answer.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => Reply::Link(link),
        NetlinkPayload::Error(e) if e.code.is_none() => Reply::Ack,
        NetlinkPayload::Error(e) => Reply::Error(e.to_io()),
        _ => Reply::Ack,
    })
}
