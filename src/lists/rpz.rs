//! RPZ zone files (`format = "rpz"`): the zone's `$ORIGIN`/`$TTL`/SOA preamble and its
//! triggers, as BIND and Unbound read them, turned into rules.

use super::*;

/// RPZ zone-file state carried from line to line (owned: the lines are not kept).
#[derive(Default)]
pub(super) struct Rpz {
    /// Current `$ORIGIN`, without the final dot ("" when unknown).
    origin: String,
    /// The zone's own name, stripped from owners ("" when unknown).
    apex: String,
    /// Last owner name, for records that start with blanks (a reused buffer).
    owner: String,
    has_owner: bool,
    /// Open parentheses: a record spanning lines (SOA).
    parens: usize,
}

impl Rpz {
    pub(super) fn line<F: FnMut(Rule<'_>)>(&mut self, p: &mut Parser<'_, F>, raw: &str) {
        let data = raw.find(';').map_or(raw, |i| &raw[..i]);
        let opens = data.bytes().filter(|&c| c == b'(').count();
        let closes = data.bytes().filter(|&c| c == b')').count();
        if self.parens > 0 {
            self.parens = (self.parens + opens).saturating_sub(closes);
            return;
        }
        let line = data.trim_ascii();
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        self.parens = opens.saturating_sub(closes);
        let continued = data.starts_with([' ', '\t']);
        let mut fields = line.split_ascii_whitespace();
        let owner = if continued {
            if !self.has_owner {
                return p.skip(SkipReason::Unrecognised);
            }
            None
        } else {
            let owner = fields.next().unwrap_or_default();
            if owner.starts_with('$') {
                return self.directive(p, owner, fields.next());
            }
            self.owner.clear();
            self.owner.push_str(owner);
            self.has_owner = true;
            Some(owner)
        };
        let owner = owner.unwrap_or(&self.owner);
        // TTL and class come in either order before the type.
        let Some(rtype) = fields.find(|f| {
            !(f.as_bytes()[0].is_ascii_digit()
                || ["IN", "CH", "HS", "CS", "ANY"]
                    .iter()
                    .any(|c| f.eq_ignore_ascii_case(c)))
        }) else {
            return p.skip(SkipReason::Unrecognised);
        };
        let is_soa = rtype.eq_ignore_ascii_case("SOA");
        if is_soa || rtype.eq_ignore_ascii_case("NS") {
            if is_soa && self.apex.is_empty() && owner.len() > 1 && owner.ends_with('.') {
                self.apex = owner[..owner.len() - 1].to_string();
                if self.origin.is_empty() {
                    self.origin.clone_from(&self.apex);
                }
            }
            p.stats.ignored += 1;
            return;
        }
        if !rtype.eq_ignore_ascii_case("CNAME") {
            return p.skip(SkipReason::UnsupportedAction);
        }
        let action = match fields.next() {
            Some("." | "*.") => RuleAction::Block,
            Some(t) if t.eq_ignore_ascii_case("rpz-drop.") => RuleAction::Block,
            Some(t) if t.eq_ignore_ascii_case("rpz-passthru.") => RuleAction::Allow,
            Some(_) => return p.skip(SkipReason::UnsupportedAction),
            None => return p.skip(SkipReason::Unrecognised),
        };
        self.trigger(p, action, owner);
    }

    pub(super) fn directive<F: FnMut(Rule<'_>)>(
        &mut self,
        p: &mut Parser<'_, F>,
        name: &str,
        arg: Option<&str>,
    ) {
        if name.eq_ignore_ascii_case("$TTL") && arg.is_some() {
            p.stats.ignored += 1;
        } else if name.eq_ignore_ascii_case("$ORIGIN") && arg.is_some() {
            let origin = arg.unwrap_or_default();
            self.origin = origin.strip_suffix('.').unwrap_or(origin).to_string();
            if self.apex.is_empty() {
                self.apex.clone_from(&self.origin);
            }
            p.stats.ignored += 1;
        } else {
            // `$INCLUDE` would read another file; `$GENERATE` is not used by RPZ feeds.
            p.skip(SkipReason::Unrecognised);
        }
    }

    pub(super) fn trigger<F: FnMut(Rule<'_>)>(
        &self,
        p: &mut Parser<'_, F>,
        action: RuleAction,
        owner: &str,
    ) {
        let (subdomains, base) = match owner.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, owner),
        };
        let name: Cow<'_, str> = if let Some(abs) = base.strip_suffix('.') {
            Cow::Borrowed(abs)
        } else if base == "@" {
            Cow::Borrowed(&self.origin)
        } else if self.origin.eq_ignore_ascii_case(&self.apex) {
            // The common case: relative to the zone, so already the trigger.
            return rpz_trigger(p, action, base, subdomains);
        } else {
            Cow::Owned(format!("{base}.{}", self.origin))
        };
        let Some(trigger) = strip_zone(&name, &self.apex) else {
            // The apex itself is no trigger.
            return p.skip(SkipReason::Unrecognised);
        };
        rpz_trigger(p, action, trigger, subdomains);
    }
}

/// Emits an RPZ trigger, unless it is one a DNS server answering by name cannot use.
pub(super) fn rpz_trigger<F: FnMut(Rule<'_>)>(
    p: &mut Parser<'_, F>,
    action: RuleAction,
    trigger: &str,
    subdomains: bool,
) {
    let last = trigger.rsplit('.').next().unwrap_or_default();
    if ["rpz-ip", "rpz-nsip", "rpz-nsdname", "rpz-client-ip"]
        .iter()
        .any(|t| last.eq_ignore_ascii_case(t))
    {
        return p.skip(SkipReason::UnsupportedTrigger);
    }
    p.domain(action, trigger, subdomains);
}

/// `name` relative to the zone `apex`: `None` for the apex itself, `name` unchanged when outside
/// the zone (a feed without `$ORIGIN` whose owners are absolute).
pub(super) fn strip_zone<'n>(name: &'n str, apex: &str) -> Option<&'n str> {
    if apex.is_empty() {
        return (!name.is_empty()).then_some(name);
    }
    let (n, a) = (name.as_bytes(), apex.as_bytes());
    if n.eq_ignore_ascii_case(a) {
        return None;
    }
    if n.len() > a.len()
        && n[n.len() - a.len() - 1] == b'.'
        && n[n.len() - a.len()..].eq_ignore_ascii_case(a)
    {
        // The byte before the apex is `.`, so this is a char boundary.
        return Some(&name[..n.len() - a.len() - 1]);
    }
    Some(name)
}
