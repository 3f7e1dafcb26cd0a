//! The outbound guard: which addresses a URL taken from a job may reach.
//!
//! Workers download files from URLs that HDX contributors control (geopreview downloads, the
//! file-structure check's HXL-proxy URL). Without a guard such a URL could make the worker fetch
//! from its own loopback, the cloud metadata service (`169.254.169.254`) or the private network
//! (SSRF), directly, through a DNS name that resolves there, or through a redirect.
//!
//! The check is made on the address actually connected to: [`GuardedResolver`] resolves the host
//! once, keeps only the addresses the [`OutboundPolicy`] allows and hands exactly those to the
//! connector, so there is no second lookup a rebinding DNS server could answer differently.
//! [`guarded_agent`] builds a ureq agent that uses it for every connection. Private addresses
//! can be allowed by the operator (`HDX_OUTBOUND_ALLOW`: networks, addresses, host names), and
//! hosts the operator configured (CKAN, the HXL proxy) are exempted by name.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ureq::config::{Config, ConfigBuilder};
use ureq::http::Uri;
use ureq::typestate::AgentScope;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// IPv4 networks a job's URL must never reach, as (network, prefix length).
const FORBIDDEN_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network", incl. the unspecified 0.0.0.0 (RFC 1122)
    ([10, 0, 0, 0], 8),      // private (RFC 1918)
    ([100, 64, 0, 0], 10),   // carrier-grade NAT (RFC 6598)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, incl. the cloud metadata service 169.254.169.254
    ([172, 16, 0, 0], 12),   // private (RFC 1918)
    ([192, 0, 0, 0], 24),    // IETF protocol assignments (RFC 6890)
    ([192, 0, 2, 0], 24),    // TEST-NET-1 documentation (RFC 5737)
    ([192, 168, 0, 0], 16),  // private (RFC 1918)
    ([198, 18, 0, 0], 15),   // benchmarking (RFC 2544)
    ([198, 51, 100, 0], 24), // TEST-NET-2 documentation (RFC 5737)
    ([203, 0, 113, 0], 24),  // TEST-NET-3 documentation (RFC 5737)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, incl. the broadcast 255.255.255.255
];

/// IPv6 networks a job's URL must never reach, as (network, prefix length). `::`, `::1` and the
/// forms that embed an IPv4 address are judged by that address, see [`embedded_ipv4`].
const FORBIDDEN_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only (RFC 6666)
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64 (RFC 8215)
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32), // Teredo: tunnels to any IPv4, refused whole
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation (RFC 3849)
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local addresses (private)
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated, still private)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// True for addresses a job's URL must never reach: loopback, private, link-local (cloud
/// metadata), carrier-grade NAT, documentation, benchmarking, multicast, reserved and
/// unspecified ones, in IPv4 and IPv6. IPv6 addresses that embed an IPv4 address
/// (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are judged by the IPv4 address; Teredo is refused
/// whole.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => forbidden_v4(v4),
            None => FORBIDDEN_V6
                .iter()
                .any(|&(net, prefix)| same_prefix(u128::from(v6), u128::from(net), prefix, 128)),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    FORBIDDEN_V4.iter().any(|&(net, prefix)| {
        same_prefix(
            u128::from(u32::from(ip)),
            u128::from(u32::from(Ipv4Addr::from(net))),
            prefix,
            32,
        )
    })
}

/// The IPv4 address an IPv6 address stands for, when it embeds one.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let v4 = |high: u16, low: u16| Ipv4Addr::from(u32::from(high) << 16 | u32::from(low));
    match ip.segments() {
        // IPv4-compatible ::/96 (deprecated), incl. :: and ::1 (in 0.0.0.0/8, so forbidden)
        [0, 0, 0, 0, 0, 0, high, low] => Some(v4(high, low)),
        // IPv4-mapped ::ffff:0:0/96
        [0, 0, 0, 0, 0, 0xffff, high, low] => Some(v4(high, low)),
        // IPv4-translated ::ffff:0:0:0/96 (SIIT, RFC 6145)
        [0, 0, 0, 0, 0xffff, 0, high, low] => Some(v4(high, low)),
        // NAT64 64:ff9b::/96 (RFC 6052)
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => Some(v4(high, low)),
        // 6to4 2002::/16: the IPv4 address is in bits 16 to 48
        [0x2002, high, low, ..] => Some(v4(high, low)),
        _ => None,
    }
}

