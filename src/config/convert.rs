//! From the model to [`Config`]: the defaults, and the checks that need more than one value
//! (unique names and addresses, overlapping client networks, clients a group names, categories
//! no list defines, CNAME exclusivity), each pointing at the line of the value at fault.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::errors::{self, hint, name_list};
use super::model::*;
use super::values::{normalize_name, parse_net, reverse_name};
use super::*;

type Res<T> = Result<T, ConfigError>;

// `[server]`'s encrypted-DNS keys.
mod encrypted;

/// The example a `[[client]]` without addresses or MACs is shown.
const CLIENT_EXAMPLE: &str =
    r#"addresses = ["192.168.1.50", "fd00::50"] or macs = ["3c:2e:f9:12:34:56"]"#;

pub(super) struct Convert<'t> {
    path: &'t Path,
    text: &'t str,
    base_dir: PathBuf,
    warnings: Vec<ConfigWarning>,
}

/// `list "xiaomi"`, or `list[3]` when the table has no usable name.
fn entry_path(kind: &str, i: usize, name: Option<&str>) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{kind} {n:?}"),
        _ => format!("{kind}[{i}]"),
    }
}

fn key(table: &str, k: &str) -> String {
    format!("{table}.{k}")
}

fn section<T: Default>(s: Option<Section<T>>) -> T {
    s.map(|s| s.0).unwrap_or_default()
}

fn tables<T>(t: Option<Tables<T>>) -> Vec<Spanned<Entry<T>>> {
    t.map(|t| t.0).unwrap_or_default()
}

impl<'t> Convert<'t> {
    pub(super) fn new(text: &'t str, path: &'t Path, base_dir: PathBuf) -> Self {
        Convert {
            path,
            text,
            base_dir,
            warnings: Vec::new(),
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        errors::line_of(self.text, span)
    }

    fn error(
        &self,
        span: &Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> ConfigError {
        errors::invalid(self.path, self.text, span, key, msg)
    }

    fn warn(&mut self, span: &Range<usize>, key: impl Into<String>, msg: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            path: self.path.to_path_buf(),
            line: self.line(span),
            key: key.into(),
            message: msg.into(),
        });
    }

    /// The elements of an array as `T`, with their spans and key paths (`server.listen[1]`).
    fn items<T: TryFrom<Raw, Error = String>>(&self, a: &Array<T>, k: &str) -> Res<Vec<Item<T>>> {
        a.items(k)
            .map_err(|(m, span, key)| self.error(&span, key, m))
    }

    /// "another [[list]] is named …": a table entry's name must be unique among its kind;
    /// `names` maps the names seen so far to their lines.
    fn unique_name(
        &self,
        names: &mut HashMap<String, usize>,
        kind: &str,
        name: &str,
        span: &Range<usize>,
        path: &str,
    ) -> Res<()> {
        match names.insert(name.to_string(), self.line(span)) {
            Some(line) => Err(self.error(
                span,
                key(path, "name"),
                format!(
                    "another [[{kind}]] is named {name:?} (line {line}); {kind} names are unique"
                ),
            )),
            None => Ok(()),
        }
    }

    /// "missing; every [[list]] needs a name: …", at the table's header.
    fn missing(
        &self,
        span: &Range<usize>,
        path: &str,
        header: &str,
        k: &str,
        expected: &str,
    ) -> ConfigError {
        self.error(
            span,
            key(path, k),
            format!("missing; every [[{header}]] needs a {k}: {expected}"),
        )
    }

