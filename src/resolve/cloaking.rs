//! CNAME cloaking: a tracker hidden behind a CNAME (or an HTTPS/SVCB target) of an innocent
//! name. An answer whose chain reaches a name the asking client's policy blocks is replaced by
//! the block answer and counted under that name's categories (SPEC "How a query is answered",
//! step 5). One check for every answer that goes out: fresh from an upstream, cached, or stale.
//! The cache keeps each entry's [`targets`], so a hit does not walk the records again.

use hickory_proto::rr::{Name, RData, Record};

use super::wire::dotted;
use crate::policy::category::Action;
use crate::policy::{ClientMatch, Policy, Verdict};

/// The CNAME, HTTPS and SVCB target names in `answers`, lower case (the root, "this name", is
/// left out).
pub fn targets(answers: &[Record]) -> Box<[Name]> {
    answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some(&c.0),
            RData::HTTPS(h) => Some(&h.0.target_name),
            RData::SVCB(s) => Some(&s.target_name),
            _ => None,
        })
        .filter(|t| !t.is_root())
        .map(Name::to_lowercase)
        .collect()
}

/// The question's `verdict` and `action` once the answer's `targets` are taken into account:
/// when a target matches a list, the verdicts merge and the client's group decides again.
/// An action of [`Action::Blocked`] means the answer must be replaced by the block answer (the
/// question itself was not blocked, or it would not have been answered from upstream data).
pub fn inspect(
    policy: &Policy,
    client: ClientMatch,
    verdict: Verdict,
    action: Option<Action>,
    targets: &[Name],
) -> (Verdict, Option<Action>) {
    if targets.is_empty() {
        // Most answers: no chain to check (and no text buffer to clear).
        return (verdict, action);
    }
    let mut chain = Verdict::default();
    let mut buf = [0u8; 256];
    for target in targets {
        let text = dotted(target, &mut buf);
        chain.merge(policy.classify(target.iter(), Some(text.as_bytes())));
    }
    if !chain.matched() {
        return (verdict, action);
    }
    let mut merged = verdict;
    merged.merge(chain);
    let action = policy.action(client, &merged);
    (merged, action)
}
