//! The policy: everything a query's answer depends on, built from a [`PolicySpec`] (the config,
//! converted at its edge) and the lists in one go and then never changed. A reload builds a new
//! `Policy` beside the old one and swaps the pointer (see `reload`), so the query path never
//! sees a half-built policy and takes no lock to read it.

pub mod category;
pub mod local;
pub mod matcher;
pub mod reason;
pub mod schedule;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use regex::bytes::RegexSet;

use crate::devices::Mac;
use crate::lists::{
    self, Format, ListSource, ListSpec, ParseOptions, ParseStats, Pattern, RuleAction,
};
use crate::policy::category::{Action, Category, CategorySet, CategoryTable, BYPASS, REBIND};
use crate::policy::local::LocalRecord;
use crate::policy::local::LocalZone;
use crate::policy::matcher::{DomainMatcher, Hits, ListId, MatcherBuilder, NameHashes, Scope};

/// Everything a policy is built from, in the policy's own terms. The configuration converts
/// into it at the edge (`Config::policy_spec`), so the policy never depends on the file's shape.
#[derive(Clone, Debug)]
pub struct PolicySpec {
    /// Every category, in the order they are numbered (`bypass` included).
    pub categories: Vec<String>,
    /// The block lists (`[[list]]`), in order: the first that matches names the block.
    pub lists: Vec<ListSpec>,
    /// Lists whose every rule is an exception (`[allow] lists`).
    pub allow_lists: Vec<ListSource>,
    /// Names never blocked, with their subdomains (normalised).
    pub allow_domains: Vec<String>,
    pub clients: Vec<ClientSpec>,
    /// In order: a client's first group wins.
    pub groups: Vec<GroupSpec>,
    /// The categories blocked and observed for clients in no group.
    pub default_block: Vec<String>,
    pub default_observe: Vec<String>,
    pub blocking: BlockSettings,
    /// Names answered locally.
    pub records: Vec<LocalRecord>,
    /// Where downloaded URL lists are cached.
    pub state_dir: PathBuf,
}

/// A named client: its addresses (or networks) and MACs.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub name: String,
    pub addresses: Vec<IpNet>,
    pub macs: Vec<Mac>,
}

/// A policy group: who is in it, and what it blocks and observes.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    pub name: String,
    pub clients: Vec<ClientRef>,
    pub block: Vec<String>,
    pub observe: Vec<String>,
    /// `[[group.schedule]]`: more categories while a window of local time is open.
    pub schedules: Vec<schedule::ScheduleSpec>,
}

/// A group member: a named client or an address range.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientRef {
    /// The name of a `[[client]]` (checked to exist).
    Name(String),
    /// An address (as a /32 or /128) or a CIDR.
    Net(IpNet),
}

/// Lists get one bit ("slot") each in the matcher's hit masks.
const SLOTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("list \"{list}\": cannot read {path}: {source}")]
    ReadList {
        list: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("list \"{list}\": {message}")]
    List { list: String, message: String },
    #[error("{0}")]
    Config(String),
}

/// Where a list's rules came from, for `check`, `explain` and the metrics.
#[derive(Debug, Clone)]
pub struct ListInfo {
    pub id: ListId,
    pub name: Arc<str>,
    /// The path or URL as configured.
    pub source: String,
    /// The file actually read (for URL lists, the cached copy), if any.
    pub path: Option<PathBuf>,
    pub categories: CategorySet,
    pub kind: ListKind,
    pub format: Format,
    pub subdomains: bool,
    pub stats: ParseStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// A `[[list]]`: its rules block (adblock `@@` rules in it are exceptions).
    Block,
    /// `[allow] lists` or `[allow] domains`: every rule is an exception.
    Allow,
}

/// A client's resolved identity and policy group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientMatch {
    /// Index into the configured clients.
    pub client: Option<ClientId>,
    /// Index into the groups; `None` is `[default]`.
    pub group: Option<GroupId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(pub u32);

#[derive(Debug)]
pub struct Client {
    pub name: Arc<str>,
    pub addresses: Vec<IpNet>,
}

