//! The general encoder: a decision written through hickory's message types, for everything the
//! direct encoder ([`super::encode_wire`]) does not take (local answers, bypass defences, `ANY`,
//! forwarded and stale answers, answers that must be truncated, queries of uncommon shapes).
//! Each function makes the [`Reply`] of one kind of answer; [`send`] encodes and sends it with
//! the question echoed and the EDNS OPT (with the Extended DNS Error) when the query had one.

use std::time::Instant;

use hickory_proto::op::{Edns, Metadata, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecoder;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use super::answer::{self, ede, Reply};
use super::cache::Entry;
use super::decision::{sinkhole, Bypass, Refusal};
use super::upstream::{ForwardError, UpstreamAnswer};
use crate::policy::local::LocalAnswer;
use crate::policy::{Policy, Verdict};

/// TTL of stale answers (RFC 8767 recommends 30 s).
pub const STALE_TTL: u32 = 30;
/// TTL of the synthesized answer to `ANY` (RFC 8482 leaves it to the operator).
const ANY_TTL: u32 = 3600;

/// REFUSED with the reason as Extended DNS Error 18 (Prohibited).
pub fn refused(why: Refusal) -> Reply {
    Reply::rcode(ResponseCode::Refused).with_ede(ede::PROHIBITED, why.text())
}

/// The local zones' answer: records, NODATA or NXDOMAIN with the zone's SOA; authoritative.
pub fn local(policy: &Policy, name: &LowerName, qtype: RecordType) -> Reply {
    let ttl = policy.blocking.ttl;
    // The decision saw the name covered by a local zone; the zone's own lookup agrees unless
    // two names' hashes collide, and then the name is its own zone.
    let answer = policy
        .local
        .answer(name, qtype)
        .unwrap_or_else(|| LocalAnswer::NxDomain {
            zone: Name::from(name.clone()),
        });
    let mut reply = match answer {
        LocalAnswer::Records(records) => {
            let mut r = Reply::rcode(ResponseCode::NoError);
            r.answers = records;
            r
        }
        LocalAnswer::NoData { zone } => answer::nodata(&zone, ttl),
        LocalAnswer::NxDomain { zone } => answer::nxdomain(&zone, ttl),
    };
    reply.authoritative = true;
    reply
}

/// The sinkhole answer for a block by the lists (or by cloaking), with EDE 15 naming them.
pub fn blocked(policy: &Policy, name: &LowerName, qtype: RecordType, verdict: &Verdict) -> Reply {
    let settings = policy.blocking;
    let reply = answer::blocked(
        &Name::from(name.clone()),
        qtype,
        sinkhole(settings.mode),
        settings.ttl,
    );
    reply.with_ede(ede::BLOCKED, policy.block_text(verdict))
}

/// The sinkhole answer of rebinding protection, with EDE 15 saying why.
pub fn rebind(policy: &Policy, name: &LowerName, qtype: RecordType) -> Reply {
    let settings = policy.blocking;
    let reply = answer::blocked(
        &Name::from(name.clone()),
        qtype,
        sinkhole(settings.mode),
        settings.ttl,
    );
    reply.with_ede(ede::BLOCKED, super::rebind::TEXT)
}

/// A bypass defence's answer: NXDOMAIN or NODATA with an SOA for the name itself.
pub fn bypass(policy: &Policy, name: &LowerName, rule: Bypass) -> Reply {
    let ttl = policy.blocking.ttl;
    let zone = Name::from(name.clone());
    let reply = match rule {
        Bypass::NxDomain => answer::nxdomain(&zone, ttl),
        Bypass::NoData => answer::nodata(&zone, ttl),
    };
    reply.with_ede(ede::BLOCKED, "bypass defence (category bypass)")
}

/// RFC 8482 §4.2: `ANY` for a name that is neither local nor blocked gets one synthesized
/// `HINFO "RFC8482" ""` record instead of everything the upstream holds, so that telesink cannot
/// amplify a spoofed query, over UDP or TCP.
pub fn minimal_any(name: &LowerName) -> Reply {
    let mut reply = Reply::rcode(ResponseCode::NoError);
    reply.answers.push(Record::from_rdata(
        Name::from(name.clone()),
        ANY_TTL,
        RData::HINFO(HINFO::new("RFC8482".to_string(), String::new())),
    ));
    reply
}

/// A cached answer, its TTLs lowered by its age; a stale one gets [`STALE_TTL`] and EDE 3.
pub fn cached(entry: &Entry, now: Instant, stale: bool) -> Reply {
    let age = entry.age(now);
    let a = entry.answer();
    let adjust = |records: &[Record]| {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.ttl = if stale {
                    STALE_TTL
                } else {
                    r.ttl.saturating_sub(age)
                };
                r
            })
            .collect()
    };
    let mut reply = Reply::rcode(a.rcode);
    reply.answers = adjust(&a.answers);
    reply.authorities = adjust(&a.authorities);
    reply.additionals = adjust(&a.additionals);
    // A stale answer was validated once, not now: no AD.
    reply.authentic = a.validation.is_secure() && !stale;
    if stale {
        reply.with_ede(ede::STALE_ANSWER, "upstreams unreachable; stale answer")
    } else {
        reply
    }
}

