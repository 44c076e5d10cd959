//! Networking RPCs over rtnetlink: ListInterfaces and ListRoutes read the
//! kernel; UpdateInterface and UpdateRoutes configure the guest's network
//! the way the Kata runtime does it (the host tells the guest which address,
//! MTU and routes its virtio-net interface gets). The two changing methods
//! only act when the agent is the VM's init: outside a VM they would
//! reconfigure the machine the agent runs on. ARP and iptables are a later
//! slice.

use std::net::IpAddr;

use ttrpc::Code;

use super::{blocking, status};
use crate::methods::proto::agent::{
    Interfaces, ListInterfacesRequest, ListRoutesRequest, Routes, UpdateInterfaceRequest,
    UpdateRoutesRequest,
};
use crate::methods::proto::types::{IPAddress, IPFamily, Interface, Route};
use crate::netlink;
use crate::state::AgentState;
use crate::{guest, netlink::NetlinkError};

super::not_implemented_yet! {
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

fn only_in_a_vm(method: &str) -> ttrpc::Result<()> {
    if guest::is_init_process() {
        Ok(())
    } else {
        Err(status(
            Code::FAILED_PRECONDITION,
            format!(
                "{method} changes the network only when the agent is the VM's init \
                 (here it would reconfigure the machine it runs on)"
            ),
        ))
    }
}

fn invalid(msg: String) -> ttrpc::Error {
    status(Code::INVALID_ARGUMENT, msg)
}

/// The requested addresses of an interface as (address, prefix length).
fn requested_addresses(iface: &Interface) -> ttrpc::Result<Vec<(IpAddr, u8)>> {
    iface
        .IPAddresses
        .iter()
        .map(|a| {
            let addr: IpAddr = a
                .address
                .parse()
                .map_err(|e| invalid(format!("UpdateInterface: address {:?}: {e}", a.address)))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = if a.mask.is_empty() {
                max
            } else {
                a.mask
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| {
                        invalid(format!(
                            "UpdateInterface: mask {:?} of {addr} is not a prefix length",
                            a.mask
                        ))
                    })?
            };
            Ok((addr, len))
        })
        .collect()
}

/// UpdateInterface: finds the link by MAC (`hwAddr`) or else by name, sets
/// its MTU, replaces its addresses with the requested ones and sets it up.
/// Answers the interface as it now is.
pub(crate) async fn update_interface(
    _state: &AgentState,
    req: UpdateInterfaceRequest,
) -> ttrpc::Result<Interface> {
    only_in_a_vm("UpdateInterface")?;
    let want = req
        .interface
        .into_option()
        .ok_or_else(|| invalid("UpdateInterface: no interface given".into()))?;
    let addrs = requested_addresses(&want)?;
    let mtu = u32::try_from(want.mtu)
        .map_err(|_| invalid(format!("UpdateInterface: MTU {} too large", want.mtu)))?;
    let result = blocking("UpdateInterface", move || {
        let links = netlink::links()?;
        let link = links
            .into_iter()
            .find(|l| {
                if want.hwAddr.is_empty() {
                    l.name == want.name
                } else {
                    hw_addr(&l.hw_addr).eq_ignore_ascii_case(&want.hwAddr)
                }
            })
            .ok_or_else(|| {
                NetlinkError::Kernel(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no interface with hwAddr {:?} / name {:?}",
                        want.hwAddr, want.name
                    ),
                ))
            })?;
        netlink::set_link(link.index, true, (mtu > 0).then_some(mtu))?;
        for old in netlink::addresses()?
            .iter()
            .filter(|a| a.index == link.index)
        {
            if !addrs.contains(&(old.addr, old.prefix_len)) {
                netlink::del_address(link.index, &old.addr, old.prefix_len)?;
            }
        }
        for (addr, len) in &addrs {
            netlink::add_address(link.index, addr, *len)?;
        }
        let index = link.index;
        let now = netlink::links()?
            .into_iter()
            .find(|l| l.index == index)
            .ok_or(NetlinkError::Malformed("the link disappeared"))?;
        Ok::<_, NetlinkError>(interface(now, &netlink::addresses()?))
    })
    .await?
    .map_err(netlink_error)?;
    tracing::info!(name = %result.name, addresses = result.IPAddresses.len(), mtu = result.mtu, "interface updated");
    Ok(result)
}

