//! rtnetlink for the guest's network: dumps of links, addresses and routes
//! (ListInterfaces, ListRoutes) and the changes UpdateInterface and
//! UpdateRoutes make (link up and MTU, addresses, routes).
//!
//! A small hand-written client: one `NETLINK_ROUTE` socket per request, one
//! `RTM_GET*` request with `NLM_F_DUMP` or one change with `NLM_F_ACK`,
//! replies parsed from bytes with bounds checks only (no unsafe, no
//! dependency).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;

/// `IFF_UP`.
pub const IFF_UP: u32 = 0x1;
const RTPROT_BOOT: u8 = 3;
/// `RT_SCOPE_UNIVERSE`: routes through a gateway.
pub const RT_SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`: directly reachable destinations.
pub const RT_SCOPE_LINK: u8 = 253;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_TABLE: u16 = 15;
const RTAX_MTU: u16 = 2;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The main routing table (what `ip route` shows).
pub const RT_TABLE_MAIN: u32 = 254;
/// Route type of ordinary routes.
pub const RTN_UNICAST: u8 = 1;

/// Size of `struct ifinfomsg`, `struct ifaddrmsg`, `struct rtmsg`.
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;

/// How long one dump may wait for the kernel.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Kernel dump messages fit in 32 KiB; twice that leaves room.
const RECV_BUF: usize = 64 * 1024;

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name (`lo`, `eth0`).
    pub name: String,
    /// MTU in bytes.
    pub mtu: u32,
    /// Link-layer address (a MAC for Ethernet; zeros for `lo`).
    pub hw_addr: Vec<u8>,
    /// `IFF_*` flags.
    pub flags: u32,
    /// Driver kind for virtual links (`veth`, `bridge`, ...).
    pub kind: Option<String>,
}

/// An IP address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Interface index.
    pub index: u32,
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (`8` for 127.0.0.1/8).
    pub prefix_len: u8,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination and prefix length; `None` with prefix 0 = default route.
    pub dst: Option<(IpAddr, u8)>,
    /// IPv6 when true.
    pub ipv6: bool,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// `RT_SCOPE_*`.
    pub scope: u8,
    /// `RTM_F_*` / `RTNH_F_*` flags.
    pub flags: u32,
    /// Route MTU, if set.
    pub mtu: Option<u32>,
    /// Routing table.
    pub table: u32,
    /// `RTN_*` type.
    pub kind: u8,
}

/// A netlink failure.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be used.
    #[error("netlink {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel answered with an error.
    #[error("netlink request refused: {0}")]
    Kernel(std::io::Error),
    /// A reply did not parse.
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
}

/// All interfaces.
pub fn links() -> Result<Vec<Link>, NetlinkError> {
    let mut out = Vec::new();
    dump(RTM_GETLINK, &[0; IFINFOMSG_LEN], |ty, body| {
        if ty == RTM_NEWLINK {
            out.push(parse_link(body)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// All addresses of all interfaces.
pub fn addresses() -> Result<Vec<Address>, NetlinkError> {
    let mut out = Vec::new();
    dump(RTM_GETADDR, &[0; IFADDRMSG_LEN], |ty, body| {
        if ty == RTM_NEWADDR {
            if let Some(a) = parse_address(body)? {
                out.push(a);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// All routes of all tables (filter with [`Route::table`]).
pub fn routes() -> Result<Vec<Route>, NetlinkError> {
    let mut out = Vec::new();
    dump(RTM_GETROUTE, &[0; RTMSG_LEN], |ty, body| {
        if ty == RTM_NEWROUTE {
            if let Some(r) = parse_route(body)? {
                out.push(r);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn io_err(op: &'static str) -> impl Fn(rustix::io::Errno) -> NetlinkError {
    move |e| NetlinkError::Io {
        op,
        source: e.into(),
    }
}

/// Sends one dump request and feeds every reply message to `each`.
fn dump(
    msg_type: u16,
    family_header: &[u8],
    each: impl FnMut(u16, &[u8]) -> Result<(), NetlinkError>,
) -> Result<(), NetlinkError> {
    transact(msg_type, NLM_F_DUMP, family_header, each)
}

/// Sends one change request and waits for the kernel's acknowledgement.
fn change(msg_type: u16, flags: u16, body: &[u8]) -> Result<(), NetlinkError> {
    transact(msg_type, NLM_F_ACK | flags, body, |_, _| Ok(()))
}

/// Sends one request (`NLM_F_REQUEST | flags`) and feeds every reply
/// message to `each`, until `NLMSG_DONE` (dumps) or the acknowledgement
/// (`NLM_F_ACK`).
fn transact(
    msg_type: u16,
    flags: u16,
    family_header: &[u8],
    mut each: impl FnMut(u16, &[u8]) -> Result<(), NetlinkError>,
) -> Result<(), NetlinkError> {
    let ack = flags & NLM_F_ACK != 0;
    let fd: OwnedFd = net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        None, // NETLINK_ROUTE
    )
    .map_err(io_err("socket"))?;
    net::sockopt::set_socket_timeout(&fd, net::sockopt::Timeout::Recv, Some(RECV_TIMEOUT))
        .map_err(io_err("setsockopt"))?;

    const SEQ: u32 = 1;
    let len = NLMSG_HDRLEN + family_header.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&msg_type.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    req.extend_from_slice(&SEQ.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(family_header);
    net::sendto(&fd, &req, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))
        .map_err(io_err("send"))?;

    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, full) = net::recv(&fd, &mut buf[..], RecvFlags::empty()).map_err(io_err("recv"))?;
        if full > n {
            return Err(NetlinkError::Malformed(
                "reply larger than the receive buffer",
            ));
        }
        if n == 0 {
            return Err(NetlinkError::Malformed("socket closed before NLMSG_DONE"));
        }
        let mut rest = &buf[..n];
        while rest.len() >= NLMSG_HDRLEN {
            let msg_len = u32_at(rest, 0).ok_or(NetlinkError::Malformed("header"))? as usize;
            let ty = u16_at(rest, 4).ok_or(NetlinkError::Malformed("header"))?;
            let seq = u32_at(rest, 8).ok_or(NetlinkError::Malformed("header"))?;
            if msg_len < NLMSG_HDRLEN || msg_len > rest.len() {
                return Err(NetlinkError::Malformed("message length"));
            }
            let body = &rest[NLMSG_HDRLEN..msg_len];
            if seq == SEQ {
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = i32_at(body, 0).ok_or(NetlinkError::Malformed("error"))?;
                        if errno != 0 {
                            return Err(NetlinkError::Kernel(std::io::Error::from_raw_os_error(
                                errno.saturating_neg(),
                            )));
                        }
                        if ack {
                            return Ok(());
                        }
                    }
                    _ => each(ty, body)?,
                }
            }
            rest = rest.get(align4(msg_len)..).unwrap_or(&[]);
        }
    }
}

/// Appends one `rtattr` (padded to 4 bytes).
fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn ip_bytes(addr: &IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
    }
}

/// The index of the link named `name`.
pub fn link_index(name: &str) -> Result<u32, NetlinkError> {
    links()?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or_else(|| {
            NetlinkError::Kernel(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no network interface named {name:?}"),
            ))
        })
}

/// `RTM_NEWLINK` body for link `index`: the up flag and, if given, the MTU.
fn link_msg(index: u32, up: bool, mtu: Option<u32>) -> Vec<u8> {
    let mut b = vec![0u8; IFINFOMSG_LEN];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&(if up { IFF_UP } else { 0 }).to_ne_bytes());
    b[12..16].copy_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    if let Some(mtu) = mtu {
        push_attr(&mut b, IFLA_MTU, &mtu.to_ne_bytes());
    }
    b
}

/// Sets link `index` up or down and, if given, its MTU.
pub fn set_link(index: u32, up: bool, mtu: Option<u32>) -> Result<(), NetlinkError> {
    change(RTM_NEWLINK, 0, &link_msg(index, up, mtu))
}

/// Sets the link named `name` up (the guest's `lo` at boot).
pub fn set_link_up_by_name(name: &str) -> Result<(), NetlinkError> {
    set_link(link_index(name)?, true, None)
}

/// `RTM_NEWADDR`/`RTM_DELADDR` body.
fn addr_msg(index: u32, addr: &IpAddr, prefix_len: u8) -> Vec<u8> {
    let (family, bytes) = ip_bytes(addr);
    let mut b = vec![family, prefix_len, 0, 0];
    b.extend_from_slice(&index.to_ne_bytes());
    push_attr(&mut b, IFA_LOCAL, &bytes);
    push_attr(&mut b, IFA_ADDRESS, &bytes);
    b
}

/// Adds (or replaces) an address on link `index`.
pub fn add_address(index: u32, addr: &IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
    change(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_REPLACE,
        &addr_msg(index, addr, prefix_len),
    )
}

/// Removes an address from link `index`.
pub fn del_address(index: u32, addr: &IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
    change(RTM_DELADDR, 0, &addr_msg(index, addr, prefix_len))
}

/// `RTM_NEWROUTE`/`RTM_DELROUTE` body for `route` in the main table
/// (protocol `boot` for a new route; any protocol matches for a delete).
fn route_msg(route: &Route, protocol: u8) -> Vec<u8> {
    let family = if route.ipv6 { AF_INET6 } else { AF_INET };
    let dst_len = route.dst.map_or(0, |(_, len)| len);
    let mut b = vec![
        family,
        dst_len,
        0, // src_len
        0, // tos
        RT_TABLE_MAIN as u8,
        protocol,
        route.scope,
        RTN_UNICAST,
    ];
    b.extend_from_slice(&route.flags.to_ne_bytes());
    if let Some((dst, _)) = &route.dst {
        push_attr(&mut b, RTA_DST, &ip_bytes(dst).1);
    }
    if let Some(gw) = &route.gateway {
        push_attr(&mut b, RTA_GATEWAY, &ip_bytes(gw).1);
    }
    if let Some(src) = &route.prefsrc {
        push_attr(&mut b, RTA_PREFSRC, &ip_bytes(src).1);
    }
    if let Some(oif) = route.oif {
        push_attr(&mut b, RTA_OIF, &oif.to_ne_bytes());
    }
    if let Some(mtu) = route.mtu.filter(|m| *m > 0) {
        let mut metrics = Vec::new();
        push_attr(&mut metrics, RTAX_MTU, &mtu.to_ne_bytes());
        push_attr(&mut b, RTA_METRICS, &metrics);
    }
    b
}

/// Adds (or replaces) a route in the main table.
pub fn add_route(route: &Route) -> Result<(), NetlinkError> {
    change(
        RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_REPLACE,
        &route_msg(route, RTPROT_BOOT),
    )
}

/// Removes a route from the main table (one already gone is not an error).
pub fn del_route(route: &Route) -> Result<(), NetlinkError> {
    match change(RTM_DELROUTE, 0, &route_msg(route, 0)) {
        Err(NetlinkError::Kernel(e)) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r,
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Iterates the `rtattr`s of `b` as (type, payload).
fn attrs(b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NetlinkError>> {
    let mut rest = b;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16_at(rest, 0)?);
        let ty = u16_at(rest, 2)? & 0x3fff; // drop NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if len < 4 || len > rest.len() {
            rest = &[];
            return Some(Err(NetlinkError::Malformed("attribute length")));
        }
        let payload = &rest[4..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok((ty, payload)))
    })
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn ip(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn parse_link(body: &[u8]) -> Result<Link, NetlinkError> {
    let hdr = body
        .get(..IFINFOMSG_LEN)
        .ok_or(NetlinkError::Malformed("ifinfomsg"))?;
    let mut link = Link {
        index: u32_at(hdr, 4).unwrap_or_default(),
        flags: u32_at(hdr, 8).unwrap_or_default(),
        name: String::new(),
        mtu: 0,
        hw_addr: Vec::new(),
        kind: None,
    };
    for attr in attrs(&body[IFINFOMSG_LEN..]) {
        let (ty, payload) = attr?;
        match ty {
            IFLA_IFNAME => link.name = c_string(payload),
            IFLA_MTU => link.mtu = u32_at(payload, 0).unwrap_or_default(),
            IFLA_ADDRESS => link.hw_addr = payload.to_vec(),
            IFLA_LINKINFO => {
                for inner in attrs(payload) {
                    let (ity, ipayload) = inner?;
                    if ity == IFLA_INFO_KIND {
                        link.kind = Some(c_string(ipayload));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

fn parse_address(body: &[u8]) -> Result<Option<Address>, NetlinkError> {
    let hdr = body
        .get(..IFADDRMSG_LEN)
        .ok_or(NetlinkError::Malformed("ifaddrmsg"))?;
    let family = hdr[0];
    let prefix_len = hdr[1];
    let index = u32_at(hdr, 4).unwrap_or_default();
    let (mut local, mut address) = (None, None);
    for attr in attrs(&body[IFADDRMSG_LEN..]) {
        let (ty, payload) = attr?;
        match ty {
            IFA_LOCAL => local = ip(family, payload),
            IFA_ADDRESS => address = ip(family, payload),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    // point-to-point links and the same as IFA_LOCAL otherwise.
    Ok(local.or(address).map(|addr| Address {
        index,
        addr,
        prefix_len,
    }))
}

fn parse_route(body: &[u8]) -> Result<Option<Route>, NetlinkError> {
    let hdr = body
        .get(..RTMSG_LEN)
        .ok_or(NetlinkError::Malformed("rtmsg"))?;
    let family = hdr[0];
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    let dst_len = hdr[1];
    let mut route = Route {
        dst: None,
        ipv6: family == AF_INET6,
        gateway: None,
        oif: None,
        prefsrc: None,
        scope: hdr[6],
        flags: u32_at(hdr, 8).unwrap_or_default(),
        mtu: None,
        table: u32::from(hdr[4]),
        kind: hdr[7],
    };
    for attr in attrs(&body[RTMSG_LEN..]) {
        let (ty, payload) = attr?;
        match ty {
            RTA_DST => route.dst = ip(family, payload).map(|a| (a, dst_len)),
            RTA_GATEWAY => route.gateway = ip(family, payload),
            RTA_PREFSRC => route.prefsrc = ip(family, payload),
            RTA_OIF => route.oif = u32_at(payload, 0),
            RTA_TABLE => route.table = u32_at(payload, 0).unwrap_or(route.table),
            RTA_METRICS => {
                for inner in attrs(payload) {
                    let (ity, ipayload) = inner?;
                    if ity == RTAX_MTU {
                        route.mtu = u32_at(ipayload, 0);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Some(route))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn parses_a_hand_made_address_and_route() {
        let mut body = vec![AF_INET, 24, 0, 0];
        body.extend_from_slice(&7u32.to_ne_bytes());
        body.extend(attr(IFA_ADDRESS, &[10, 0, 0, 1]));
        body.extend(attr(IFA_LOCAL, &[10, 0, 0, 2]));
        let a = parse_address(&body).unwrap().unwrap();
        assert_eq!(a.index, 7);
        assert_eq!(a.prefix_len, 24);
        assert_eq!(a.addr, IpAddr::from([10, 0, 0, 2]));

        let mut body = vec![AF_INET, 0, 0, 0, 254, 3, 0, RTN_UNICAST];
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend(attr(RTA_GATEWAY, &[10, 0, 0, 254]));
        body.extend(attr(RTA_OIF, &7u32.to_ne_bytes()));
        body.extend(attr(RTA_METRICS, &attr(RTAX_MTU, &1400u32.to_ne_bytes())));
        let r = parse_route(&body).unwrap().unwrap();
        assert_eq!(r.dst, None);
        assert_eq!(r.gateway, Some(IpAddr::from([10, 0, 0, 254])));
        assert_eq!(r.oif, Some(7));
        assert_eq!(r.mtu, Some(1400));
        assert_eq!(r.table, RT_TABLE_MAIN);
    }

    #[test]
    fn change_messages_parse_back() {
        let route = Route {
            dst: Some((IpAddr::from([10, 0, 2, 0]), 24)),
            ipv6: false,
            gateway: Some(IpAddr::from([10, 0, 2, 2])),
            oif: Some(2),
            prefsrc: None,
            scope: RT_SCOPE_UNIVERSE,
            flags: 0,
            mtu: Some(1400),
            table: RT_TABLE_MAIN,
            kind: RTN_UNICAST,
        };
        assert_eq!(
            parse_route(&route_msg(&route, RTPROT_BOOT))
                .unwrap()
                .unwrap(),
            route
        );
        let a = parse_address(&addr_msg(3, &IpAddr::from([10, 0, 2, 15]), 24))
            .unwrap()
            .unwrap();
        assert_eq!((a.index, a.prefix_len), (3, 24));
        let l = parse_link(&link_msg(5, true, Some(1500))).unwrap();
        assert_eq!((l.index, l.flags, l.mtu), (5, IFF_UP, 1500));
    }

    #[test]
    fn malformed_attributes_are_errors_not_panics() {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body.extend_from_slice(&[200, 0, 3, 0, b'l', b'o']);
        assert!(parse_link(&body).is_err());
        assert!(parse_link(&[0; 3]).is_err());
        assert!(parse_route(&[AF_INET; 5]).is_err());
        let mut body = vec![AF_INET6, 64, 0, 0, 1, 0, 0, 0];
        body.extend(attr(IFA_ADDRESS, &[1, 2, 3]));
        assert_eq!(parse_address(&body).unwrap(), None);
    }

    #[test]
    fn dumps_the_real_loopback() {
        let links = links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("lo link");
        assert_eq!(lo.hw_addr, vec![0; 6]);
        let addrs = addresses().unwrap();
        assert!(addrs.iter().any(|a| a.index == lo.index
            && a.addr == IpAddr::from([127, 0, 0, 1])
            && a.prefix_len == 8));
        let routes = routes().unwrap();
        // The local table always has 127.0.0.0/8 on lo.
        assert!(routes.iter().any(|r| r.oif == Some(lo.index)
            && r.dst
                .is_some_and(|(a, _)| a == IpAddr::from([127, 0, 0, 0]))));
    }
}
