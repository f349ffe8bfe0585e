//! The few rtnetlink requests smartvm needs (handle → request → `execute()`), on a connection
//! opened in the calling thread's network namespace.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, RouteMessageBuilder};

/// A link as smartvm sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Administratively up.
    pub up: bool,
    /// Index of its bridge, if enslaved.
    pub master: Option<u32>,
    /// MAC.
    pub mac: Option<macaddr::MacAddr6>,
}

/// An rtnetlink connection.
pub struct Netlink {
    handle: Handle,
}

type NlResult<T> = Result<T, rtnetlink::Error>;

impl Netlink {
    /// Opens a connection (its socket lives in the current thread's network namespace).
    pub fn connect() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The link called `name`, if any.
    pub async fn link(&self, name: &str) -> NlResult<Option<LinkInfo>> {
        let mut stream = self.handle.link().get().match_name(name.to_string()).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(to_info(&msg))),
            Ok(None) => Ok(None),
            // ENODEV: no such link.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates bridge `name` (up).
    pub async fn add_bridge(&self, name: &str) -> NlResult<()> {
        self.handle.link().add(LinkBridge::new(name).build()).execute().await
    }

    /// Sets link `index` up.
    pub async fn set_up(&self, index: u32) -> NlResult<()> {
        self.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await
    }

    /// Enslaves link `index` to bridge `master`.
    pub async fn set_master(&self, index: u32, master: u32) -> NlResult<()> {
        self.handle.link().set(LinkUnspec::new_with_index(index).controller(master).build()).execute().await
    }

    /// Deletes link `index`.
    pub async fn delete(&self, index: u32) -> NlResult<()> {
        self.handle.link().del(index).execute().await
    }

    /// IPv4 addresses of link `index`.
    pub async fn addresses(&self, index: u32) -> NlResult<Vec<(Ipv4Addr, u8)>> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let msgs: Vec<_> = self.handle.address().get().set_link_index_filter(index).execute().try_collect().await?;
        Ok(msgs
            .iter()
            .flat_map(|m| {
                m.attributes.iter().filter_map(move |a| match a {
                    AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Adds `ip/prefix` to link `index`.
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> NlResult<()> {
        self.handle.address().add(index, ip.into(), prefix).execute().await
    }

    /// Name of the interface of the IPv4 default route, if there is one.
    pub async fn default_route_interface(&self) -> NlResult<Option<String>> {
        let routes: Vec<_> =
            self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute().try_collect().await?;
        let oif = routes.iter().filter(|r| r.header.destination_prefix_length == 0).find_map(|r| {
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
        });
        let Some(index) = oif else { return Ok(None) };
        let mut stream = self.handle.link().get().match_index(index).execute();
        Ok(stream.try_next().await?.map(|m| to_info(&m).name))
    }
}

fn to_info(msg: &rtnetlink::packet_route::link::LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        mac: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Controller(m) => info.master = Some(*m),
            LinkAttribute::Address(b) if b.len() == 6 => {
                info.mac = Some(macaddr::MacAddr6::new(b[0], b[1], b[2], b[3], b[4], b[5]))
            }
            _ => {}
        }
    }
    info
}