fn parse_route(r: &Route, links: &[netlink::Link]) -> ttrpc::Result<netlink::Route> {
    let bad = |what: &str, v: &str| invalid(format!("UpdateRoutes: {what} {v:?}"));
    let dst = match r.dest.as_str() {
        "" | "default" => None,
        d => {
            let (a, len) = d.split_once('/').unwrap_or((d, ""));
            let addr: IpAddr = a.parse().map_err(|_| bad("destination", d))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = if len.is_empty() {
                max
            } else {
                len.parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| bad("destination", d))?
            };
            Some((addr, len))
        }
    };
    let opt_ip = |v: &str, what: &str| -> ttrpc::Result<Option<IpAddr>> {
        if v.is_empty() {
            Ok(None)
        } else {
            v.parse().map(Some).map_err(|_| bad(what, v))
        }
    };
    let gateway = opt_ip(&r.gateway, "gateway")?;
    let prefsrc = opt_ip(&r.source, "source")?;
    let oif = if r.device.is_empty() {
        None
    } else {
        Some(
            links
                .iter()
                .find(|l| l.name == r.device)
                .map(|l| l.index)
                .ok_or_else(|| bad("device", &r.device))?,
        )
    };
    let ipv6 = dst
        .map(|(a, _)| a.is_ipv6())
        .or(gateway.map(|g| g.is_ipv6()))
        .unwrap_or(r.family.value() == IPFamily::v6 as i32);
    let scope = if r.scope != 0 {
        u8::try_from(r.scope).map_err(|_| bad("scope", &r.scope.to_string()))?
    } else if gateway.is_none() {
        netlink::RT_SCOPE_LINK
    } else {
        netlink::RT_SCOPE_UNIVERSE
    };
    Ok(netlink::Route {
        dst,
        ipv6,
        gateway,
        oif,
        prefsrc,
        scope,
        flags: 0,
        mtu: (r.mtu > 0).then_some(r.mtu),
        table: netlink::RT_TABLE_MAIN,
        kind: netlink::RTN_UNICAST,
    })
}

/// UpdateRoutes: the main table's IPv4 routes become the requested routes
/// (routes not requested are removed, except the subnet routes the kernel
/// made for the interfaces' addresses; directly reachable ones are added
/// before those through a gateway; IPv6 routes are only added). Answers the
/// routes as they now are.
pub(crate) async fn update_routes(
    state: &AgentState,
    req: UpdateRoutesRequest,
) -> ttrpc::Result<Routes> {
    only_in_a_vm("UpdateRoutes")?;
    let wanted = req.routes.into_option().unwrap_or_default().Routes;
    let links = blocking("UpdateRoutes", netlink::links)
        .await?
        .map_err(netlink_error)?;
    let mut routes = wanted
        .iter()
        .map(|r| parse_route(r, &links))
        .collect::<ttrpc::Result<Vec<_>>>()?;
    routes.sort_by_key(|r| r.gateway.is_some());
    blocking("UpdateRoutes", move || {
        let same = |a: &netlink::Route, b: &netlink::Route| {
            a.dst == b.dst && a.gateway == b.gateway && a.oif == b.oif && a.ipv6 == b.ipv6
        };
        // Routes the kernel made for the interfaces' own subnets (link
        // scope, no gateway) stay: gateways are reached through them.
        for old in netlink::routes()?.iter().filter(|r| {
            r.table == netlink::RT_TABLE_MAIN
                && r.kind == netlink::RTN_UNICAST
                && (r.gateway.is_some() || r.scope != netlink::RT_SCOPE_LINK)
                && !r.ipv6
        }) {
            if !routes.iter().any(|r| same(r, old)) {
                netlink::del_route(old)?;
            }
        }
        for r in &routes {
            netlink::add_route(r)?;
        }
        Ok::<_, NetlinkError>(())
    })
    .await?
    .map_err(netlink_error)?;
    tracing::info!(routes = wanted.len(), "routes updated");
    list_routes(state, ListRoutesRequest::new()).await
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
    fn parses_kata_routes() {
        let links = vec![netlink::Link {
            index: 2,
            name: "eth0".into(),
            mtu: 1500,
            hw_addr: vec![],
            flags: 0,
            kind: None,
        }];
        let mut r = Route::new();
        r.dest = "default".into();
        r.gateway = "10.0.2.2".into();
        r.device = "eth0".into();
        let got = parse_route(&r, &links).unwrap();
        assert_eq!(got.dst, None);
        assert_eq!(got.oif, Some(2));
        assert_eq!(got.scope, netlink::RT_SCOPE_UNIVERSE);
        r.dest = "10.0.2.0/24".into();
        r.gateway.clear();
        let got = parse_route(&r, &links).unwrap();
        assert_eq!(got.dst, Some((IpAddr::from([10, 0, 2, 0]), 24)));
        assert_eq!(got.scope, netlink::RT_SCOPE_LINK);
        r.device = "eth9".into();
        assert!(parse_route(&r, &links).is_err());
        r.device = "eth0".into();
        r.dest = "10.0.2.0/33".into();
        assert!(parse_route(&r, &links).is_err());

        let mut iface = Interface::new();
        let mut ip = IPAddress::new();
        ip.address = "10.0.2.15".into();
        ip.mask = "24".into();
        iface.IPAddresses.push(ip);
        assert_eq!(
            requested_addresses(&iface).unwrap(),
            [(IpAddr::from([10, 0, 2, 15]), 24)]
        );
        iface.IPAddresses[0].mask = "255.255.255.0".into();
        assert!(requested_addresses(&iface).is_err());
    }

    #[test]
    fn formats_hw_addresses() {
        assert_eq!(hw_addr(&[0, 0x1b, 0xa, 0xff, 1, 2]), "00:1b:0a:ff:01:02");
        assert_eq!(hw_addr(&[]), "");
    }
}