/// An upstream's answer as it came.
pub fn forwarded(answer: UpstreamAnswer) -> Reply {
    let mut reply = Reply::rcode(answer.rcode);
    reply.answers = answer.answers;
    reply.authorities = answer.authorities;
    reply.additionals = answer.additionals;
    reply.authentic = answer.validation.is_secure();
    reply
}

/// SERVFAIL when every upstream failed, with EDE 23 (Network Error) saying how.
/// A DNSSEC-bogus answer gets EDE 6 (DNSSEC Bogus) and the reason instead.
pub fn servfail(e: &ForwardError) -> Reply {
    let code = match e {
        ForwardError::Bogus(_) => ede::DNSSEC_BOGUS,
        _ => ede::NETWORK_ERROR,
    };
    Reply::rcode(ResponseCode::ServFail).with_ede(code, e.to_string())
}

/// Puts the reply's Extended DNS Error into the response's OPT (only when the query had EDNS).
pub fn attach_ede(edns: Option<&mut Edns>, reply: &Reply) {
    if let (Some(e), Some((code, text))) = (edns, &reply.ede) {
        let mut data = Vec::with_capacity(2 + text.len());
        data.extend_from_slice(&code.to_be_bytes());
        data.extend_from_slice(text.as_bytes());
        e.options_mut()
            .insert(EdnsOption::Unknown(u16::from(EdnsCode::Unknown(15)), data));
    }
}

/// Encodes `reply` for `request` (its question echoed) and sends it.
pub async fn send<R: ResponseHandler>(
    handle: &mut R,
    request: &Request,
    metadata: Metadata,
    edns: Option<&Edns>,
    reply: &Reply,
) -> ResponseInfo {
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(e) = edns {
        builder.edns(e);
    }
    let response = builder.build(
        metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty(),
        reply.additionals.iter(),
    );
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "failed to send response");
            let mut metadata = metadata;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        }
    }
}

/// FORMERR with an empty question section: for requests whose question cannot be echoed
/// (undecodable, or compressed into the header).
pub async fn send_formerr<R: ResponseHandler>(handle: &mut R, request: &Metadata) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = ResponseCode::FormErr;
    let queries = Queries::read(&mut BinDecoder::new(&[]), 0).expect("zero queries read");
    let response =
        MessageResponseBuilder::new(&queries, None).error_msg(request, ResponseCode::FormErr);
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "failed to send response");
            ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        }
    }
}

/// Whether the question section, as received, can be echoed: no name in it uses a compression
/// pointer into the 12-byte header (the only place a pointer in the first question can lead).
pub fn question_is_self_contained(question: &[u8]) -> bool {
    let mut i = 0;
    while i < question.len() {
        let b = question[i];
        if b & 0xC0 == 0xC0 {
            let target =
                (usize::from(b & 0x3F) << 8) | usize::from(*question.get(i + 1).unwrap_or(&0));
            if target < 12 {
                return false;
            }
            i += 2 + 4; // the pointer ends the name; then QTYPE and QCLASS
        } else if b == 0 {
            i += 1 + 4;
        } else {
            i += 1 + usize::from(b);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::question_is_self_contained;

    #[test]
    fn question_with_a_pointer_into_the_header_is_not_echoed() {
        // Found by the `request` fuzz target: `c0 02` as the question name.
        assert!(!question_is_self_contained(&[0xc0, 0x02, 0, 1, 0, 1]));
        // A label, then a pointer into the header.
        assert!(!question_is_self_contained(
            b"\x03abc\xc0\x05\x00\x01\x00\x01"
        ));
        // Plain names, and a second question pointing at the first (offset 12), are fine.
        assert!(question_is_self_contained(
            b"\x03abc\x07example\x00\x00\x01\x00\x01"
        ));
        assert!(question_is_self_contained(
            b"\x03abc\x00\x00\x01\x00\x01\xc0\x0c\x00\x1c\x00\x01"
        ));
        assert!(question_is_self_contained(b""));
        // Truncated input never reads past the end.
        assert!(!question_is_self_contained(&[0xc0]));
        assert!(question_is_self_contained(&[0x05, b'a']));
    }
}
