//! DNSSEC validation of upstream answers (`[upstream] dnssec = true`).
//!
//! hickory's `DnssecDnsHandle` wraps each upstream's name-server pool: it asks with the DO bit,
//! fetches the DNSKEYs and DS records the chain needs (from the same upstream), and marks every
//! record with its proof. Here that becomes one verdict per answer: **secure** (every answer
//! record proven: the client gets the AD bit if it asked with DO or AD), **insecure** (passed
//! on as is: an unsigned zone), or **bogus** (SERVFAIL with EDE 6, and the reason).
//!
//! The chain ends at a trust anchor: the IANA root keys built into hickory, or the DNSKEY
//! records of `dnssec_trust_anchor` (a private or test zone's key, trusted for that zone).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use hickory_resolver::net::dnssec::DnssecDnsHandle;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, DnsHandle, NetError};
use hickory_resolver::proto::dnssec::rdata::RRSIG;
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::{DnsRequestOptions, DnsResponse, Query};
use hickory_resolver::proto::rr::{Record, RecordType};
use hickory_resolver::NameServerPool;

/// Where validation chains end.
#[derive(Clone)]
pub struct Anchors(Arc<TrustAnchors>);

impl std::fmt::Debug for Anchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Anchors")
    }
}

impl Anchors {
    /// The IANA root keys (KSK-2017 and KSK-2024) built into hickory.
    pub fn iana_root() -> Anchors {
        Anchors(Arc::new(TrustAnchors::default()))
    }

    /// The DNSKEY records in `path` (zone-file lines: `lab.example.org. IN DNSKEY 257 3 13 …`).
    /// An error names the line that does not parse, when one line alone shows it.
    pub fn from_file(path: &Path) -> Result<Anchors, AnchorError> {
        let text = std::fs::read_to_string(path).map_err(|e| AnchorError {
            line: None,
            message: format!("cannot read it: {e}"),
        })?;
        Anchors::parse(&text)
    }

    /// The IANA root keys and the DNSKEY records of `text`, each trusted for its owner name.
    pub fn parse(text: &str) -> Result<Anchors, AnchorError> {
        use hickory_resolver::proto::dnssec::Verifier;
        use hickory_resolver::proto::serialize::txt::trust_anchor::{Entry, Parser};
        let entries = Parser::new(text).parse().map_err(|e| {
            // Find the line that fails on its own (records spanning lines with
            // parentheses cannot be tried alone).
            let line = text.lines().enumerate().find_map(|(i, l)| {
                let l = l.trim();
                let skip = l.is_empty() || l.starts_with(';') || l.contains(['(', ')']);
                (!skip && Parser::new(l).parse().is_err()).then_some(i + 1)
            });
            AnchorError {
                line,
                message: format!("not DNSKEY records: {e}"),
            }
        })?;
        if entries.is_empty() {
            return Err(AnchorError {
                line: None,
                message: "no DNSKEY record in it; expected lines like \
                    \"lab.example.org. IN DNSKEY 257 3 13 <key>\""
                    .into(),
            });
        }
        // The root keys stay: public names validate as before, the file's zones with its keys.
        let mut anchors = TrustAnchors::default();
        for entry in entries {
            // `Entry` is non-exhaustive: DNSKEY is the only kind today.
            let Entry::DNSKEY(record) = entry else {
                continue;
            };
            let key = record.data().key().map_err(|e| AnchorError {
                line: None,
                message: format!("{}: unusable DNSKEY: {e}", record.name()),
            })?;
            anchors.insert_with_name(&*key, record.name().into());
        }
        Ok(Anchors(Arc::new(anchors)))
    }
}

/// A trust-anchor file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorError {
    /// The file's line at fault, when known.
    pub line: Option<usize>,
    pub message: String,
}

type Responses = Pin<Box<dyn Stream<Item = Result<DnsResponse, NetError>> + Send>>;

/// One upstream's pool, validating or not.
pub enum Pool {
    Plain(NameServerPool<TokioRuntimeProvider>),
    Validating(DnssecDnsHandle<NameServerPool<TokioRuntimeProvider>>),
}

