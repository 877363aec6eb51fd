//! CRI-O's insecure-registry decision (`isSecureIndex`): which registry hosts may be reached
//! without TLS verification, from a list of `host[:port]` keys and CIDR networks.
//!
//! Rules (crio-storage-behavior §2.5 and §5.6):
//!
//! * every entry that parses as a CIDR network (`10.0.0.0/8`, `fd00::/8`) is a network; every
//!   other entry is a key matched by exact string against the registry's `host[:port]`, with no
//!   normalisation (`reg:5000` and `reg` are different keys; a bare IP without a mask is a key);
//! * `127.0.0.0/8` and `::1/128` are always insecure (CRI-O appends `127.0.0.0/8`; `::1` is added
//!   here so that IPv6 loopback registries behave like IPv4 ones);
//! * a host is insecure when its exact key is listed, or when any of its addresses lies in an
//!   insecure network.
//!
//! Addresses: [`InsecureRegistries::is_insecure`] does no DNS: an IP literal is its own address,
//! `localhost` resolves to both loopback addresses, and any other name has no address (CRI-O
//! treats unresolvable hosts as secure). Callers that want CRI-O's DNS lookup pass their own
//! resolver to [`InsecureRegistries::is_insecure_with`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network `address/prefix-length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    address: IpAddr,
    prefix_len: u8,
}

impl IpNetwork {
    /// Parses `address/prefix-length` (IPv4 or IPv6); host bits are cleared, as Go's
    /// `net.ParseCIDR` does. `None` when the text is not a CIDR.
    pub fn parse(text: &str) -> Option<IpNetwork> {
        let (addr, len) = text.split_once('/')?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix_len: u8 = len.parse().ok()?;
        let address: IpAddr = addr.parse().ok()?;
        let max = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix_len > max {
            return None;
        }
        Some(IpNetwork {
            address: mask(address, prefix_len),
            prefix_len,
        })
    }

    /// The network address (host bits cleared).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True when `ip` lies in the network. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix_len) == self.address
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

fn mask(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// The configured insecure registries: exact keys and networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsecureRegistries {
    keys: Vec<String>,
    networks: Vec<IpNetwork>,
}

impl Default for InsecureRegistries {
    fn default() -> Self {
        InsecureRegistries::new::<&str>(&[])
    }
}

impl InsecureRegistries {
    /// Classifies `entries` (CIDR → network, anything else → exact key) and adds the loopback
    /// networks `127.0.0.0/8` and `::1/128`.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> InsecureRegistries {
        let mut keys = Vec::new();
        let mut networks = Vec::new();
        let always = ["127.0.0.0/8", "::1/128"];
        for entry in entries.iter().map(AsRef::as_ref).chain(always) {
            match IpNetwork::parse(entry) {
                Some(net) => {
                    if !networks.contains(&net) {
                        networks.push(net);
                    }
                }
                None => {
                    if !keys.iter().any(|k| k == entry) {
                        keys.push(entry.to_owned());
                    }
                }
            }
        }
        InsecureRegistries { keys, networks }
    }

    /// The exact `host[:port]` keys.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The insecure networks, loopback included.
    pub fn networks(&self) -> &[IpNetwork] {
        &self.networks
    }

    /// Is `registry` (`host[:port]`, e.g. a reference's domain) insecure? Without DNS: see the
    /// module docs.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.is_insecure_with(registry, |host| {
            if host.eq_ignore_ascii_case("localhost") {
                vec![
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ]
            } else {
                Vec::new()
            }
        })
    }

    /// Is `registry` insecure, looking host names up with `resolve` (IP literals are never
    /// passed to it)?
    pub fn is_insecure_with<F>(&self, registry: &str, resolve: F) -> bool
    where
        F: FnOnce(&str) -> Vec<IpAddr>,
    {
        if self.keys.iter().any(|k| k == registry) {
            return true;
        }
        let host = split_host(registry);
        let addresses = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => resolve(host),
        };
        addresses
            .into_iter()
            .any(|ip| self.networks.iter().any(|net| net.contains(ip)))
    }
}

/// The host part of `host[:port]`, `[v6]:port`, `[v6]` or a bare IPv6 literal.
fn split_host(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, _)) => host,
            None => registry,
        };
    }
    match registry.matches(':').count() {
        1 => registry.split(':').next().unwrap_or(registry),
        _ => registry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("192.168.1.7/32", Some("192.168.1.7/32")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("fd00::1/8", Some("fd00::/8")),
            ("::1/128", Some("::1/128")),
            ("::/0", Some("::/0")),
            ("10.0.0.0/33", None),
            ("fd00::/129", None),
            ("10.0.0.0", None),
            ("10.0.0.0/", None),
            ("10.0.0.0/+8", None),
            ("10.0.0.0/0008", None),
            ("reg.example.com/8", None),
            ("/8", None),
            ("", None),
        ];
        for (input, expected) in cases {
            let got = IpNetwork::parse(input).map(|n| n.to_string());
            assert_eq!(got.as_deref(), *expected, "{input}");
        }
    }

    #[test]
    fn insecure_decision_table() {
        let insecure = InsecureRegistries::new(&[
            "reg.example.com:5000",
            "plain.example.com",
            "10.0.0.0/8",
            "fd00::/8",
            "192.168.1.1",
        ]);
        let cases: &[(&str, bool)] = &[
            ("reg.example.com:5000", true),
            ("reg.example.com", false),
            ("reg.example.com:5001", false),
            ("plain.example.com", true),
            ("plain.example.com:443", false),
            ("10.1.2.3", true),
            ("10.1.2.3:5000", true),
            ("11.1.2.3:5000", false),
            ("192.168.1.1", true),
            ("192.168.1.1:5000", false),
            ("127.0.0.1", true),
            ("127.0.0.1:5000", true),
            ("127.255.0.9:80", true),
            ("128.0.0.1", false),
            ("localhost", true),
            ("localhost:5000", true),
            ("[::1]:5000", true),
            ("::1", true),
            ("[fd00::5]:443", true),
            ("[fe80::1]:443", false),
            ("[::ffff:127.0.0.1]:5000", true),
            ("docker.io", false),
            ("", false),
            ("[", false),
            (":::", false),
        ];
        for (registry, expected) in cases {
            assert_eq!(insecure.is_insecure(registry), *expected, "{registry}");
        }
    }

    #[test]
    fn loopback_always_insecure_and_resolver_used() {
        let none = InsecureRegistries::default();
        assert!(none.is_insecure("127.0.0.1:5000"));
        assert!(!none.is_insecure("example.com"));
        assert!(none.is_insecure_with("example.com", |h| {
            assert_eq!(h, "example.com");
            vec!["127.0.0.2".parse().unwrap()]
        }));
        assert!(!none.is_insecure_with("example.com:443", |_| vec!["8.8.8.8".parse().unwrap()]));
        // A CIDR entry is not a key, and keys are not deduplicated into networks.
        let net = InsecureRegistries::new(&["10.0.0.0/8", "10.0.0.0/8", "k", "k"]);
        assert_eq!(net.keys(), ["k"]);
        assert_eq!(net.networks().len(), 3);
    }
}
