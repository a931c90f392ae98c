//! Answers telesink makes itself, as hickory records: the sinkhole answer, negative answers with
//! a synthetic SOA, and the Extended DNS Errors (RFC 8914) that say why. The shapes (SOA fields,
//! EDE codes, [`Sinkhole`]) are shared with the direct encoder ([`super::encode_wire`]), which
//! writes the same answers as bytes. No `config` here: the block mode arrives as a [`Sinkhole`].

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// RFC 8914 info codes telesink uses.
pub mod ede {
    pub const STALE_ANSWER: u16 = 3;
    pub const DNSSEC_BOGUS: u16 = 6;
    pub const BLOCKED: u16 = 15;
    pub const PROHIBITED: u16 = 18;
    pub const NOT_READY: u16 = 14;
    pub const NETWORK_ERROR: u16 = 23;
}

/// The sinkhole answer's kind (`blocking.mode`, converted at the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sinkhole {
    /// `0.0.0.0` for A, `::` for AAAA, NODATA for the rest.
    Null,
    /// NXDOMAIN with an SOA.
    NxDomain,
    /// REFUSED.
    Refused,
}

/// An answer before encoding.
#[derive(Debug, Clone)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// Extended DNS Error: info code and text (sent only when the query had EDNS). Shared, so
    /// that the text of a block, made once per list, costs no allocation per query.
    pub ede: Option<(u16, Arc<str>)>,
    /// DNSSEC-validated as secure: the AD bit, for clients that asked with DO or AD.
    pub authentic: bool,
}

impl Reply {
    pub fn rcode(rcode: ResponseCode) -> Reply {
        Reply {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            ede: None,
            authentic: false,
        }
    }

    pub fn with_ede(mut self, code: u16, text: impl Into<Arc<str>>) -> Reply {
        self.ede = Some((code, text.into()));
        self
    }
}

/// The synthetic SOA's fields (the direct path in `wire` writes the same).
pub const SOA_MNAME: &str = "telesink.";
pub const SOA_RNAME: &str = "hostmaster.telesink.";
pub const SOA_SERIAL: u32 = 1;
/// Refresh, retry, expire.
pub const SOA_TIMERS: (i32, i32, i32) = (3600, 600, 86400);

/// A synthetic SOA for `zone`, whose minimum (the negative-caching TTL) is `ttl`.
pub fn soa(zone: &Name, ttl: u32) -> Record {
    let mut zone = zone.clone();
    zone.set_fqdn(true);
    let mname = Name::from_ascii(SOA_MNAME).expect("valid");
    let rname = Name::from_ascii(SOA_RNAME).expect("valid");
    let (refresh, retry, expire) = SOA_TIMERS;
    Record::from_rdata(
        zone,
        ttl,
        RData::SOA(SOA::new(
            mname, rname, SOA_SERIAL, refresh, retry, expire, ttl,
        )),
    )
}

/// NOERROR with no answer and an SOA in the authority section.
pub fn nodata(zone: &Name, ttl: u32) -> Reply {
    let mut r = Reply::rcode(ResponseCode::NoError);
    r.authorities.push(soa(zone, ttl));
    r
}

/// NXDOMAIN with an SOA in the authority section.
pub fn nxdomain(zone: &Name, ttl: u32) -> Reply {
    let mut r = Reply::rcode(ResponseCode::NXDomain);
    r.authorities.push(soa(zone, ttl));
    r
}

/// The sinkhole answer for `name`/`qtype` in `mode`: the same for every query type, never a
/// forwarded one.
pub fn blocked(name: &Name, qtype: RecordType, mode: Sinkhole, ttl: u32) -> Reply {
    match mode {
        Sinkhole::Refused => Reply::rcode(ResponseCode::Refused),
        Sinkhole::NxDomain => nxdomain(name, ttl),
        Sinkhole::Null => {
            let rdata = match qtype {
                RecordType::A => Some(RData::A(Ipv4Addr::UNSPECIFIED.into())),
                RecordType::AAAA => Some(RData::AAAA(Ipv6Addr::UNSPECIFIED.into())),
                _ => None,
            };
            match rdata {
                Some(d) => {
                    let mut r = Reply::rcode(ResponseCode::NoError);
                    r.answers.push(Record::from_rdata(name.clone(), ttl, d));
                    r
                }
                None => nodata(name, ttl),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_mode_per_type() {
        let n = Name::from_ascii("tracking.miui.com.").unwrap();
        let a = blocked(&n, RecordType::A, Sinkhole::Null, 10);
        assert_eq!(a.answers[0].data, RData::A(Ipv4Addr::UNSPECIFIED.into()));
        assert_eq!(a.answers[0].ttl, 10);
        let aaaa = blocked(&n, RecordType::AAAA, Sinkhole::Null, 10);
        assert_eq!(
            aaaa.answers[0].data,
            RData::AAAA(Ipv6Addr::UNSPECIFIED.into())
        );
        for t in [
            RecordType::HTTPS,
            RecordType::MX,
            RecordType::TXT,
            RecordType::ANY,
        ] {
            let r = blocked(&n, t, Sinkhole::Null, 10);
            assert_eq!(r.rcode, ResponseCode::NoError);
            assert!(r.answers.is_empty());
            match &r.authorities[0].data {
                RData::SOA(s) => assert_eq!(s.minimum, 10),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn nxdomain_and_refused_modes() {
        let n = Name::from_ascii("x.example.").unwrap();
        let r = blocked(&n, RecordType::A, Sinkhole::NxDomain, 7);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert_eq!(r.authorities.len(), 1);
        let r = blocked(&n, RecordType::A, Sinkhole::Refused, 7);
        assert_eq!(r.rcode, ResponseCode::Refused);
        assert!(r.authorities.is_empty());
    }
}