    pub(super) fn config(mut self, raw: RawConfig) -> Res<Config> {
        let server = self.server(section(raw.server))?;
        let upstream = self.upstream(section(raw.upstream))?;
        let blocking = section(raw.blocking);
        let blocking = BlockingConfig {
            mode: blocking.mode.unwrap_or(BlockMode::Null),
            ttl: blocking.ttl.map_or(10, |t| t.0),
        };
        let lists = self.lists(tables(raw.list))?;
        let allow = self.allow(section(raw.allow))?;
        let clients = self.clients(tables(raw.client))?;
        let client_discovery = self.client_discovery(section(raw.clients))?;

        let mut categories: Vec<&str> = Vec::new();
        for c in lists.iter().flat_map(|l| &l.categories) {
            if !categories.contains(&c.as_str()) {
                categories.push(c);
            }
        }
        if !categories.contains(&BYPASS_CATEGORY) {
            categories.push(BYPASS_CATEGORY);
        }
        let groups = self.groups(tables(raw.group), &clients, &categories)?;
        let default_t = section(raw.default);
        let default = DefaultPolicy {
            block: self
                .categories_ref(default_t.block.as_ref(), "default.block", &categories)?
                .unwrap_or_else(|| DefaultPolicy::default().block),
            observe: self
                .categories_ref(default_t.observe.as_ref(), "default.observe", &categories)?
                .unwrap_or_default(),
        };
        let records = self.records(tables(raw.record))?;
        let forwards = self.forwards(tables(raw.forward))?;
        let metrics_t = section(raw.metrics);
        let metrics = MetricsConfig {
            listen: metrics_t
                .listen
                .map_or_else(|| MetricsConfig::default().listen, |l| l.0),
            max_clients: metrics_t.max_clients.map_or(256, |n| n.0),
        };
        let querylog = self.querylog(section(raw.querylog))?;
        let addresses = match raw.addresses {
            Some(t) => Some(self.addresses(t.0, &categories)?),
            None => None,
        };

        Ok(Config {
            path: self.path.to_path_buf(),
            base_dir: self.base_dir,
            server,
            upstream,
            blocking,
            lists,
            allow,
            clients,
            client_discovery,
            groups,
            default,
            records,
            forwards,
            metrics,
            querylog,
            addresses,
            warnings: self.warnings,
        })
    }

    fn server(&self, t: RawServer) -> Res<ServerConfig> {
        let mut cfg = ServerConfig::default();
        if let Some(listen) = t.listen {
            let span = listen.span();
            let listen = listen.into_inner();
            if listen.is_empty() {
                return Err(self.error(
                    &span,
                    "server.listen",
                    "empty; expected at least one address, like [\"0.0.0.0:53\", \"[::]:53\"]",
                ));
            }
            let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
            cfg.listen.clear();
            for (addr, span, k) in self.items(&listen, "server.listen")? {
                if let Some(line) = seen.insert(addr.0, self.line(&span)) {
                    return Err(self.error(
                        &span,
                        k,
                        format!("{} is listed twice (also on line {line})", addr.0),
                    ));
                }
                cfg.listen.push(addr.0);
            }
        }
        if let Some(nets) = t.allow_networks {
            if nets.get_ref().is_empty() {
                return Err(self.error(
                    &nets.span(),
                    "server.allow_networks",
                    "empty, so every client would be REFUSED; to answer any address write \
                     [\"0.0.0.0/0\", \"::/0\"]",
                ));
            }
            cfg.allow_networks = self
                .items(nets.get_ref(), "server.allow_networks")?
                .into_iter()
                .map(|(n, _, _)| n.0)
                .collect();
        }
        if let Some(qps) = t.rate_limit_qps {
            cfg.rate_limit_qps = qps.0;
        }
        cfg.rate_limit_burst = match t.rate_limit_burst {
            Some(burst) if cfg.rate_limit_qps > 0 => burst.0,
            _ => cfg.rate_limit_qps.saturating_mul(2),
        };
        if let Some(d) = t.tcp_idle_timeout {
            if d.get_ref().0.is_zero() {
                return Err(self.error(
                    &d.span(),
                    "server.tcp_idle_timeout",
                    "must be longer than 0; expected a duration like \"10s\"",
                ));
            }
            cfg.tcp_idle_timeout = d.get_ref().0;
        }
        if let Some(n) = t.max_tcp_connections {
            cfg.max_tcp_connections = n.0;
        }
        cfg.encrypted = self.encrypted(
            t.tls_listen,
            t.https_listen,
            t.tls_cert,
            t.tls_key,
            t.tls_name,
            t.ddr,
        )?;
        Ok(cfg)
    }