#[derive(Debug)]
pub struct Group {
    pub name: Arc<str>,
    pub block: CategorySet,
    pub observe: CategorySet,
    /// Its `[[group.schedule]]`s and which are open now.
    pub schedules: schedule::Schedules,
    client_ids: Vec<ClientId>,
    nets: Vec<IpNet>,
}

/// What the lists say about a name, before the client's group is considered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every category whose lists name the query name or a parent.
    pub categories: CategorySet,
    /// An allow exception matched.
    pub exception: bool,
    /// The first list (in config order) whose block rule matched.
    pub list: Option<ListId>,
}

impl Verdict {
    pub fn merge(&mut self, other: Verdict) {
        self.categories = self.categories.union(other.categories);
        self.exception |= other.exception;
        if self.list.is_none() {
            self.list = other.list;
        }
    }

    pub fn matched(&self) -> bool {
        !self.categories.is_empty() || self.exception
    }
}

/// How blocked queries are answered (`blocking.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockMode {
    /// A 0.0.0.0, AAAA ::, other types NOERROR with no answer.
    Null,
    Nxdomain,
    Refused,
}

impl BlockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockMode::Null => "null",
            BlockMode::Nxdomain => "nxdomain",
            BlockMode::Refused => "refused",
        }
    }
}

/// How blocked queries are answered.
#[derive(Debug, Clone, Copy)]
pub struct BlockSettings {
    pub mode: BlockMode,
    pub ttl: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    categories: CategorySet,
    first_list: Option<ListId>,
}

struct RegexRules {
    set: RegexSet,
    /// Per pattern: slot and whether it is an exception.
    rules: Vec<(u8, bool)>,
}

pub struct Policy {
    /// Shared with the query-log rows of this generation, which name their categories late.
    pub categories: Arc<CategoryTable>,
    pub lists: Vec<ListInfo>,
    pub clients: Vec<Client>,
    pub groups: Vec<Group>,
    pub default_block: CategorySet,
    pub default_observe: CategorySet,
    pub local: LocalZone,
    pub blocking: BlockSettings,
    /// The built-in `bypass` category.
    pub bypass: Category,
    /// The built-in `rebind` category (rebinding protection).
    pub rebind: Category,
    pub built_in: Duration,
    allow_domains: Vec<String>,
    matcher: DomainMatcher,
    regex: Option<RegexRules>,
    slots: [Slot; SLOTS],
    client_by_addr: std::collections::HashMap<IpAddr, ClientId>,
    client_nets: Vec<(IpNet, ClientId)>,
    /// `[[client]] macs`: the device behind every address the neighbour table maps to one.
    client_by_mac: std::collections::HashMap<crate::devices::Mac, ClientId>,
    /// Per list: the EDE text of a block by that list alone, made once.
    block_texts: Vec<Arc<str>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("lists", &self.lists.len())
            .field("names", &self.matcher.len())
            .finish()
    }
}