/// True when `a` and `b` agree on their first `prefix` bits out of `width` (32 or 128).
fn same_prefix(a: u128, b: u128, prefix: u8, width: u8) -> bool {
    let shift = u32::from(width.saturating_sub(prefix));
    (a ^ b).checked_shr(shift).unwrap_or(0) == 0
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is; others unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An IP network (CIDR): an address and a prefix length. An IPv4-mapped IPv6 address is an IPv4
/// address here, in networks and in [`IpNet::contains`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `address/prefix` (`10.1.0.0/16`, `fd00::/8`) or a bare address (a /32 or /128).
    /// Bits past the prefix are ignored (`10.1.2.3/16` is `10.1.0.0/16`). A bad address or a
    /// prefix length beyond 32 (IPv4) or 128 (IPv6) is an error naming `text`.
    pub fn parse(text: &str) -> Result<IpNet, OutboundError> {
        let text = text.trim();
        let bad = || OutboundError::BadNetwork(text.to_string());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(bad)?,
        };
        Ok(IpNet::new(addr, prefix))
    }

    /// The network of `addr` with `prefix` bits (clamped to the address width); an IPv4-mapped
    /// network of at least 96 bits becomes the IPv4 network.
    fn new(addr: IpAddr, prefix: u8) -> IpNet {
        match addr {
            IpAddr::V4(v4) => {
                let prefix = prefix.min(32);
                let mask = u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0);
                IpNet {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                    prefix,
                }
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => IpNet::new(IpAddr::V4(v4), prefix - 96),
                _ => {
                    let prefix = prefix.min(128);
                    let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
                    IpNet {
                        addr: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                        prefix,
                    }
                }
            },
        }
    }

    /// True when `ip` is in this network (an IPv4-mapped `ip` is matched as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(
                u128::from(u32::from(ip)),
                u128::from(u32::from(net)),
                self.prefix,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(ip), u128::from(net), self.prefix, 128)
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A malformed item of an outbound allow list.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// An IP network or address with a bad address or prefix length.
    #[error("{0:?} is not an IP network (address/prefix length) or address")]
    BadNetwork(String),
    /// Neither an IP network, an IP address nor a host name.
    #[error("{0:?} is neither an IP network, an IP address nor a host name")]
    BadItem(String),
}

/// Where outgoing calls for jobs may go beyond public addresses. The default allows nothing
/// more: only addresses [`is_forbidden`] accepts.
///
/// Host names are matched case-insensitively, without a trailing dot, exactly (`files.intranet`
/// is not `a.files.intranet`); `*.files.intranet` matches every subdomain of `files.intranet`
/// (not `files.intranet` itself). An exempt host may be reached on any port and at any address
/// its name resolves to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

impl OutboundPolicy {
    /// Parses an `HDX_OUTBOUND_ALLOW` list: comma-separated CIDR networks (`10.1.0.0/16`,
    /// `fd00::/8`), addresses (a /32 or /128) and host names (`files.intranet`,
    /// `*.files.intranet`); whitespace around items and empty items are ignored. A malformed
    /// network, or an item that is none of these, is an error naming it.
    pub fn parse(list: &str) -> Result<OutboundPolicy, OutboundError> {
        let mut policy = OutboundPolicy::default();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item.contains('/') || item.parse::<IpAddr>().is_ok() {
                policy.nets.push(IpNet::parse(item)?);
            } else if is_host_pattern(item) {
                policy.hosts.push(normalize_host(item));
            } else {
                return Err(OutboundError::BadItem(item.to_string()));
            }
        }
        Ok(policy)
    }

    /// A policy that allows every address: for URLs the operator typed (as curl would fetch
    /// them), never for a job's.
    pub fn unrestricted() -> OutboundPolicy {
        OutboundPolicy {
            nets: vec![
                IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            ],
            hosts: Vec::new(),
        }
    }

    /// Exempts a host by name, wherever it resolves (e.g. the configured CKAN host). `host` may
    /// be a name or address, `host:port` or a URL: only the host is kept. An empty host is
    /// ignored.
    pub fn exempt_host(mut self, host: &str) -> Self {
        let host = normalize_host(host_of(host));
        if !host.is_empty() && !self.hosts.contains(&host) {
            self.hosts.push(host);
        }
        self
    }

    /// True when `host` (a name, or an address as written in a URL, `[::1]` too) is exempt by
    /// name.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        !host.is_empty()
            && self
                .hosts
                .iter()
                .any(|entry| match entry.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                    None => *entry == host,
                })
    }

    /// True when `ip` may be connected to: a public address, or one inside an allowed network
    /// (IPv4-mapped IPv6 addresses are matched against IPv4 networks too).
    pub fn allows_addr(&self, ip: IpAddr) -> bool {
        !is_forbidden(ip) || self.nets.iter().any(|net| net.contains(ip))
    }
}

