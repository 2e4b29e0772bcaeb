//! Client addresses: CIDR blocks of trusted proxies.

use ipnet::IpNet;
use std::net::IpAddr;

/// An address block, `ADDR` or `ADDR/BITS` (an [`IpNet`]).
///
/// IPv4 clients seen through an IPv6 socket (`::ffff:a.b.c.d`) are matched
/// as the IPv4 address they are, and so are blocks written that way
/// (`::ffff:10.0.0.0/104` is `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Parses `ADDR` (a single address) or `ADDR/BITS`; host bits after the
    /// prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`). Errors name the
    /// entry and say what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let net = match t.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match t.parse::<IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => return Err(explain(s)),
            },
        };
        Ok(Self(unmap(net).trunc()))
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// An IPv4-mapped IPv6 block (`::ffff:0:0/96` or longer) as the IPv4
/// block it is; any other block unchanged.
fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// Why `s` is not `ADDR` or `ADDR/BITS`.
fn explain(s: &str) -> String {
    let t = s.trim();
    let (addr, bits) = match t.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (t, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return format!("{s:?}: not an IP address (expected ADDR or ADDR/BITS)");
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match bits.map(str::parse::<u8>) {
        Some(Ok(b)) if b > max => {
            format!("{s:?}: prefix longer than the address (at most /{max})")
        }
        _ => format!("{s:?}: bad prefix length (expected /0 to /{max})"),
    }
}

/// The key that identifies one client by its address: an IPv4 address
/// (IPv4-mapped IPv6 addresses `::ffff:a.b.c.d` included) as itself, an
/// IPv6 address by its first `ipv6_prefix` bits (64: one subscriber's
/// allocation). IPv4 keys and IPv6 keys never collide.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            // The prefix, with one bit above the IPv4 range set so that a
            // short prefix (e.g. ::/0) is never an IPv4 key.
            (u128::from(v6) & mask) | 1 << 32 | u128::from(bits) << 40
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys() {
        let k = |s: &str, p| client_key(ip(s), p);
        // IPv6 by its /64 (or the configured prefix).
        assert_eq!(k("2001:db8:1:2::1", 64), k("2001:db8:1:2:ffff::9", 64));
        assert_ne!(k("2001:db8:1:2::1", 64), k("2001:db8:1:3::1", 64));
        assert_eq!(k("2001:db8:1:2::1", 48), k("2001:db8:1:3::1", 48));
        assert_ne!(k("2001:db8:1:2::1", 128), k("2001:db8:1:2::2", 128));
        assert_eq!(k("2001:db8::1", 0), k("2001:db9::1", 0));
        // IPv4-mapped IPv6 is the IPv4 client.
        assert_eq!(k("192.0.2.7", 64), k("::ffff:192.0.2.7", 64));
        assert_ne!(k("192.0.2.7", 64), k("192.0.2.8", 64));
        // No IPv6 prefix collides with an IPv4 address.
        for p in [0, 8, 64, 96, 128] {
            assert_ne!(k("::c000:207", p), k("192.0.2.7", 64));
            assert_ne!(k("::", p), k("0.0.0.0", 64));
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_addresses_and_blocks() {
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert_eq!(one.0.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let c = Cidr::parse(" 10.0.0.0/8 ").unwrap();
        assert!(c.contains(ip("10.255.0.1")) && !c.contains(ip("11.0.0.0")));
        // Host bits are ignored.
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap(), c);
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("2001:db8::1")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let lo6 = Cidr::parse("::1").unwrap();
        assert!(lo6.contains(ip("::1")) && !lo6.contains(ip("127.0.0.1")));
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        assert!(!c.contains(ip("::ffff:11.0.0.1")));
        // A block written in the mapped form is the IPv4 block.
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(mapped, c);
        assert!(mapped.contains(ip("10.9.9.9")) && mapped.contains(ip("::ffff:10.9.9.9")));
        let one = Cidr::parse("::ffff:127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        // Shorter IPv6 blocks stay IPv6 (as before): they match no IPv4 client.
        assert!(!Cidr::parse("::/0").unwrap().contains(ip("10.0.0.1")));
    }

    #[test]
    fn errors_name_the_entry_and_the_problem() {
        for (bad, why) in [
            (
                "10.0.0.0/33",
                "prefix longer than the address (at most /32)",
            ),
            ("::/129", "prefix longer than the address (at most /128)"),
            ("10.0.0.0/x", "bad prefix length (expected /0 to /32)"),
            ("10.0.0.0/", "bad prefix length"),
            ("10.0.0.0/-1", "bad prefix length"),
            ("10.0.0.0/8/8", "bad prefix length"),
            ("10.0.0/8", "not an IP address"),
            ("proxy.internal", "not an IP address"),
            ("", "not an IP address"),
        ] {
            let e = Cidr::parse(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("{bad:?}: ")) && e.contains(why),
                "{e}"
            );
        }
    }
}