impl Policy {
    /// Reads every list the spec names and builds the policy.
    pub fn build(spec: &PolicySpec) -> Result<Policy, PolicyError> {
        let started = Instant::now();
        let mut categories = CategoryTable::new();
        for name in &spec.categories {
            categories.intern(name).ok_or_else(|| {
                PolicyError::Config(format!(
                    "more than {} categories; merge some",
                    crate::policy::category::MAX_CATEGORIES
                ))
            })?;
        }
        let bypass = categories
            .intern(BYPASS)
            .ok_or_else(|| PolicyError::Config("too many categories".into()))?;
        let rebind = categories
            .intern(REBIND)
            .ok_or_else(|| PolicyError::Config("too many categories".into()))?;

        let mut builder = MatcherBuilder::new();
        let mut regexes: Vec<(String, u8, bool)> = Vec::new();
        let mut slots = [Slot::default(); SLOTS];
        let mut slot_keys: Vec<(CategorySet, ListKind)> = Vec::new();
        let mut lists = Vec::new();

        let mut sources: Vec<(String, ListSource, CategorySet, ListKind, Format, bool)> =
            Vec::new();
        for l in &spec.lists {
            let mut cats = CategorySet::EMPTY;
            for c in &l.categories {
                cats.insert(categories.intern(c).expect("interned above"));
            }
            let format: Format = l.format;
            sources.push((
                l.name.clone(),
                l.source.clone(),
                cats,
                ListKind::Block,
                format,
                l.subdomains,
            ));
        }
        for (i, src) in spec.allow_lists.iter().enumerate() {
            sources.push((
                format!("allow-{}", i + 1),
                src.clone(),
                CategorySet::EMPTY,
                ListKind::Allow,
                Format::Auto,
                true,
            ));
        }

        for (name, source, cats, kind, format, subdomains) in sources {
            let id = ListId(lists.len() as u16);
            let slot =
                assign_slot(&mut slot_keys, &mut slots, cats, kind, id).ok_or_else(|| {
                    PolicyError::List {
                        list: name.clone(),
                        message: format!(
                            "too many lists with distinct categories (at most {SLOTS}); \
                         lists that share the same categories can be merged"
                        ),
                    }
                })?;
            let opts = ParseOptions { format, subdomains };
            let allow_list = kind == ListKind::Allow;
            let (path, stats) = parse_source(&name, &source, &spec.state_dir, &opts, |rule| {
                let allow = allow_list || rule.action == RuleAction::Allow;
                match rule.pattern {
                    Pattern::Domain { name, subdomains } => {
                        let scope = if subdomains {
                            Scope::Subtree
                        } else {
                            Scope::Exact
                        };
                        builder.insert(&name, slot, scope, allow);
                    }
                    Pattern::Regex(re) => regexes.push((re.into_owned(), slot, allow)),
                }
            })?;
            lists.push(ListInfo {
                id,
                name: Arc::from(name.as_str()),
                source: source_display(&source),
                path,
                categories: cats,
                kind,
                format,
                subdomains,
                stats,
            });
        }

        // `[allow] domains`: one more exception source.
        if !spec.allow_domains.is_empty() {
            let id = ListId(lists.len() as u16);
            let slot = assign_slot(
                &mut slot_keys,
                &mut slots,
                CategorySet::EMPTY,
                ListKind::Allow,
                id,
            )
            .ok_or_else(|| PolicyError::Config("too many lists".into()))?;
            for d in &spec.allow_domains {
                builder.insert(d, slot, Scope::Subtree, true);
            }
            lists.push(ListInfo {
                id,
                name: Arc::from("allow.domains"),
                source: "[allow] domains".into(),
                path: None,
                categories: CategorySet::EMPTY,
                kind: ListKind::Allow,
                format: Format::Domains,
                subdomains: true,
                stats: ParseStats {
                    rules: spec.allow_domains.len(),
                    allow_rules: spec.allow_domains.len(),
                    ..ParseStats::default()
                },
            });
        }

        let matcher = builder.build();
        let regex = if regexes.is_empty() {
            None
        } else {
            let set = RegexSet::new(regexes.iter().map(|(r, _, _)| r.as_str())).map_err(|e| {
                PolicyError::Config(format!("regular expressions do not compile together: {e}"))
            })?;
            Some(RegexRules {
                set,
                rules: regexes.iter().map(|&(_, s, a)| (s, a)).collect(),
            })
        };

        // Clients and groups.
        let mut clients = Vec::new();
        let mut client_by_addr = std::collections::HashMap::new();
        let mut client_nets = Vec::new();
        let mut client_by_mac = std::collections::HashMap::new();
        for (i, c) in spec.clients.iter().enumerate() {
            let id = ClientId(i as u32);
            for net in &c.addresses {
                if net.prefix_len() == net.max_prefix_len() {
                    client_by_addr.insert(net.addr(), id);
                } else {
                    client_nets.push((*net, id));
                }
            }
            for mac in &c.macs {
                client_by_mac.insert(*mac, id);
            }
            clients.push(Client {
                name: Arc::from(c.name.as_str()),
                addresses: c.addresses.clone(),
            });
        }
        let set_of = |names: &[String]| -> CategorySet {
            let mut s = CategorySet::EMPTY;
            for n in names {
                if let Some(c) = categories.get(n) {
                    s.insert(c);
                }
            }
            s
        };
        let mut groups = Vec::new();
        for g in &spec.groups {
            let mut client_ids = Vec::new();
            let mut nets = Vec::new();
            for r in &g.clients {
                match r {
                    ClientRef::Name(n) => {
                        if let Some(i) = spec.clients.iter().position(|c| &c.name == n) {
                            client_ids.push(ClientId(i as u32));
                        }
                    }
                    ClientRef::Net(net) => nets.push(*net),
                }
            }
            if g.schedules.len() > schedule::MAX_PER_GROUP {
                return Err(PolicyError::Config(format!(
                    "group {:?} has {} schedules; at most {} are allowed",
                    g.name,
                    g.schedules.len(),
                    schedule::MAX_PER_GROUP
                )));
            }
            let schedules = g
                .schedules
                .iter()
                .map(|s| schedule::Schedule {
                    window: s.window,
                    block: set_of(&s.block),
                    observe: set_of(&s.observe),
                })
                .collect();
            groups.push(Group {
                name: Arc::from(g.name.as_str()),
                block: set_of(&g.block),
                observe: set_of(&g.observe),
                schedules: schedule::Schedules::new(schedules),
                client_ids,
                nets,
            });
        }

        let local =
            LocalZone::build(&spec.records, spec.blocking.ttl).map_err(PolicyError::Config)?;

        let block_texts = lists
            .iter()
            .map(|l| {
                let cats = categories.names(l.categories).map(|c| &**c);
                Arc::from(reason::blocked_text(Some(&l.name), cats))
            })
            .collect();
        let policy = Policy {
            block_texts,
            default_block: set_of(&spec.default_block),
            default_observe: set_of(&spec.default_observe),
            categories: Arc::new(categories),
            lists,
            clients,
            groups,
            local,
            blocking: spec.blocking,
            bypass,
            rebind,
            built_in: started.elapsed(),
            allow_domains: spec.allow_domains.clone(),
            matcher,
            regex,
            slots,
            client_by_addr,
            client_nets,
            client_by_mac,
        };
        // Open as of now; the schedule task keeps it so from here (see `server::schedules`).
        policy.refresh_schedules(jiff::Timestamp::now(), &jiff::tz::TimeZone::system());
        Ok(policy)
    }