/// The host of `host`, `host:port`, `[v6]:port` or a URL (`scheme://user@host:port/path`).
fn host_of(text: &str) -> &str {
    let text = text.trim();
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or("");
    }
    match authority.split_once(':') {
        // One colon: host:port. More: a bare IPv6 address.
        Some((host, port)) if !port.contains(':') => host,
        _ => authority,
    }
}

/// A host as compared: lowercase, no trailing dot, no brackets, addresses in their usual form.
fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host,
    }
}

/// True for a host name, optionally `*.`-prefixed: dot-separated labels of letters, digits, `-`
/// and `_`, the last not starting with a digit (`10.0.0.256` is a bad address, not a name).
fn is_host_pattern(item: &str) -> bool {
    let name = item.strip_prefix("*.").unwrap_or(item);
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    name.split('.').all(label_ok)
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|last| last.starts_with(|c: char| c.is_ascii_digit()))
}

/// Why a guarded call was not made: the host resolved to no address the policy allows. The
/// message names only the host as given in the URL (no addresses, ports or transport details:
/// it goes back to CKAN, and details would make the worker a port-scan oracle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the address of {host} is not allowed")]
pub struct Refused {
    /// The host of the refused URL, as written there.
    pub host: String,
}

/// The [`Refused`] inside a ureq error, if the guard refused the call. ureq returns the
/// resolver's error as is from `call()` (`ureq::Error::Other`); an `std::io::Error` wrapping it
/// (ureq's `Error::into_io`, `ureq::Error::Io`) is looked through.
pub fn refusal(error: &ureq::Error) -> Option<&Refused> {
    match error {
        ureq::Error::Other(inner) => inner.downcast_ref::<Refused>(),
        ureq::Error::Io(io) => refusal_in_io(io),
        _ => None,
    }
}

fn refusal_in_io(error: &io::Error) -> Option<&Refused> {
    let inner = error.get_ref()?;
    inner
        .downcast_ref::<Refused>()
        .or_else(|| inner.downcast_ref::<ureq::Error>().and_then(refusal))
}

/// A ureq resolver that only returns addresses the policy allows.
///
/// A host exempt by name resolves as usual. Any other host (IP literals too, `[::ffff:127.0.0.1]`
/// and `2130706433` included, since they are judged after resolution) is resolved once with
/// ureq's [`DefaultResolver`] (within the timeout it is given) and only the allowed addresses
/// are kept: when a name resolves to public and forbidden addresses, the connector only ever
/// sees the public ones. No allowed address left is a [`Refused`] error
/// (`ureq::Error::Other`), before any connection is attempted.
///
/// A lookup made under a config with a proxy is refused too: through a proxy this resolver
/// would only see the proxy's address, never the target's.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<OutboundPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<OutboundPolicy>) -> Self {
        GuardedResolver { policy }
    }

    /// The addresses of `resolved` the policy allows, in their order.
    fn keep_allowed(&self, resolved: &ResolvedSocketAddrs) -> ResolvedSocketAddrs {
        let mut kept = self.empty();
        for addr in resolved.iter() {
            if self.policy.allows_addr(addr.ip()) {
                kept.push(*addr);
            }
        }
        kept
    }
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let refused = || {
            ureq::Error::Other(Box::new(Refused {
                host: host.to_string(),
            }))
        };
        if config.proxy().is_some() {
            return Err(refused());
        }
        let resolved = DefaultResolver::default().resolve(uri, config, timeout)?;
        if self.policy.allows_host(host) {
            return Ok(resolved);
        }
        let kept = self.keep_allowed(&resolved);
        if kept.is_empty() {
            Err(refused())
        } else {
            Ok(kept)
        }
    }
}

