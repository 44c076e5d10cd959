//! Networking RPCs. ListInterfaces and ListRoutes read the kernel through
//! rtnetlink; changing the network (Update*, ARP, iptables) is a later slice.

use std::net::IpAddr;

use ttrpc::Code;

use super::{blocking, status};
use crate::methods::proto::agent::{Interfaces, ListInterfacesRequest, ListRoutesRequest, Routes};
use crate::methods::proto::types::{IPAddress, IPFamily, Interface, Route};
use crate::netlink;
use crate::state::AgentState;

super::not_implemented_yet! {
    UpdateInterface update_interface;
    UpdateRoutes update_routes;
    AddARPNeighbors add_arp_neighbors;
    GetIPTables get_ip_tables;
    SetIPTables set_ip_tables;
}

fn netlink_error(e: netlink::NetlinkError) -> ttrpc::Error {
    status(Code::INTERNAL, e.to_string())
}

/// ListInterfaces: every link with its addresses.
pub(crate) async fn list_interfaces(
    _state: &AgentState,
    _req: ListInterfacesRequest,
) -> ttrpc::Result<Interfaces> {
    let (links, addrs) = blocking("ListInterfaces", || {
        Ok::<_, netlink::NetlinkError>((netlink::links()?, netlink::addresses()?))
    })
    .await?
    .map_err(netlink_error)?;
    let mut resp = Interfaces::new();
    resp.Interfaces = links
        .into_iter()
        .map(|link| interface(link, &addrs))
        .collect();
    Ok(resp)
}

fn family(addr: &IpAddr) -> IPFamily {
    match addr {
        IpAddr::V4(_) => IPFamily::v4,
        IpAddr::V6(_) => IPFamily::v6,
    }
}

/// Formats a link-layer address as `aa:bb:cc:dd:ee:ff`.
fn hw_addr(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn interface(link: netlink::Link, addrs: &[netlink::Address]) -> Interface {
    let mut iface = Interface::new();
    iface.IPAddresses = addrs
        .iter()
        .filter(|a| a.index == link.index)
        .map(|a| {
            let mut ip = IPAddress::new();
            ip.family = family(&a.addr).into();
            ip.address = a.addr.to_string();
            ip.mask = a.prefix_len.to_string();
            ip
        })
        .collect();
    iface.mtu = u64::from(link.mtu);
    iface.hwAddr = hw_addr(&link.hw_addr);
    iface.type_ = link.kind.unwrap_or_default();
    iface.raw_flags = link.flags;
    iface.name = link.name;
    iface
}

/// ListRoutes: the unicast routes of the main table (what `ip route` shows).
pub(crate) async fn list_routes(
    _state: &AgentState,
    _req: ListRoutesRequest,
) -> ttrpc::Result<Routes> {
    let (links, routes) = blocking("ListRoutes", || {
        Ok::<_, netlink::NetlinkError>((netlink::links()?, netlink::routes()?))
    })
    .await?
    .map_err(netlink_error)?;
    let name_of = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone())
            .unwrap_or_default()
    };
    let mut resp = Routes::new();
    resp.Routes = routes
        .into_iter()
        .filter(|r| r.table == netlink::RT_TABLE_MAIN && r.kind == netlink::RTN_UNICAST)
        .map(|r| {
            let mut route = Route::new();
            route.dest = match r.dst {
                Some((addr, len)) => format!("{addr}/{len}"),
                None => "default".to_string(),
            };
            route.gateway = r.gateway.map(|g| g.to_string()).unwrap_or_default();
            route.device = r.oif.map(name_of).unwrap_or_default();
            route.source = r.prefsrc.map(|s| s.to_string()).unwrap_or_default();
            route.scope = u32::from(r.scope);
            route.family = if r.ipv6 { IPFamily::v6 } else { IPFamily::v4 }.into();
            route.flags = r.flags;
            route.mtu = r.mtu.unwrap_or_default();
            route
        })
        .collect();
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_hw_addresses() {
        assert_eq!(hw_addr(&[0, 0x1b, 0xa, 0xff, 1, 2]), "00:1b:0a:ff:01:02");
        assert_eq!(hw_addr(&[]), "");
    }
}
