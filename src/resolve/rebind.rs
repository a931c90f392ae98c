//! DNS rebinding protection (`[upstream] rebind_protection`): a public name whose upstream
//! answer holds a private, loopback, link-local or unspecified address gets the block answer,
//! counted under the built-in category `rebind`. That is how a web page turns a visitor's
//! browser against the devices on their network (the router's admin page, a printer, a camera).
//!
//! The addresses are looked at once, when an answer arrives from an upstream; the cache entry
//! keeps the finding ([`super::cache::Entry::private`]), so a hit costs one flag. Whether the
//! name is exempt (a `[[forward]]` name, an `[allow]` exception) is decided per query, since a
//! reload may change it; `[[record]]`s are answered locally and never get here.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{RData, Record};

/// The EDE text of a rebinding block (info code 15, Blocked).
pub const TEXT: &str = "rebinding protection: a public name answered with a private address \
                        (category rebind)";

/// Whether `answers` hold an A or AAAA record a public name should never have.
pub fn holds_private(answers: &[Record]) -> bool {
    answers.iter().any(|r| match &r.data {
        RData::A(a) => private_v4(a.0),
        RData::AAAA(a) => private_v6(a.0),
        _ => false,
    })
}

/// RFC 1918, loopback, link local (RFC 3927), "this network" and unspecified (0.0.0.0/8: a
/// browser connects 0.0.0.0 to the machine itself). Not the shared address space 100.64/10:
/// VPNs such as Tailscale publish their hosts' addresses there in public DNS on purpose.
pub(crate) fn private_v4(ip: Ipv4Addr) -> bool {
    ip.is_private() || ip.is_loopback() || ip.is_link_local() || ip.octets()[0] == 0
}

/// Loopback, unspecified, unique local (fc00::/7), link local (fe80::/10), and IPv4-mapped
/// addresses of the private IPv4 ranges.
pub(crate) fn private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return private_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback() || ip.is_unspecified() || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    fn a(ip: &str) -> Record {
        let name = Name::from_ascii("x.example.").unwrap();
        match ip.parse().unwrap() {
            std::net::IpAddr::V4(v4) => Record::from_rdata(name, 60, RData::A(v4.into())),
            std::net::IpAddr::V6(v6) => Record::from_rdata(name, 60, RData::AAAA(v6.into())),
        }
    }

    #[test]
    fn private_loopback_link_local_and_unspecified_addresses_are_caught() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.178.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fc12::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(holds_private(&[a(ip)]), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "192.0.2.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.64.0.1",
            "2001:db8::1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!holds_private(&[a(ip)]), "{ip}");
        }
        assert!(!holds_private(&[]));
    }
}