    /// Sets which schedules are open at `now`; returns the next instant any may open or close
    /// (`None`: no schedules).
    pub fn refresh_schedules(
        &self,
        now: jiff::Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Option<jiff::Timestamp> {
        self.groups
            .iter()
            .filter_map(|g| g.schedules.refresh(now, tz))
            .min()
    }

    /// Whether any group has a schedule.
    pub fn has_schedules(&self) -> bool {
        self.groups.iter().any(|g| !g.schedules.list.is_empty())
    }

    /// Number of distinct names in the matcher (all lists).
    pub fn names(&self) -> usize {
        self.matcher.len()
    }

    pub fn matcher_heap_bytes(&self) -> usize {
        self.matcher.heap_bytes()
    }

    /// The EDE text for a block with this verdict: made once per list for the usual case (one
    /// list's categories), else now.
    pub fn block_text(&self, verdict: &Verdict) -> Arc<str> {
        if let Some(l) = verdict.list {
            if self.list(l).categories == verdict.categories {
                return self.block_texts[l.0 as usize].clone();
            }
        }
        let cats = self.categories.names(verdict.categories).map(|c| &**c);
        let list = verdict.list.map(|l| &*self.list(l).name);
        Arc::from(reason::blocked_text(list, cats))
    }

    pub fn list(&self, id: ListId) -> &ListInfo {
        &self.lists[id.0 as usize]
    }

    /// Who `addr` is: the configured client and the first group (in file order) naming it.
    pub fn client(&self, addr: IpAddr) -> ClientMatch {
        let addr = canonical(addr);
        let client = self.client_by_address(addr);
        ClientMatch {
            client,
            group: self.group_of(client, addr),
        }
    }

    /// The `[[client]]` whose `addresses` hold `addr` (canonical).
    pub fn client_by_address(&self, addr: IpAddr) -> Option<ClientId> {
        self.client_by_addr.get(&addr).copied().or_else(|| {
            self.client_nets
                .iter()
                .find(|(net, _)| net.contains(&addr))
                .map(|&(_, id)| id)
        })
    }

    /// The `[[client]]` named `name` (a DoT/DoH device id); the list is a home's few devices.
    pub fn client_by_name(&self, name: &str) -> Option<ClientId> {
        self.clients
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
            .map(|i| ClientId(i as u32))
    }

    /// The `[[client]]` whose `macs` hold `mac`.
    pub fn client_by_mac(&self, mac: crate::devices::Mac) -> Option<ClientId> {
        if self.client_by_mac.is_empty() {
            return None;
        }
        self.client_by_mac.get(&mac).copied()
    }

    /// Whether any `[[client]]` is named by MAC (else the neighbour table is not needed to
    /// find configured clients).
    pub fn has_macs(&self) -> bool {
        !self.client_by_mac.is_empty()
    }

    /// The first group (in file order) naming the client or a network holding `addr`.
    pub fn group_of(&self, client: Option<ClientId>, addr: IpAddr) -> Option<GroupId> {
        self.groups
            .iter()
            .position(|g| {
                client.is_some_and(|c| g.client_ids.contains(&c))
                    || g.nets.iter().any(|n| n.contains(&addr))
            })
            .map(|i| GroupId(i as u32))
    }

    pub fn client_name(&self, m: ClientMatch) -> Option<&Arc<str>> {
        m.client.map(|c| &self.clients[c.0 as usize].name)
    }

    pub fn group_name(&self, m: ClientMatch) -> Option<&Arc<str>> {
        m.group.map(|g| &self.groups[g.0 as usize].name)
    }

    /// What the lists say about `name` (labels left to right, lower case).
    /// `dotted` is the same name as text, used only when regex rules exist.
    pub fn classify<'a, I>(&self, labels: I, dotted: Option<&[u8]>) -> Verdict
    where
        I: DoubleEndedIterator<Item = &'a [u8]>,
    {
        self.classify_hashed(&NameHashes::new(labels), dotted)
    }

    /// [`classify`](Self::classify) with the name's hashes already computed.
    pub fn classify_hashed(&self, name: &NameHashes, dotted: Option<&[u8]>) -> Verdict {
        let mut hits = self.matcher.lookup_hashes(name);
        if let Some(rx) = &self.regex {
            if let Some(text) = dotted {
                for i in rx.set.matches(text).iter() {
                    let (slot, allow) = rx.rules[i];
                    if allow {
                        hits.allow |= 1 << slot;
                    } else {
                        hits.block |= 1 << slot;
                    }
                }
            }
        }
        self.verdict(hits)
    }

    /// The same as [`classify`](Self::classify) for a dotted, normalised name.
    pub fn classify_str(&self, name: &str) -> Verdict {
        self.classify(
            crate::policy::matcher::split_labels(name),
            Some(name.as_bytes()),
        )
    }

    /// Whether `[allow] domains` names `name` or a parent (for explain).
    pub fn allow_domains_match(&self, name: &str) -> bool {
        self.allow_domains.iter().any(|d| {
            name == d
                || name
                    .strip_suffix(d.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        })
    }

    pub fn has_regex(&self) -> bool {
        self.regex.is_some()
    }

    fn verdict(&self, hits: Hits) -> Verdict {
        let mut v = Verdict {
            exception: hits.allow != 0,
            ..Verdict::default()
        };
        let mut bits = hits.block;
        while bits != 0 {
            let slot = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let s = &self.slots[slot];
            v.categories = v.categories.union(s.categories);
            v.list = match (v.list, s.first_list) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        v
    }

    /// The action the client's group takes on a verdict: allow exception > observe > block.
    /// `None` when no category matched and no exception applies.
    pub fn action(&self, client: ClientMatch, verdict: &Verdict) -> Option<Action> {
        if !verdict.matched() {
            return None;
        }
        if verdict.exception {
            return Some(Action::Allowed);
        }
        let (block, observe) = self.group_sets(client);
        if verdict.categories.intersects(observe) {
            Some(Action::Observed)
        } else if verdict.categories.intersects(block) {
            Some(Action::Blocked)
        } else {
            Some(Action::Allowed)
        }
    }

    /// The categories the client's group blocks and observes now (its open schedules'
    /// included).
    #[inline]
    pub fn group_sets(&self, client: ClientMatch) -> (CategorySet, CategorySet) {
        match client.group {
            Some(g) => {
                let g = &self.groups[g.0 as usize];
                g.schedules.apply((g.block, g.observe))
            }
            None => (self.default_block, self.default_observe),
        }
    }
}

/// IPv4-mapped IPv6 addresses (from dual-stack sockets) are their IPv4 address.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

fn assign_slot(
    keys: &mut Vec<(CategorySet, ListKind)>,
    slots: &mut [Slot; SLOTS],
    cats: CategorySet,
    kind: ListKind,
    id: ListId,
) -> Option<u8> {
    // The first 48 lists get a slot of their own, so EDE texts and logs name the exact list;
    // later lists share a slot with a list of the same categories.
    let own = keys.len() < 48;
    let slot = if own {
        None
    } else {
        keys.iter().position(|k| *k == (cats, kind))
    };
    let slot = match slot {
        Some(s) => s,
        None => {
            if keys.len() >= SLOTS {
                return None;
            }
            keys.push((cats, kind));
            keys.len() - 1
        }
    };
    let s = &mut slots[slot];
    s.categories = s.categories.union(cats);
    if s.first_list.is_none() && kind == ListKind::Block {
        s.first_list = Some(id);
    }
    Some(slot as u8)
}

fn source_display(s: &ListSource) -> String {
    match s {
        ListSource::File(p) => p.display().to_string(),
        ListSource::Url(u) => u.clone(),
    }
}

/// Reads the list at `source` and streams its rules to `on_rule`, one line in memory at a time:
/// a reload builds beside the policy in force, and the text of a big list (14 MB for a million
/// names) would be that much more at the peak. URL lists are read from their on-disk cache
/// (see `sources`). Returns the file read (none for a URL list not downloaded yet) and the
/// parse stats.
///
/// A file replaced or rewritten while it is being read (a reload racing an editor or `cp`)
/// gives a `ReadList` error of kind [`std::io::ErrorKind::Interrupted`]: the reload retries
/// instead of building a policy from half a file.
fn parse_source(
    name: &str,
    source: &ListSource,
    base_dir: &std::path::Path,
    opts: &ParseOptions,
    on_rule: impl FnMut(lists::Rule<'_>),
) -> Result<(Option<PathBuf>, ParseStats), PolicyError> {
    use std::os::unix::fs::MetadataExt;

    let path = match source {
        ListSource::File(p) => p.clone(),
        ListSource::Url(url) => {
            let p = crate::lists::sources::cache_path(base_dir, url);
            if !p.exists() {
                tracing::warn!(list = name, %url, "no cached copy of this URL list yet; it is empty until the first download");
                return Ok((None, ParseStats::default()));
            }
            p
        }
    };
    let err = |e: std::io::Error| PolicyError::ReadList {
        list: name.to_string(),
        path: path.clone(),
        source: e,
    };
    // Only regular files: opening a FIFO or a device would block the reload forever.
    let meta = std::fs::metadata(&path).map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let file = std::fs::File::open(&path).map_err(err)?;
    let before = file.metadata().map_err(err)?;
    let reader = std::io::BufReader::with_capacity(64 << 10, file);
    let (stats, bytes) = lists::parse_reader(reader, opts, on_rule).map_err(err)?;
    // Still the same file, same size and time as when opened? Else it changed under us (the
    // rules already handed on are dropped with the failed build).
    let unchanged = match std::fs::metadata(&path) {
        Ok(after) => {
            after.dev() == before.dev()
                && after.ino() == before.ino()
                && after.len() == bytes
                && after.mtime() == before.mtime()
                && after.mtime_nsec() == before.mtime_nsec()
        }
        Err(_) => false,
    };
    if !unchanged {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "the file changed while it was being read",
        )));
    }
    Ok((Some(path), stats))
}

#[cfg(test)]
mod tests;
