//! Discovery of Designated Resolvers (RFC 9462): with `server.ddr` and an encrypted listener,
//! `_dns.resolver.arpa` SVCB names telesink's own DoT and DoH (RFC 9461: alpn, port, dohpath),
//! so that Windows 11, iOS and Android upgrade to encrypted DNS with telesink instead of
//! leaving it. Without one, the bypass defence's NODATA stays ([`super::decision`]).

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::rdata::svcb::{Alpn, IpHint, SvcParamKey, SvcParamValue, Unknown, SVCB};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::answer::{self, Reply};

/// The name DDR asks for, lower case without the trailing dot.
pub const NAME: &str = "_dns.resolver.arpa";

/// RFC 9461's `dohpath` SvcParamKey.
const DOHPATH: u16 = 7;

/// The SVCB records `_dns.resolver.arpa` is answered with.
#[derive(Debug, Clone)]
pub struct Ddr {
    records: Vec<SVCB>,
}

impl Ddr {
    /// The records for DoT on `dot` and DoH on `doh` (one per port), with `tls_name` as their
    /// target; `None` when both are empty.
    pub fn new(tls_name: &str, dot: &[SocketAddr], doh: &[SocketAddr]) -> Option<Ddr> {
        let target = Name::from_ascii(format!("{tls_name}.")).ok()?;
        let mut records = Vec::new();
        let mut priority = 1u16;
        for (listeners, alpn, path) in [(dot, "dot", None), (doh, "h2", Some("/dns-query{?dns}"))] {
            let mut ports: Vec<u16> = listeners.iter().map(|a| a.port()).collect();
            ports.dedup();
            ports.sort_unstable();
            ports.dedup();
            for port in ports {
                let mut params = vec![
                    (
                        SvcParamKey::Alpn,
                        SvcParamValue::Alpn(Alpn(vec![alpn.to_string()])),
                    ),
                    (SvcParamKey::Port, SvcParamValue::Port(port)),
                ];
                // Hints only for addresses devices can use: not the wildcard.
                let on_port = || {
                    listeners
                        .iter()
                        .filter(move |a| a.port() == port && !a.ip().is_unspecified())
                        .map(|a| a.ip())
                };
                let v4: Vec<A> = on_port()
                    .filter_map(|ip| match ip {
                        IpAddr::V4(v) => Some(A(v)),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                let v6: Vec<AAAA> = on_port()
                    .filter_map(|ip| match ip {
                        IpAddr::V6(v) => Some(AAAA(v)),
                        IpAddr::V4(_) => None,
                    })
                    .collect();
                if !v4.is_empty() {
                    params.push((SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(v4))));
                }
                if !v6.is_empty() {
                    params.push((SvcParamKey::Ipv6Hint, SvcParamValue::Ipv6Hint(IpHint(v6))));
                }
                if let Some(p) = path {
                    params.push((
                        SvcParamKey::Unknown(DOHPATH),
                        SvcParamValue::Unknown(Unknown(p.as_bytes().to_vec())),
                    ));
                }
                records.push(SVCB::new(priority, target.clone(), params));
                priority += 1;
            }
        }
        (!records.is_empty()).then_some(Ddr { records })
    }

    /// The answer to `_dns.resolver.arpa` of type `qtype`: the SVCB records, NODATA for any
    /// other type.
    pub fn reply(&self, name: &LowerName, qtype: RecordType, ttl: u32) -> Reply {
        let owner = Name::from(name.clone());
        if qtype != RecordType::SVCB {
            return answer::nodata(&owner, ttl);
        }
        let mut r = Reply::rcode(hickory_proto::op::ResponseCode::NoError);
        r.authoritative = true;
        r.answers = self
            .records
            .iter()
            .map(|s| Record::from_rdata(owner.clone(), ttl, RData::SVCB(s.clone())))
            .collect();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_for_each_listener_port_with_specific_hints() {
        let dot: Vec<SocketAddr> =
            vec!["0.0.0.0:853".parse().unwrap(), "[::]:853".parse().unwrap()];
        let doh: Vec<SocketAddr> = vec!["192.168.1.2:443".parse().unwrap()];
        let d = Ddr::new("dns.home.example", &dot, &doh).unwrap();
        assert_eq!(d.records.len(), 2);
        let text: Vec<String> = d.records.iter().map(|r| r.to_string()).collect();
        assert!(
            text[0].contains("dns.home.example.") && text[0].contains("dot"),
            "{text:?}"
        );
        assert!(!text[0].contains("ipv4hint"), "{text:?}");
        assert!(
            text[1].contains("h2") && text[1].contains("192.168.1.2"),
            "{text:?}"
        );
        assert!(Ddr::new("dns.home.example", &[], &[]).is_none());
    }
}