/// An agent configured by `config` whose every connection passes the guard of `policy`
/// ([`GuardedResolver`]).
///
/// It takes the builder, not a built `Config`, because it must clear the proxy (`.proxy(None)`)
/// and a built `Config` cannot be changed: ureq reads `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`
/// by default, and through a proxy the guard would check the proxy, not the target. Do not set
/// a proxy on a request of this agent either: such calls are refused.
///
/// Redirects: with `max_redirects(0)` the caller follows them by hand, calling this agent for
/// each hop, so each hop's connection is guarded; ureq's own redirect following (if enabled)
/// also resolves each hop through the guard.
pub fn guarded_agent(
    config: ConfigBuilder<AgentScope>,
    policy: Arc<OutboundPolicy>,
) -> ureq::Agent {
    ureq::Agent::with_parts(
        config.proxy(None).build(),
        DefaultConnector::default(),
        GuardedResolver::new(policy),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn forbidden_ranges_and_their_edges() {
        let table = [
            // 0.0.0.0/8
            ("0.0.0.0", true),
            ("0.255.255.255", true),
            ("1.0.0.0", false),
            // 10/8
            ("9.255.255.255", false),
            ("10.0.0.0", true),
            ("10.255.255.255", true),
            ("11.0.0.0", false),
            // 100.64/10
            ("100.63.255.255", false),
            ("100.64.0.0", true),
            ("100.127.255.255", true),
            ("100.128.0.0", false),
            // 127/8
            ("126.255.255.255", false),
            ("127.0.0.1", true),
            ("127.255.255.255", true),
            ("128.0.0.0", false),
            // 169.254/16
            ("169.253.255.255", false),
            ("169.254.0.0", true),
            ("169.254.169.254", true),
            ("169.255.0.0", false),
            // 172.16/12
            ("172.15.255.255", false),
            ("172.16.0.0", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            // 192.0.0.0/24 and 192.0.2.0/24
            ("191.255.255.255", false),
            ("192.0.0.0", true),
            ("192.0.0.255", true),
            ("192.0.1.0", false),
            ("192.0.2.0", true),
            ("192.0.2.255", true),
            ("192.0.3.0", false),
            // 192.168/16
            ("192.167.255.255", false),
            ("192.168.0.0", true),
            ("192.168.255.255", true),
            ("192.169.0.0", false),
            // 198.18/15
            ("198.17.255.255", false),
            ("198.18.0.0", true),
            ("198.19.255.255", true),
            ("198.20.0.0", false),
            // 198.51.100/24
            ("198.51.99.255", false),
            ("198.51.100.0", true),
            ("198.51.100.255", true),
            ("198.51.101.0", false),
            // 203.0.113/24
            ("203.0.112.255", false),
            ("203.0.113.0", true),
            ("203.0.113.255", true),
            ("203.0.114.0", false),
            // 224/4 and 240/4, 255.255.255.255
            ("223.255.255.255", false),
            ("224.0.0.0", true),
            ("239.255.255.255", true),
            ("240.0.0.0", true),
            ("255.255.255.255", true),
            // public IPv4
            ("8.8.8.8", false),
            ("1.1.1.1", false),
            // IPv6 unspecified and loopback
            ("::", true),
            ("::1", true),
            // IPv4-compatible ::/96 judged by the IPv4 address
            ("::127.0.0.1", true),
            ("::10.0.0.1", true),
            ("::8.8.8.8", false),
            // IPv4-mapped
            ("::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:192.168.1.1", true),
            ("::ffff:8.8.8.8", false),
            // IPv4-translated (SIIT)
            ("::ffff:0:127.0.0.1", true),
            ("::ffff:0:8.8.8.8", false),
            // NAT64
            ("64:ff9b::127.0.0.1", true),
            ("64:ff9b::a9fe:a9fe", true),
            ("64:ff9b::8.8.8.8", false),
            ("64:ff9b:1::1", true),
            // 6to4
            ("2002:7f00:1::1", true),
            ("2002:a00:1::", true),
            ("2002:808:808::1", false),
            // Teredo 2001::/32, whole
            ("2001::1", true),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001:1::1", false),
            // documentation 2001:db8::/32
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:db8::", true),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001:db9::", false),
            // discard 100::/64
            ("100::", true),
            ("100::ffff:ffff:ffff:ffff", true),
            ("100:0:0:1::", false),
            // unique local fc00::/7
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fc00::", true),
            ("fd12:3456::1", true),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            // link-local fe80::/10, site-local fec0::/10
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fe80::1", true),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("fec0::1", true),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            // multicast ff00::/8
            ("ff00::", true),
            ("ff02::1", true),
            // public IPv6
            ("2606:4700:4700::1111", false),
            ("2a00:1450:4001:80e::200e", false),
        ];
        for (address, forbidden) in table {
            assert_eq!(is_forbidden(ip(address)), forbidden, "{address}");
        }
    }

    #[test]
    fn networks_parse_with_prefix_or_bare() {
        let net = IpNet::parse(" 10.1.2.3/16 ").expect("network");
        assert_eq!(net.to_string(), "10.1.0.0/16");
        assert!(net.contains(ip("10.1.255.255")));
        assert!(net.contains(ip("::ffff:10.1.0.1")));
        assert!(!net.contains(ip("10.2.0.0")));
        assert_eq!(
            IpNet::parse("127.0.0.1").expect("bare").to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(IpNet::parse("::1").expect("bare v6").to_string(), "::1/128");
        assert_eq!(
            IpNet::parse("0.0.0.0/0").expect("all").to_string(),
            "0.0.0.0/0"
        );
        // An IPv4-mapped network is the IPv4 network.
        let mapped = IpNet::parse("::ffff:10.0.0.0/104").expect("mapped");
        assert_eq!(mapped, IpNet::parse("10.0.0.0/8").expect("v4"));
        let v6 = IpNet::parse("fd00::/8").expect("v6");
        assert!(v6.contains(ip("fdff::1")));
        assert!(!v6.contains(ip("fc00::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(IpNet::parse("::/0")
            .expect("all v6")
            .contains(ip("2001:db8::1")));
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/-1",
            "300.1.1.1/8",
            "10.0.0.256",
            "fd00::g/8",
            "",
        ] {
            assert_eq!(
                IpNet::parse(bad),
                Err(OutboundError::BadNetwork(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn allow_lists_parse() {
        let policy = OutboundPolicy::parse(
            " 10.1.0.0/16, fd00::/8 ,, 192.168.1.7,::1 , Files.Intranet, *.Corp.Example. ,",
        )
        .expect("list");
        assert!(policy.allows_addr(ip("10.1.200.3")));
        assert!(policy.allows_addr(ip("::ffff:10.1.200.3")));
        assert!(!policy.allows_addr(ip("10.2.0.1")));
        assert!(policy.allows_addr(ip("fd00::5")));
        assert!(!policy.allows_addr(ip("fc00::5")));
        assert!(policy.allows_addr(ip("192.168.1.7")));
        assert!(!policy.allows_addr(ip("192.168.1.8")));
        assert!(policy.allows_addr(ip("::1")));
        assert!(!policy.allows_addr(ip("127.0.0.1")));
        assert!(policy.allows_addr(ip("8.8.8.8")));
        assert!(policy.allows_host("files.intranet"));
        assert!(policy.allows_host("FILES.intranet."));
        assert!(!policy.allows_host("a.files.intranet"));
        assert!(!policy.allows_host("files.intranet.evil.example"));
        assert!(policy.allows_host("a.corp.example"));
        assert!(policy.allows_host("b.a.CORP.example"));
        assert!(!policy.allows_host("corp.example"));
        assert!(!policy.allows_host("evilcorp.example"));
        assert!(!policy.allows_host(""));

        assert_eq!(OutboundPolicy::parse(" , ,"), Ok(OutboundPolicy::default()));
        assert_eq!(
            OutboundPolicy::parse("10.0.0.0/8, 10.1.0.0/33"),
            Err(OutboundError::BadNetwork("10.1.0.0/33".to_string()))
        );
        for bad in ["10.0.0.256", "10.1", "0x7f.1", "host.123"] {
            assert_eq!(
                OutboundPolicy::parse(bad),
                Err(OutboundError::BadItem(bad.to_string())),
                "{bad}"
            );
        }
        for bad in [
            "host:80",
            "http://host",
            "a..b",
            "*.",
            "*",
            "a.*.b",
            "ex ample",
        ] {
            assert!(OutboundPolicy::parse(bad).is_err(), "{bad}");
        }
        let message = OutboundPolicy::parse("fd00::/200")
            .expect_err("bad prefix")
            .to_string();
        assert!(message.contains("fd00::/200"), "{message}");
    }

    #[test]
    fn exempt_hosts_keep_only_the_host() {
        let policy = OutboundPolicy::default()
            .exempt_host("ckan.example.org")
            .exempt_host("hxl.example.org:8080")
            .exempt_host("https://user:pw@Data.Example.org:8443/path?q=a@b#frag")
            .exempt_host("http://[::1]:5000/")
            .exempt_host("10.0.0.5:80")
            .exempt_host("fd00::7")
            .exempt_host("")
            .exempt_host("https://");
        for host in [
            "ckan.example.org",
            "hxl.example.org",
            "data.example.org",
            "[::1]",
            "::1",
            "10.0.0.5",
            "[fd00::7]",
            "fd00:0::7",
        ] {
            assert!(policy.allows_host(host), "{host}");
        }
        for host in ["example.org", "8080", "user", "path", "10.0.0.6", ""] {
            assert!(!policy.allows_host(host), "{host}");
        }
        // Exempt by name is not allowed by address.
        assert!(!policy.allows_addr(ip("10.0.0.5")));
        assert_eq!(policy.hosts.len(), 6);
    }

    #[test]
    fn unrestricted_allows_everything() {
        let policy = OutboundPolicy::unrestricted();
        for address in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "169.254.169.254",
            "fe80::1",
        ] {
            assert!(policy.allows_addr(ip(address)), "{address}");
        }
        assert!(!OutboundPolicy::default().allows_addr(ip("127.0.0.1")));
    }

    #[test]
    fn mixed_resolutions_keep_only_allowed_addresses() {
        let resolver = GuardedResolver::new(Arc::new(
            OutboundPolicy::parse("10.9.0.0/16").expect("list"),
        ));
        let mut resolved = resolver.empty();
        for addr in [
            "127.0.0.1:80",
            "8.8.8.8:80",
            "10.0.0.1:80",
            "10.9.1.1:80",
            "[::1]:80",
            "[2606:4700:4700::1111]:80",
        ] {
            resolved.push(addr.parse::<SocketAddr>().expect("socket address"));
        }
        let kept: Vec<String> = resolver
            .keep_allowed(&resolved)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            kept,
            ["8.8.8.8:80", "10.9.1.1:80", "[2606:4700:4700::1111]:80"]
        );
    }

    #[test]
    fn refusals_are_found_through_io_wrappers() {
        let refused = || {
            ureq::Error::Other(Box::new(Refused {
                host: "internal".to_string(),
            }))
        };
        let direct = refused();
        assert_eq!(refusal(&direct).map(|r| r.host.as_str()), Some("internal"));
        let wrapped = ureq::Error::Io(refused().into_io());
        assert!(refusal(&wrapped).is_some());
        let bare = ureq::Error::Io(io::Error::other(Refused {
            host: "internal".to_string(),
        }));
        assert!(refusal(&bare).is_some());
        // ureq unwraps an io::Error carrying a ureq error back into it.
        assert!(refusal(&ureq::Error::from(refused().into_io())).is_some());
        assert!(refusal(&ureq::Error::HostNotFound).is_none());
        assert!(refusal(&ureq::Error::Other("other".into())).is_none());
        assert_eq!(
            Refused {
                host: "internal".to_string()
            }
            .to_string(),
            "the address of internal is not allowed"
        );
    }

    // Live tests against local listeners.

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    fn builder() -> ConfigBuilder<AgentScope> {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .max_redirects(0)
    }

    fn agent(policy: OutboundPolicy) -> ureq::Agent {
        guarded_agent(builder(), Arc::new(policy))
    }

    fn listen() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local address").port();
        (listener, port)
    }

    /// Answers every connection to `listener` with `answer`, counting connections.
    fn serve(listener: TcpListener, answer: String) -> Arc<AtomicUsize> {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        hits
    }

    /// Asserts that nothing connected to `listener` (a completed connect is in its backlog).
    fn assert_untouched(listener: &TcpListener) {
        listener.set_nonblocking(true).expect("non-blocking");
        match listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept failed: {e}"),
            Ok((_, peer)) => panic!("the listener got a connection from {peer}"),
        }
    }

    /// Asserts `url` is refused quickly with the message naming `host`.
    fn assert_refused(agent: &ureq::Agent, url: &str, host: &str) {
        let started = Instant::now();
        let error = agent.get(url).call().expect_err(url);
        let elapsed = started.elapsed();
        let refused = refusal(&error).unwrap_or_else(|| panic!("{url}: not refused: {error}"));
        assert_eq!(
            refused.to_string(),
            format!("the address of {host} is not allowed"),
            "{url}"
        );
        assert!(elapsed < Duration::from_millis(500), "{url}: {elapsed:?}");
    }

    fn get_ok(agent: &ureq::Agent, url: &str) -> String {
        let mut response = agent.get(url).call().expect(url);
        assert_eq!(response.status(), 200, "{url}");
        response.body_mut().read_to_string().expect("body")
    }

    #[test]
    fn loopback_in_any_spelling_is_refused_before_connecting() {
        let (listener, port) = listen();
        let agent = agent(OutboundPolicy::default());
        let cases = [
            (format!("http://127.0.0.1:{port}/x"), "127.0.0.1"),
            (format!("http://localhost:{port}/x"), "localhost"),
            (format!("http://LocalHost:{port}/x"), "LocalHost"),
            (
                format!("http://[::ffff:127.0.0.1]:{port}/x"),
                "[::ffff:127.0.0.1]",
            ),
            (
                format!("http://[::ffff:7f00:1]:{port}/x"),
                "[::ffff:7f00:1]",
            ),
            (format!("http://[::127.0.0.1]:{port}/x"), "[::127.0.0.1]"),
            (format!("http://2130706433:{port}/x"), "2130706433"),
            (format!("http://0x7f.1:{port}/x"), "0x7f.1"),
            (format!("http://0177.0.0.1:{port}/x"), "0177.0.0.1"),
            (format!("http://127.1:{port}/x"), "127.1"),
            (format!("http://0.0.0.0:{port}/x"), "0.0.0.0"),
            (format!("http://user@127.0.0.1:{port}/x"), "127.0.0.1"),
            (format!("https://127.0.0.1:{port}/x"), "127.0.0.1"),
        ];
        for (url, host) in &cases {
            assert_refused(&agent, url, host);
        }
        // The url crate normalises the odd spellings to 127.0.0.1 first; refused all the same.
        for (url, _) in &cases {
            let parsed = url::Url::parse(url).expect("url");
            let host = parsed.host_str().unwrap_or_default();
            assert_refused(&agent, parsed.as_str(), host);
        }
        assert_untouched(&listener);
    }

    #[test]
    fn ipv6_loopback_is_refused() {
        let agent = agent(OutboundPolicy::default());
        match TcpListener::bind("[::1]:0") {
            Ok(listener) => {
                let port = listener.local_addr().expect("local address").port();
                assert_refused(&agent, &format!("http://[::1]:{port}/"), "[::1]");
                assert_refused(&agent, &format!("http://[0:0::1]:{port}/"), "[0:0::1]");
                assert_untouched(&listener);
            }
            // No IPv6 here: the refusal comes before any connection anyway.
            Err(_) => assert_refused(&agent, "http://[::1]:9/", "[::1]"),
        }
    }

    #[test]
    fn metadata_and_private_addresses_are_refused_at_once() {
        let agent = agent(OutboundPolicy::default());
        // Without the guard these would wait for the 5 s timeout (nothing answers there).
        assert_refused(
            &agent,
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
        );
        assert_refused(&agent, "http://10.255.255.1:8080/x", "10.255.255.1");
        assert_refused(&agent, "https://192.168.0.1/", "192.168.0.1");
        assert_refused(&agent, "http://[fd00::1]/", "[fd00::1]");
        assert_refused(
            &agent,
            "http://[64:ff9b::a9fe:a9fe]/",
            "[64:ff9b::a9fe:a9fe]",
        );
    }

    #[test]
    fn allowed_networks_addresses_and_names_connect() {
        let (listener, port) = listen();
        let hits = serve(listener, OK.to_string());
        let by_network = agent(OutboundPolicy::parse("127.0.0.0/8").expect("list"));
        assert_eq!(
            get_ok(&by_network, &format!("http://127.0.0.1:{port}/x")),
            "ok"
        );
        assert_eq!(
            get_ok(&by_network, &format!("http://[::ffff:127.0.0.1]:{port}/x")),
            "ok"
        );
        let by_address = agent(OutboundPolicy::parse("127.0.0.1").expect("list"));
        assert_eq!(
            get_ok(&by_address, &format!("http://127.0.0.1:{port}/x")),
            "ok"
        );
        assert_refused(
            &by_address,
            &format!("http://127.0.0.2:{port}/x"),
            "127.0.0.2",
        );
        let by_name = agent(OutboundPolicy::parse("localhost").expect("list"));
        assert_eq!(
            get_ok(&by_name, &format!("http://localhost:{port}/x")),
            "ok"
        );
        assert_refused(&by_name, &format!("http://127.0.0.1:{port}/x"), "127.0.0.1");
        let exempt =
            agent(OutboundPolicy::default().exempt_host(&format!("http://localhost:{port}/")));
        assert_eq!(get_ok(&exempt, &format!("http://localhost:{port}/x")), "ok");
        assert_eq!(hits.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn each_redirect_hop_is_guarded() {
        // Linux routes all of 127/8 to loopback; elsewhere the refusal is checked alone.
        let target = TcpListener::bind("127.0.0.2:0").ok();
        let target_port = target
            .as_ref()
            .and_then(|t| t.local_addr().ok())
            .map_or(9, |a| a.port());
        let (listener, port) = listen();
        let location = format!("http://127.0.0.2:{target_port}/inside");
        let hits = serve(
            listener,
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        );
        let policy = Arc::new(OutboundPolicy::parse("127.0.0.1").expect("list"));
        // By hand, as the project does: each hop on the same agent.
        let agent = guarded_agent(builder(), policy.clone());
        let response = agent
            .get(&format!("http://127.0.0.1:{port}/start"))
            .call()
            .expect("first hop");
        assert_eq!(response.status(), 302);
        assert_refused(&agent, &location, "127.0.0.2");
        // ureq's own redirect following resolves each hop through the guard too.
        let following = guarded_agent(builder().max_redirects(5), policy);
        let error = following
            .get(&format!("http://127.0.0.1:{port}/start"))
            .call()
            .expect_err("redirect to a forbidden address");
        assert!(refusal(&error).is_some(), "{error}");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        if let Some(target) = &target {
            assert_untouched(target);
        }
    }

    #[test]
    fn proxies_are_never_used() {
        let (proxy, proxy_port) = listen();
        let (listener, port) = listen();
        let hits = serve(listener, OK.to_string());
        let url = format!("http://127.0.0.1:{port}/x");
        let proxy_url = format!("http://127.0.0.1:{proxy_port}");
        let configured = ureq::Proxy::new(&proxy_url).expect("proxy");
        let policy = Arc::new(OutboundPolicy::parse("127.0.0.1").expect("list"));
        // An agent-level proxy (where ureq puts HTTP_PROXY & co) is dropped: the call goes direct.
        let agent = guarded_agent(builder().proxy(Some(configured.clone())), policy);
        assert!(agent.config().proxy().is_none());
        assert_eq!(get_ok(&agent, &url), "ok");
        // A request-level proxy is refused.
        let error = agent
            .get(&url)
            .config()
            .proxy(Some(configured))
            .build()
            .call()
            .expect_err("request-level proxy");
        assert!(refusal(&error).is_some(), "{error}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_untouched(&proxy);
    }

    /// Environment variable telling [`env_proxy_child`] to run, with the target URL.
    const CHILD_TARGET: &str = "OUTBOUND_TEST_CHILD_TARGET";

    #[test]
    fn proxy_environment_variables_are_ignored() {
        // Setting HTTP_PROXY in this process would race with the other tests: a child process
        // (this test binary, running only `env_proxy_child`) gets it instead.
        let (proxy, proxy_port) = listen();
        let (listener, port) = listen();
        let hits = serve(listener, OK.to_string());
        let proxy_url = format!("http://127.0.0.1:{proxy_port}");
        let module = module_path!().split_once("::").map_or("", |(_, path)| path);
        let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([
                "--exact",
                &format!("{module}::env_proxy_child"),
                "--ignored",
            ])
            .args(["--test-threads", "1", "--nocapture"])
            .env(CHILD_TARGET, format!("http://127.0.0.1:{port}/x"));
        for name in ["NO_PROXY", "no_proxy"] {
            command.env_remove(name);
        }
        for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"] {
            command.env(name, &proxy_url);
        }
        let output = command.output().expect("child test");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_untouched(&proxy);
    }

    /// Run by [`proxy_environment_variables_are_ignored`] with proxy variables set.
    #[test]
    #[ignore = "run by proxy_environment_variables_are_ignored"]
    fn env_proxy_child() {
        let Ok(url) = std::env::var(CHILD_TARGET) else {
            return;
        };
        // The plain builder picks the proxy up from the environment ...
        assert!(builder().build().proxy().is_some());
        // ... the guarded agent drops it and goes direct.
        let agent = guarded_agent(
            builder(),
            Arc::new(OutboundPolicy::parse("127.0.0.1").expect("list")),
        );
        assert!(agent.config().proxy().is_none());
        assert_eq!(get_ok(&agent, &url), "ok");
    }
}