    fn upstream(&self, t: RawUpstream) -> Res<UpstreamConfig> {
        let mut cfg = UpstreamConfig::default();
        if let Some(servers) = t.servers {
            if servers.get_ref().is_empty() {
                return Err(self.error(
                    &servers.span(),
                    "upstream.servers",
                    format!(
                        "empty; expected at least one upstream: {}",
                        values::UPSTREAM_FORMS
                    ),
                ));
            }
            cfg.servers.clear();
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (up, span, k) in self.items(servers.get_ref(), "upstream.servers")? {
                if let Some(line) = seen.insert(up.label(), self.line(&span)) {
                    return Err(self.error(
                        &span,
                        k,
                        format!("{} is listed twice (also on line {line})", up.label()),
                    ));
                }
                cfg.servers.push(up);
            }
        }
        if let Some(ms) = t.timeout_ms {
            cfg.timeout = Duration::from_millis(ms.0);
        }
        if let Some(n) = t.cache_entries {
            cfg.cache_entries = n.0;
        }
        if let Some(d) = t.serve_stale {
            cfg.serve_stale = d.0;
        }
        if let Some(s) = t.strategy {
            cfg.strategy = s;
        }
        if let Some(b) = t.rebind_protection {
            cfg.rebind_protection = b.0;
        }
        if let Some(f) = t.dnssec {
            cfg.dnssec = f.0;
        }
        if let Some(p) = t.dnssec_trust_anchor {
            let path = files::resolve(&self.base_dir, &p.get_ref().0);
            // Read now, so that a file that does not parse fails `check` and a reload.
            if let Err(e) = crate::resolve::dnssec::Anchors::from_file(&path) {
                let at = match e.line {
                    Some(line) => format!("{}:{line}", path.display()),
                    None => path.display().to_string(),
                };
                return Err(self.error(
                    &p.span(),
                    "upstream.dnssec_trust_anchor",
                    format!("{at}: {}", e.message),
                ));
            }
            cfg.dnssec_trust_anchor = Some(path);
        }
        Ok(cfg)
    }