impl Pool {
    /// The pool wrapped in a validator that trusts `anchors`.
    pub fn validating(self, anchors: &Anchors) -> Pool {
        match self {
            Pool::Plain(p) => {
                Pool::Validating(DnssecDnsHandle::with_trust_anchor(p, anchors.0.clone()))
            }
            v => v,
        }
    }

    /// The same, in place.
    pub fn make_validating(&mut self, anchors: &Anchors) {
        if let Pool::Plain(p) = self {
            *self = Pool::Validating(DnssecDnsHandle::with_trust_anchor(
                p.clone(),
                anchors.0.clone(),
            ));
        }
    }

    pub fn lookup(&self, query: Query, options: DnsRequestOptions) -> Responses {
        match self {
            Pool::Plain(p) => Box::pin(p.lookup(query, options)),
            Pool::Validating(v) => Box::pin(v.lookup(query, options)),
        }
    }

    pub fn is_validating(&self) -> bool {
        matches!(self, Pool::Validating(_))
    }
}

/// What validation made of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Not validated (`dnssec = false`).
    Off,
    /// Every answer (or, for a negative answer, its denial) was proven from a trust anchor.
    Secure,
    /// Not signed, or signed under no anchor: passed on without the AD bit.
    Insecure,
}

impl Validation {
    pub fn is_secure(self) -> bool {
        self == Validation::Secure
    }
}

/// The verdict on a validated response: `Err(reason)` when bogus.
pub fn judge(answers: &[Record], authorities: &[Record]) -> Result<Validation, String> {
    let data = |r: &&Record| r.record_type() != RecordType::RRSIG;
    let bogus = answers
        .iter()
        .chain(authorities)
        .filter(data)
        .find(|r| r.proof == Proof::Bogus);
    if let Some(r) = bogus {
        let signed = answers.iter().chain(authorities).any(|s| {
            s.name == r.name
                && s.try_borrow::<RRSIG>()
                    .is_some_and(|sig| sig.data().input().type_covered == r.record_type())
        });
        return Err(if signed {
            format!(
                "{} {} does not verify against its signature",
                r.name,
                r.record_type()
            )
        } else {
            format!(
                "{} {} has no signature, and its zone is not proven unsigned",
                r.name,
                r.record_type()
            )
        });
    }
    let proven: Vec<&Record> = if answers.is_empty() {
        authorities.iter().filter(data).collect()
    } else {
        answers.iter().filter(data).collect()
    };
    if !proven.is_empty() && proven.iter().all(|r| r.proof == Proof::Secure) {
        Ok(Validation::Secure)
    } else {
        Ok(Validation::Insecure)
    }
}

/// Drops the DNSSEC records (signatures, NSEC, NSEC3) a client that did not set DO did not
/// ask for; a query for one of those types keeps its answer.
pub fn strip_unasked(reply: &mut super::answer::Reply, qtype: RecordType) {
    let keep = |r: &Record| {
        let t = r.record_type();
        t == qtype || !matches!(t, RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3)
    };
    for section in [
        &mut reply.answers,
        &mut reply.authorities,
        &mut reply.additionals,
    ] {
        if !section.iter().all(keep) {
            section.retain(keep);
        }
    }
}

/// A validator's error that means "bogus", with its reason; `None` for other failures.
pub fn bogus_reason(e: &NetError) -> Option<String> {
    match e {
        NetError::Dns(DnsError::Nsec { query, proof, .. }) if *proof == Proof::Bogus => {
            Some(format!(
                "the denial of existence for {} {} does not verify",
                query.name(),
                query.query_type()
            ))
        }
        NetError::Dns(DnsError::DnssecBogus) => Some("validation failed".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trust_anchor_file_that_does_not_parse_names_its_line() {
        let good = "example.test. 3600 IN DNSKEY 257 3 13 \
            mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==";
        assert!(
            Anchors::parse(good).is_ok(),
            "{:?}",
            Anchors::parse(good).err()
        );
        let bad = format!("; a comment\n{good}\nexample.test. IN DNSKEY 257 3 13 not-base64!\n");
        let e = Anchors::parse(&bad).unwrap_err();
        assert_eq!(e.line, Some(3), "{e:?}");
        let e = Anchors::parse("; nothing\n").unwrap_err();
        assert!(e.message.contains("no DNSKEY"), "{e:?}");
    }
}