    fn lists(&self, tables: Vec<Spanned<Entry<RawList>>>) -> Res<Vec<ListConfig>> {
        let mut out: Vec<ListConfig> = Vec::with_capacity(tables.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut categories: HashSet<String> = HashSet::from([
            BYPASS_CATEGORY.to_string(),
            crate::policy::category::REBIND.to_string(),
        ]);
        for (i, t) in tables.into_iter().enumerate() {
            let span = t.span();
            let t = t.into_inner().0;
            let name_s = t.name.as_ref().map(|n| n.get_ref().0.as_str());
            let path = entry_path("list", i, name_s);
            let Some(name) = t.name else {
                return Err(self.missing(
                    &span,
                    &path,
                    "list",
                    "name",
                    "a string like name = \"xiaomi\"",
                ));
            };
            let (name_span, name) = (name.span(), name.into_inner().0);
            self.unique_name(&mut names, "list", &name, &name_span, &path)?;
            let Some(src) = t.source else {
                return Err(self.missing(
                    &span,
                    &path,
                    "list",
                    "source",
                    "a path relative to this file or an https:// URL, like source = \"blocklists/xiaomi.txt\"",
                ));
            };
            let source = files::list_source(&self.base_dir, &src.get_ref().0)
                .map_err(|m| self.error(&src.span(), key(&path, "source"), m))?;

            let Some(cats_v) = t.categories else {
                return Err(self.error(
                    &span,
                    key(&path, "categories"),
                    "missing; every [[list]] needs categories, like categories = [\"telemetry\"]",
                ));
            };
            if cats_v.get_ref().is_empty() {
                return Err(self.error(
                    &cats_v.span(),
                    key(&path, "categories"),
                    "empty; a list blocks through its categories: expected at least one, like [\"telemetry\"]",
                ));
            }
            let mut cats: Vec<String> = Vec::new();
            let cats_key = key(&path, "categories");
            for (c, c_span, k) in self.items(cats_v.get_ref(), &cats_key)? {
                if !cats.contains(&c.0) {
                    cats.push(c.0.clone());
                }
                if categories.insert(c.0.clone()) && categories.len() > MAX_CATEGORIES {
                    return Err(self.error(
                        &c_span,
                        k,
                        format!(
                            "{:?} would be category number {}; at most {MAX_CATEGORIES} are \
                             allowed (\"bypass\" and \"rebind\" included)",
                            c.0,
                            categories.len()
                        ),
                    ));
                }
            }
            let refresh =
                match t.refresh {
                    None => Duration::from_secs(86400),
                    Some(r) if matches!(source, ListSource::File(_)) => return Err(self.error(
                        &r.span(),
                        key(&path, "refresh"),
                        "only URL lists are refreshed; a local file is watched and reloads when \
                         it changes: remove this key",
                    )),
                    Some(r) if r.get_ref().0 < Duration::from_secs(60) => {
                        return Err(self.error(
                            &r.span(),
                            key(&path, "refresh"),
                            "too short; expected at least \"1m\" (lists rarely change faster, and \
                         their hosts rate-limit)",
                        ))
                    }
                    Some(r) => r.get_ref().0,
                };
            out.push(ListConfig {
                name,
                source,
                categories: cats,
                format: t.format.unwrap_or_default(),
                refresh,
                subdomains: t.subdomains.is_none_or(|b| b.0),
                line: self.line(&span),
            });
        }
        Ok(out)
    }

    fn allow(&self, t: RawAllow) -> Res<AllowConfig> {
        let mut cfg = AllowConfig::default();
        let domains = t.domains.unwrap_or_default();
        for (d, _, _) in self.items(&domains, "allow.domains")? {
            if !cfg.domains.contains(&d.0) {
                cfg.domains.push(d.0);
            }
        }
        let lists = t.lists.unwrap_or_default();
        for (s, span, k) in self.items(&lists, "allow.lists")? {
            let source =
                files::list_source(&self.base_dir, &s.0).map_err(|m| self.error(&span, k, m))?;
            if !cfg.lists.contains(&source) {
                cfg.lists.push(source);
            }
        }
        Ok(cfg)
    }

    fn clients(&self, tables: Vec<Spanned<Entry<RawClient>>>) -> Res<Vec<ClientConfig>> {
        struct Owned {
            net: IpNet,
            client: usize,
            span: Range<usize>,
            key: String,
        }
        let mut out: Vec<ClientConfig> = Vec::with_capacity(tables.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut all: Vec<Owned> = Vec::new();
        let mut macs_seen: HashMap<Mac, (usize, usize)> = HashMap::new();
        for (i, t) in tables.into_iter().enumerate() {
            let span = t.span();
            let t = t.into_inner().0;
            let path = entry_path("client", i, t.name.as_ref().map(|n| n.get_ref().0.as_str()));
            let Some(name) = t.name else {
                return Err(self.missing(
                    &span,
                    &path,
                    "client",
                    "name",
                    "a string like name = \"anna-phone\"",
                ));
            };
            let (name_span, name) = (name.span(), name.into_inner().0);
            let name_key = key(&path, "name");
            // A group entry is a client name or an address; a name that reads as an address
            // would be ambiguous there and on the command line.
            if parse_net(&name).is_some() {
                return Err(self.error(
                    &name_span,
                    name_key,
                    format!("{name:?} looks like an address; a client name must not, since groups and the command line take either"),
                ));
            }
            if name == OTHER_CLIENT {
                return Err(self.error(
                    &name_span,
                    name_key,
                    "\"other\" is reserved: metrics count clients past metrics.max_clients under it",
                ));
            }
            if name == REFUSED_CLIENT {
                return Err(self.error(
                    &name_span,
                    name_key,
                    "\"refused\" is reserved: metrics count refused strangers under it",
                ));
            }
            self.unique_name(&mut names, "client", &name, &name_span, &path)?;
            if t.addresses.is_none() && t.macs.is_none() {
                return Err(self.error(
                    &span,
                    key(&path, "addresses"),
                    format!("missing; every [[client]] needs addresses, macs or both, like {CLIENT_EXAMPLE}"),
                ));
            }
            let mut addresses: Vec<IpNet> = Vec::new();
            if let Some(addrs) = &t.addresses {
                let addrs_key = key(&path, "addresses");
                if addrs.get_ref().is_empty() && t.macs.is_none() {
                    return Err(self.error(
                        &addrs.span(),
                        addrs_key,
                        "empty; expected at least one address or CIDR, like [\"192.168.1.50\", \"fd00::50\"] (or name the device by macs = [\"3c:2e:f9:12:34:56\"])",
                    ));
                }
                for (net, n_span, k) in self.items(addrs.get_ref(), &addrs_key)? {
                    if !addresses.contains(&net.0) {
                        addresses.push(net.0);
                    }
                    all.push(Owned {
                        net: net.0,
                        client: out.len(),
                        span: n_span,
                        key: k,
                    });
                }
            }
            let mut macs: Vec<Mac> = Vec::new();
            if let Some(m) = &t.macs {
                let macs_key = key(&path, "macs");
                if m.get_ref().is_empty() && addresses.is_empty() {
                    return Err(self.error(
                        &m.span(),
                        macs_key,
                        "empty; expected at least one MAC address, like [\"3c:2e:f9:12:34:56\"] (or addresses)",
                    ));
                }
                for (mac, m_span, k) in self.items(m.get_ref(), &macs_key)? {
                    match macs_seen.get(&mac.0) {
                        Some(&(client, _)) if client == out.len() => continue,
                        Some(&(client, line)) => {
                            return Err(self.error(
                                &m_span,
                                k,
                                format!(
                                    "{} is already client {:?}'s (line {line}); a device belongs to one client",
                                    mac.0, out[client].name
                                ),
                            ))
                        }
                        None => {
                            macs_seen.insert(mac.0, (out.len(), self.line(&m_span)));
                            macs.push(mac.0);
                        }
                    }
                }
            }
            out.push(ClientConfig {
                name,
                addresses,
                macs,
            });
        }
        // No address may belong to two clients: CIDRs are intervals that either nest or are
        // disjoint, so sorted by start, one that begins inside the widest interval seen so far
        // overlaps it.
        all.sort_by_key(|o| (o.net.network(), o.net.prefix_len()));
        let mut widest: Option<&Owned> = None;
        for o in &all {
            if let Some(w) = widest {
                if o.net.network() <= w.net.broadcast() {
                    if w.client != o.client {
                        let (first, second) = if w.span.start < o.span.start {
                            (w, o)
                        } else {
                            (o, w)
                        };
                        return Err(self.error(
                            &second.span,
                            &second.key,
                            format!(
                                "{} overlaps {} of client {:?} (line {}); an address belongs to one client",
                                second.net,
                                first.net,
                                out[first.client].name,
                                self.line(&first.span)
                            ),
                        ));
                    }
                    if o.net.broadcast() <= w.net.broadcast() {
                        continue;
                    }
                }
            }
            widest = Some(o);
        }
        Ok(out)
    }

    /// `[addresses]`: a category that no list defines is an error (nothing could be learnt).
    fn addresses(&self, t: RawAddresses, defined: &[&str]) -> Res<AddressesConfig> {
        let mut categories: Vec<String> = Vec::new();
        match &t.categories {
            None => categories.push("telemetry".into()),
            Some(a) => {
                for (c, span, key) in self.items(a, "addresses.categories")? {
                    if !defined.contains(&c.0.as_str()) {
                        return Err(self.error(
                            &span,
                            key,
                            format!(
                                "no [[list]] has category {:?}, so it has no names whose \
                                 addresses could be learnt; {}defined categories: {}",
                                c.0,
                                hint(&c.0, defined),
                                name_list(defined.iter().copied())
                            ),
                        ));
                    }
                    if !categories.contains(&c.0) {
                        categories.push(c.0);
                    }
                }
            }
        }
        Ok(AddressesConfig {
            categories,
            resolve_blocked: t.resolve_blocked.is_none_or(|f| f.0),
            nftables: t.nftables.unwrap_or_default(),
        })
    }

    fn client_discovery(&self, t: RawClients) -> Res<ClientDiscovery> {
        let mut cfg = ClientDiscovery::default();
        if let Some(b) = t.neighbours {
            cfg.neighbours = b.0;
        }
        let leases = t.leases.unwrap_or_default();
        for (p, _, _) in self.items(&leases, "clients.leases")? {
            let p = files::resolve(&self.base_dir, &p.0);
            if !cfg.leases.contains(&p) {
                cfg.leases.push(p);
            }
        }
        if let Some(d) = t.silent_after {
            cfg.silent_after = d.get_ref().0;
        }
        Ok(cfg)
    }

    /// `block`/`observe` of a group or of [default]: category names. One that no list has is a
    /// warning, not an error: a config may name a category before its list is added (the
    /// SPEC's own example blocks "ads" with no ads list).
    fn categories_ref(
        &mut self,
        a: Option<&Array<Category>>,
        k: &str,
        defined: &[&str],
    ) -> Res<Option<Vec<String>>> {
        let Some(a) = a else {
            return Ok(None);
        };
        let mut out: Vec<String> = Vec::new();
        for (c, span, key) in self.items(a, k)? {
            if !defined.contains(&c.0.as_str()) {
                let msg = format!(
                    "no [[list]] has category {:?}, so this matches nothing; {}defined categories: {}",
                    c.0,
                    hint(&c.0, defined),
                    name_list(defined.iter().copied())
                );
                self.warn(&span, key, msg);
            }
            if !out.contains(&c.0) {
                out.push(c.0);
            }
        }
        Ok(Some(out))
    }

    fn groups(
        &mut self,
        tables: Vec<Spanned<Entry<RawGroup>>>,
        clients: &[ClientConfig],
        categories: &[&str],
    ) -> Res<Vec<GroupConfig>> {
        let client_names: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
        let mut out: Vec<GroupConfig> = Vec::with_capacity(tables.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        // Client → the group that claimed it first, to flag later groups that never win.
        let mut claimed: HashMap<ClientRef, (String, usize)> = HashMap::new();
        for (i, t) in tables.into_iter().enumerate() {
            let span = t.span();
            let t = t.into_inner().0;
            let path = entry_path("group", i, t.name.as_ref().map(|n| n.get_ref().0.as_str()));
            let Some(name) = t.name else {
                return Err(self.missing(
                    &span,
                    &path,
                    "group",
                    "name",
                    "a string like name = \"phones\"",
                ));
            };
            let (name_span, name) = (name.span(), name.into_inner().0);
            self.unique_name(&mut names, "group", &name, &name_span, &path)?;
            let mut refs: Vec<ClientRef> = Vec::new();
            let mut pending_warnings = Vec::new();
            let members = t.clients.unwrap_or_default();
            for (m, m_span, k) in self.items(&members, &key(&path, "clients"))? {
                let s = m.0.trim();
                let r = if client_names.contains(&s) {
                    ClientRef::Name(s.to_string())
                } else if let Some(net) = parse_net(s) {
                    ClientRef::Net(net)
                } else {
                    let defined = if client_names.is_empty() {
                        "no [[client]] is defined".to_string()
                    } else {
                        format!(
                            "{}defined clients: {}",
                            hint(s, &client_names),
                            name_list(client_names.iter().copied())
                        )
                    };
                    return Err(self.error(
                        &m_span,
                        k,
                        format!("no [[client]] named {s:?} and not an address or CIDR; {defined}"),
                    ));
                };
                if refs.contains(&r) {
                    continue;
                }
                match claimed.get(&r) {
                    Some((group, line)) => pending_warnings.push((
                        m_span.clone(),
                        k.clone(),
                        format!(
                            "{s:?} is already in group {group:?} (line {line}), which comes \
                             first and wins; this entry has no effect"
                        ),
                    )),
                    None => {
                        claimed.insert(r.clone(), (name.clone(), self.line(&m_span)));
                    }
                }
                refs.push(r);
            }
            for (span, key, msg) in pending_warnings {
                self.warn(&span, key, msg);
            }
            let block = self
                .categories_ref(t.block.as_ref(), &key(&path, "block"), categories)?
                .unwrap_or_default();
            let observe = self
                .categories_ref(t.observe.as_ref(), &key(&path, "observe"), categories)?
                .unwrap_or_default();
            let mut schedules = Vec::new();
            for (j, st) in t
                .schedule
                .map(|t| t.0)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let path = format!("{path}.schedule[{j}]");
                schedules.push(self.schedule(st, &path, categories)?);
            }
            if schedules.len() > crate::policy::schedule::MAX_PER_GROUP {
                return Err(self.error(
                    &span,
                    key(&path, "schedule"),
                    format!(
                        "{} schedules; a group may have at most {}",
                        schedules.len(),
                        crate::policy::schedule::MAX_PER_GROUP
                    ),
                ));
            }
            out.push(GroupConfig {
                name,
                clients: refs,
                block,
                observe,
                schedules,
            });
        }
        Ok(out)
    }

    /// One `[[group.schedule]]`: its days (all seven when left out), its window and what it adds.
    fn schedule(
        &mut self,
        t: Spanned<Entry<RawSchedule>>,
        path: &str,
        categories: &[&str],
    ) -> Res<ScheduleConfig> {
        use crate::policy::schedule::{Days, Minute, Window};
        let span = t.span();
        let t = t.into_inner().0;
        let mut days = Days::ALL;
        if let Some(d) = &t.days {
            days = Days::NONE;
            for (day, _, _) in self.items(d.get_ref(), &key(path, "days"))? {
                days = days.with(day.0);
            }
            if days.is_empty() {
                return Err(self.error(
                    &d.span(),
                    key(path, "days"),
                    format!(
                        "empty, so the schedule never applies; expected days like {} \
                         (leave days out for every day)",
                        Day::EXAMPLE
                    ),
                ));
            }
        }
        let time = |v: Option<Spanned<ClockText>>, k: &str, end_of_day: bool| {
            let Some(v) = v else {
                return Err(self.missing(
                    &span,
                    path,
                    "group.schedule",
                    k,
                    "a local time of day like \"21:00\"",
                ));
            };
            let (s, text) = (v.span(), &v.get_ref().0);
            Minute::parse(text.trim(), end_of_day).ok_or_else(|| {
                let range = if end_of_day {
                    "from \"00:00\" to \"24:00\""
                } else {
                    "from \"00:00\" to \"23:59\""
                };
                self.error(
                    &s,
                    key(path, k),
                    format!("{text:?} is not a time of day; expected \"HH:MM\" {range}"),
                )
            })
        };
        let from = time(t.from, "from", false)?;
        let to = time(t.to, "to", true)?;
        let block = self
            .categories_ref(t.block.as_ref(), &key(path, "block"), categories)?
            .unwrap_or_default();
        let observe = self
            .categories_ref(t.observe.as_ref(), &key(path, "observe"), categories)?
            .unwrap_or_default();
        if block.is_empty() && observe.is_empty() {
            self.warn(
                &span,
                path.to_string(),
                "blocks and observes nothing; add block = [...] or observe = [...]",
            );
        }
        Ok(ScheduleConfig {
            window: Window { days, from, to },
            block,
            observe,
        })
    }

    fn records(&self, tables: Vec<Spanned<Entry<RawRecord>>>) -> Res<Vec<RecordConfig>> {
        let mut out: Vec<RecordConfig> = Vec::with_capacity(tables.len());
        // Per name: whether it has a CNAME, and the first record's line (RFC 1034 §3.6.2: a
        // CNAME is the only record at its name).
        let mut at_name: HashMap<String, (bool, usize)> = HashMap::new();
        let mut seen: HashMap<(String, RecordValue), usize> = HashMap::new();
        for (i, t) in tables.into_iter().enumerate() {
            let span = t.span();
            let t = t.into_inner().0;
            let path = entry_path("record", i, t.name.as_ref().map(|n| n.get_ref().0.as_str()));
            let Some(raw_name) = t.name else {
                return Err(self.missing(
                    &span,
                    &path,
                    "record",
                    "name",
                    "a domain name like name = \"nas.home.arpa\"",
                ));
            };
            let Some(kind) = t.rtype else {
                return Err(self.missing(
                    &span,
                    &path,
                    "record",
                    "type",
                    "one of A, AAAA, CNAME, TXT, MX, PTR, SRV, like type = \"A\"",
                ));
            };
            let name = match raw_name.get_ref().0.trim().parse::<IpAddr>() {
                Ok(ip) if kind == RecordKind::Ptr => reverse_name(ip),
                _ => normalize_name(&raw_name.get_ref().0)
                    .map_err(|m| self.error(&raw_name.span(), key(&path, "name"), m))?,
            };
            let Some(raw_value) = t.value else {
                return Err(self.missing(
                    &span,
                    &path,
                    "record",
                    "value",
                    "a string, like value = \"192.168.1.10\"",
                ));
            };
            let value = RecordValue::parse(kind, &raw_value.get_ref().0).map_err(|m| {
                self.error(
                    &raw_value.span(),
                    key(&path, "value"),
                    format!(
                        "{:?} is not a valid {} value: {m}",
                        raw_value.get_ref().0,
                        kind.as_str()
                    ),
                )
            })?;
            let ttl = t.ttl.map_or(300, |n| n.0);

            let line = self.line(&span);
            if let Some(first) = seen.insert((name.clone(), value.clone()), line) {
                return Err(self.error(
                    &span,
                    &path,
                    format!("the same {} record as on line {first}", kind.as_str()),
                ));
            }
            match at_name.get(&name) {
                Some(&(has_cname, first)) if has_cname || kind == RecordKind::Cname => {
                    return Err(self.error(
                        &span,
                        key(&path, "type"),
                        format!(
                            "{name} already has a record on line {first}; a CNAME must be the \
                             only record at its name (RFC 1034)"
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    at_name.insert(name.clone(), (kind == RecordKind::Cname, line));
                }
            }
            out.push(RecordConfig {
                name,
                rtype: kind,
                value,
                ttl,
            });
        }
        Ok(out)
    }

    fn querylog(&self, t: RawQueryLog) -> Res<QueryLogConfig> {
        let mut cfg = QueryLogConfig::default_in(&self.base_dir);
        if let (Some(_), Some(u)) = (&t.path, &t.url) {
            return Err(self.error(
                &u.span(),
                "querylog.url",
                "both path and url are set; keep path for a SQLite file, or url for a \
                 PostgreSQL database that several replicas share, not both",
            ));
        }
        if let Some(p) = t.path {
            cfg.path = self.base_dir.join(p.into_inner().0);
        }
        if let Some(u) = t.url {
            cfg.url = Some(u.into_inner().0);
        }
        if let Some(mode) = t.log {
            cfg.log = mode;
        }
        if let Some(n) = t.retention_days {
            cfg.retention_days = n.0;
        }
        if let Some(b) = t.anonymize {
            cfg.anonymize = b.0;
        }
        if let Some(n) = t.queue_size {
            cfg.queue_size = n.0;
        }
        Ok(cfg)
    }
}

// --- [[forward]] ------------------------------------------------------------------------

impl Convert<'_> {
    /// `[[forward]]`: every entry needs domains and servers; a domain belongs to one entry.
    fn forwards(&self, tables: Vec<Spanned<Entry<RawForward>>>) -> Res<Vec<ForwardConfig>> {
        const DOMAINS: &str = "a list of domains like domains = [\"fritz.box\"]";
        let mut out = Vec::with_capacity(tables.len());
        // Domain → the line of the entry that has it.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, t) in tables.into_iter().enumerate() {
            let span = t.span();
            let t = t.into_inner().0;
            let path = entry_path("forward", i, None);
            let Some(raw_domains) = t.domains else {
                return Err(self.missing(&span, &path, "forward", "domains", DOMAINS));
            };
            if raw_domains.get_ref().is_empty() {
                return Err(self.error(
                    &raw_domains.span(),
                    key(&path, "domains"),
                    format!("empty; expected {DOMAINS}"),
                ));
            }
            let mut domains = Vec::new();
            for (d, d_span, k) in self.items(raw_domains.get_ref(), &key(&path, "domains"))? {
                if let Some(line) = seen.insert(d.0.clone(), self.line(&d_span)) {
                    return Err(self.error(
                        &d_span,
                        k,
                        format!(
                            "{} is forwarded already (line {line}); a domain belongs to one \
                             [[forward]]",
                            d.0
                        ),
                    ));
                }
                domains.push(d.0);
            }
            let servers_expected = format!("a list of servers like {}", values::UPSTREAM_FORMS);
            let Some(raw_servers) = t.servers else {
                return Err(self.missing(
                    &span,
                    &path,
                    "forward",
                    "servers",
                    "a list of servers like servers = [\"192.168.178.1\"]",
                ));
            };
            if raw_servers.get_ref().is_empty() {
                return Err(self.error(
                    &raw_servers.span(),
                    key(&path, "servers"),
                    format!("empty; expected {servers_expected}"),
                ));
            }
            let mut servers: Vec<Upstream> = Vec::new();
            for (up, up_span, k) in self.items(raw_servers.get_ref(), &key(&path, "servers"))? {
                if servers.contains(&up) {
                    return Err(self.error(&up_span, k, format!("{} is listed twice", up.label())));
                }
                servers.push(up);
            }
            out.push(ForwardConfig { domains, servers });
        }
        Ok(out)
    }
}
