//! Block- and allow-list parsing: every list format telesink reads, streamed line by line.
//!
//! [`parse_list`] hands each rule to a callback as soon as its line is read and keeps nothing of the
//! text, so a list of millions of lines costs no more memory than its rules; [`parse_reader`]
//! does the same from a file, one line in memory at a time. Names that are already
//! normalised (the overwhelming majority in published lists) are borrowed from the input; a name is
//! copied only when it has to be lower-cased or converted to punycode.
//!
//! # Behaviour where the SPEC is silent
//!
//! These follow what Pi-hole, AdGuard Home (AGH) and Blocky users expect.
//!
//! - **Detection** (`Format::Auto`) is per line: cosmetic rules first (scriptlets contain
//!   blanks); then a line with whitespace is a hosts line if its first field is an IP address
//!   (else unrecognised); `option=...` lines are dnsmasq; a line starting with `^`, or with
//!   `\ ( ) [ ] { } +` before any adblock character, is a bare Pi-hole regex, skipped with a hint
//!   (`BareRegex`: such lists need `format = "regex"`, since a bare regex cannot be told from
//!   garbage); a line with any of `| @ / ^ $ # ; : = ? & ,` is adblock syntax (which covers
//!   `/regex/`); a line with `*` is a wildcard; anything else is a plain domain. RPZ is only read
//!   with `format = "rpz"`. An explicit format is strict: a line of another syntax is skipped.
//! - **Comments**: a line starting with `#` or `!` is a comment in every format (so generic
//!   cosmetic rules such as `##.ad` are comments, not skipped rules); ` #` or `\t#` starts an
//!   inline comment; in RPZ, `;` starts a comment anywhere. `[Adblock Plus 2.0]`-style headers are
//!   counted in `ignored`. A BOM is stripped at the start of any line (concatenated lists).
//! - **Counts**: [`ParseStats::rules`] counts every rule emitted, allow rules included;
//!   `allow_rules` is the subset. `ignored` counts localhost-style names (one per name), the RPZ
//!   preamble (`$TTL`, `$ORIGIN`, SOA, NS: one per record) and adblock headers. `skipped` counts
//!   one per rejected item (a hosts line with two bad names counts two). Skipped texts are the
//!   trimmed line, cut to 200 bytes.
//! - **Localhost-style names** (`localhost`, `local`, `broadcasthost`, `ip6-*`, ...) are never
//!   blocked, whichever format names them; `0.0.0.0` (and the line's own address) in a hosts name
//!   column is ignored too. Any other IP literal where a name belongs is skipped (`IpAddress`).
//! - **Names**: labels of `[a-z0-9_-]`, 1..=63 bytes, total <= 253, and a top-level label that is
//!   not all digits (that is an IPv4 address or garbage). Single-label names are accepted (a list
//!   may block a whole TLD). Leading/trailing hyphens are accepted (real lists have them).
//! - **Plain domains** may have a leading `.` (Privoxy style); it is dropped.
//! - **Wildcards**: `*.x` is `x` and all subdomains. Any other `*` is a glob matching any
//!   characters, dots included (as `filepath.Match` in dnscrypt-proxy and `*` in adblock syntax),
//!   and becomes an anchored regex: `*.ads*.msads.net` → `(?:^|\.)ads.*\.msads\.net$`. A glob with
//!   no literal character (`*`, `*.*`) would match everything and is skipped.
//! - **Adblock**:
//!   - `||x^`, `||x^|`, `||x|`, `||x` → x and subdomains; `@@` makes it an allow rule.
//!   - `|x^`, `|x^|` → **exactly x** (not its subdomains). AGH anchors `|` at the start of the
//!     host name, so `|x^` cannot match `sub.x`; AGH itself writes hosts-file entries as `|x^`
//!     for exact matches (AdGuardHome#3998). Reading `@@|x^|` as a subtree would allow more than
//!     the list meant.
//!   - No start anchor: `x^` and `.x^` → x and subdomains (the DNS reading of "ends with x");
//!     a body starting with `-` (`@@-ds.metric.gstatic.com^|`) is a suffix match on part of a
//!     label, so it becomes the regex `-ds\.metric\.gstatic\.com$`.
//!   - A body ending in `.` with no `^` (`||admulti.`, `||fkp.samsungcloudsolution.`) means that
//!     name under any TLD: regex `(?:^|\.)admulti\.`. A body of only digits and dots
//!     (`||104.154.`) is an IP prefix for URLs: skipped (`IpAddress`).
//!   - Globs: `||alishop*.ru^` → `(?:^|\.)alishop.*\.ru$`; `|*app1e*^` → `^.*app1e.*$`.
//!   - Modifiers: only `$important` is accepted (it changes nothing here). Every other modifier,
//!     `$dnsrewrite=NXDOMAIN` included, skips the rule (`UnsupportedModifier`).
//!   - `/re/` and `/re/$important` → regex. `/`-rules that do not end in `/`, and rules with
//!     `/ : ; ? = & % ,` or text after `^` are URL rules (`PathOrUrlRule`). `##`, `#@#`, `#%#`,
//!     `#$#`, `#?#`, `$$`, `$@$` mark cosmetic/scriptlet/HTML rules (`CosmeticRule`).
//! - **Regexes** are validated with `regex::Regex::new` (default limits). A regex with an ASCII
//!   upper-case letter (outside an escape such as `\D`) gets `(?i)` prepended, since names are
//!   matched in lower case and Pi-hole and AGH match without case. An empty regex would match every
//!   name and is rejected. Pi-hole's `;querytype=`, `;invert` and `;reply=` suffixes are skipped
//!   (`UnsupportedModifier`). AGH's `/regex/` rules aimed at answer IPs (`/^10\./`) are kept as
//!   name regexes: they cannot match a query name, so they are harmless.
//! - **dnsmasq**: `local=/x/` and `server=/x/` (no upstream: answered locally, NXDOMAIN) block.
//!   `address=/x/` blocks when its address is empty, `#`, `0.0.0.0`, `::`, `127.0.0.1` or `::1`;
//!   another address (a redirect) or `server=/x/1.2.3.4` (a forward) is skipped
//!   (`UnsupportedAction`). `*.x` and `.x` inside the slashes mean x; `/#/` (every name) is
//!   skipped.
//! - **RPZ**: `name CNAME .` → exactly name; `*.name CNAME .` → name and subdomains (HaGeZi ships
//!   both; the union is right). `CNAME *.` and `CNAME rpz-drop.` block, `CNAME rpz-passthru.`
//!   allows; other targets and other types (A, AAAA, TXT: rewrites) and `rpz-tcp-only.` are
//!   skipped (`UnsupportedAction`). Owners may carry TTL and class in either order; a line
//!   starting with blanks continues the previous owner. The zone apex is the first `$ORIGIN` (or an
//!   absolute SOA owner); it is stripped from absolute owners, and relative owners under a later
//!   `$ORIGIN` are made relative to it. `rpz-ip`, `rpz-nsip`, `rpz-nsdname` and `rpz-client-ip`
//!   triggers are skipped (`UnsupportedTrigger`). `$INCLUDE`/`$GENERATE` are skipped.

mod names;
mod rpz;
pub mod sources;

use names::*;
use rpz::*;

use std::borrow::Cow;
use std::fmt;
use std::io::BufRead;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

/// How many skipped lines [`ParseStats::first_skipped`] keeps.
pub const MAX_FIRST_SKIPPED: usize = 10;

/// Longest skipped-line text kept, in bytes; a minified line can be megabytes.
const MAX_SKIPPED_TEXT: usize = 200;

/// Where a list's rules are read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListSource {
    /// Resolved against the config file's directory; it existed when the config was loaded.
    File(PathBuf),
    /// `https://` only.
    Url(String),
}

impl fmt::Display for ListSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListSource::File(path) => write!(f, "{}", path.display()),
            ListSource::Url(url) => f.write_str(url),
        }
    }
}

/// A list to read, in the lists' own terms: the config (`[[list]]`) converts into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSpec {
    pub name: String,
    pub source: ListSource,
    /// The categories its block rules put a name in.
    pub categories: Vec<String>,
    pub format: Format,
    /// false: plain and hosts entries match the exact name only.
    pub subdomains: bool,
    /// How often a URL list is downloaded again.
    pub refresh: std::time::Duration,
}

/// List syntax, as named in the config (`format = "hosts"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Detect the syntax of each line, so mixed files work.
    #[default]
    Auto,
    Domains,
    Hosts,
    Adblock,
    Wildcard,
    Dnsmasq,
    Regex,
    Rpz,
}

impl Format {
    pub const ALL: [Format; 8] = [
        Format::Auto,
        Format::Domains,
        Format::Hosts,
        Format::Adblock,
        Format::Wildcard,
        Format::Dnsmasq,
        Format::Regex,
        Format::Rpz,
    ];

    /// The config name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Domains => "domains",
            Format::Hosts => "hosts",
            Format::Adblock => "adblock",
            Format::Wildcard => "wildcard",
            Format::Dnsmasq => "dnsmasq",
            Format::Regex => "regex",
            Format::Rpz => "rpz",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name the config gave that is not one of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown list format {0:?} (expected auto, domains, hosts, adblock, wildcard, dnsmasq, regex or rpz)"
)]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Format::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    Block,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern<'a> {
    /// Lower-case ASCII (punycode), no trailing dot, validated.
    Domain {
        name: Cow<'a, str>,
        /// Whether the rule also covers every name under `name`.
        subdomains: bool,
    },
    /// A regular expression matched against the lower-case query name without trailing dot;
    /// already validated to compile with the `regex` crate.
    Regex(Cow<'a, str>),
}

impl Pattern<'_> {
    /// Detaches the pattern from the list text, for callers that keep it.
    #[must_use]
    pub fn into_owned(self) -> Pattern<'static> {
        match self {
            Pattern::Domain { name, subdomains } => Pattern::Domain {
                name: Cow::Owned(name.into_owned()),
                subdomains,
            },
            Pattern::Regex(re) => Pattern::Regex(Cow::Owned(re.into_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule<'a> {
    /// 1-based line number in the list.
    pub line: u32,
    pub action: RuleAction,
    pub pattern: Pattern<'a>,
}

impl Rule<'_> {
    #[must_use]
    pub fn into_owned(self) -> Rule<'static> {
        Rule {
            line: self.line,
            action: self.action,
            pattern: self.pattern.into_owned(),
        }
    }
}

/// Why a line (or one name on it) produced no rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SkipReason {
    #[error("modifier a DNS server cannot honour")]
    UnsupportedModifier,
    #[error("rule with a path or URL part")]
    PathOrUrlRule,
    #[error("cosmetic or scriptlet rule")]
    CosmeticRule,
    #[error("invalid domain name")]
    InvalidName,
    #[error("IP address where a name belongs")]
    IpAddress,
    #[error("regex does not compile")]
    InvalidRegex,
    #[error("regex uses look-around or backreferences")]
    UnsupportedRegex,
    #[error("rewrites or forwards instead of blocking")]
    UnsupportedAction,
    #[error("RPZ trigger other than a query name")]
    UnsupportedTrigger,
    #[error("bare regex (a Pi-hole regex list needs format = \"regex\")")]
    BareRegex,
    #[error("unrecognised line")]
    Unrecognised,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub line: u32,
    pub reason: SkipReason,
    /// The trimmed line, cut to 200 bytes.
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Rules emitted, allow rules included.
    pub rules: usize,
    /// Of `rules`, how many allow.
    pub allow_rules: usize,
    /// Localhost-style hosts entries, RPZ preamble records, adblock headers.
    pub ignored: usize,
    pub skipped: usize,
    /// The first [`MAX_FIRST_SKIPPED`] skipped items, in line order.
    pub first_skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    pub format: Format,
    /// Whether plain-domain and hosts entries also cover subdomains (the SPEC default). Other
    /// forms carry their own meaning (`*.x`, `||x^`, `|x^`, RPZ owners) and ignore this.
    pub subdomains: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            format: Format::Auto,
            subdomains: true,
        }
    }
}

/// Streams rules to `on_rule` without keeping the text: must handle 1M+ lines fast (aim < 300 ms
/// per million plain lines in release). No per-line allocation for already-normalised names
/// (borrow from the input); allocate only when a name must be lower-cased or converted to
/// punycode.
pub fn parse_list(text: &str, opts: &ParseOptions, on_rule: impl FnMut(Rule<'_>)) -> ParseStats {
    let mut p = LineParser::new(opts, on_rule);
    // `split` on a char uses memchr.
    for raw in text.split('\n') {
        p.line(raw);
    }
    p.finish()
}

/// Lines parsed between two yields of the core (a few hundred microseconds of work).
const YIELD_EVERY_LINES: u64 = 2048;

/// [`parse_list`] over a reader, one line at a time in one reused buffer, so that a reload
/// never holds a list's text (14 MB for a million names). Invalid UTF-8 is replaced line by
/// line, as [`String::from_utf8_lossy`] would over the whole text. Returns the stats and the
/// bytes read.
pub fn parse_reader(
    mut reader: impl BufRead,
    opts: &ParseOptions,
    on_rule: impl FnMut(Rule<'_>),
) -> std::io::Result<(ParseStats, u64)> {
    let mut p = LineParser::new(opts, on_rule);
    let mut buf = Vec::with_capacity(256);
    let mut bytes = 0u64;
    let mut lines = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += 1;
        if lines.is_multiple_of(YIELD_EVERY_LINES) {
            // A reload parses in the background class; see `sched::yield_now`.
            crate::sched::yield_now();
        }
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        match std::str::from_utf8(raw) {
            Ok(line) => p.line(line),
            Err(_) => p.line(&String::from_utf8_lossy(raw)),
        }
    }
    Ok((p.finish(), bytes))
}

/// The parser's state between lines: fed one line at a time (without its `\n`), it keeps
/// nothing of them but the counts and, for RPZ, the zone's origin and last owner.
pub struct LineParser<F> {
    format: Format,
    subdomains: bool,
    stats: ParseStats,
    on_rule: F,
    line: u32,
    rpz: Rpz,
}

impl<F: FnMut(Rule<'_>)> LineParser<F> {
    pub fn new(opts: &ParseOptions, on_rule: F) -> Self {
        LineParser {
            format: opts.format,
            subdomains: opts.subdomains,
            stats: ParseStats::default(),
            on_rule,
            line: 0,
            rpz: Rpz::default(),
        }
    }

    /// Parses the next line.
    pub fn line(&mut self, raw: &str) {
        self.line = self.line.saturating_add(1);
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        // Lists are often concatenated, so a BOM can open any line, not just the first.
        let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        let mut p = Parser {
            subdomains: self.subdomains,
            stats: &mut self.stats,
            on_rule: &mut self.on_rule,
            line: self.line,
            text: raw,
        };
        if self.format == Format::Rpz {
            self.rpz.line(&mut p, raw);
            return;
        }
        let line = raw.trim_ascii();
        match line.as_bytes().first() {
            None | Some(b'#' | b'!') => return,
            Some(_) => {}
        }
        if self.format == Format::Auto {
            // Finds inline comments in the same pass that routes the line.
            p.auto(line);
            return;
        }
        // Cannot empty the line: its first byte is not `#`.
        let line = strip_inline_comment(line).trim_ascii();
        match self.format {
            Format::Domains => p.plain(line, p.subdomains),
            Format::Hosts => p.hosts(line),
            Format::Adblock => {
                if line.starts_with('[') {
                    p.header(line)
                } else {
                    p.adblock(line)
                }
            }
            Format::Wildcard => p.wildcard(line),
            Format::Dnsmasq => p.dnsmasq(line),
            Format::Regex => p.regex_line(line),
            Format::Auto | Format::Rpz => unreachable!("handled above"),
        }
    }

    pub fn finish(self) -> ParseStats {
        self.stats
    }
}

/// Normalise one domain name the way lists are normalised (lower case, trailing dot removed,
/// Unicode to punycode, validated: labels 1..=63 bytes of [a-z0-9-_], total <= 253). Used by the
/// config for `[allow] domains` and `[[record]]` names.
pub fn normalize_domain(s: &str) -> Result<Cow<'_, str>, SkipReason> {
    normalize_name(s.trim_ascii())
}

/// Validates a regex the way list regexes are validated (see the module notes: `(?i)` added when
/// it has upper case, Pi-hole suffixes and look-around rejected). For config-given regexes.
pub fn normalize_regex(re: &str) -> Result<Cow<'_, str>, SkipReason> {
    if re.is_empty() {
        // Matches every name: certainly a mistake.
        return Err(SkipReason::InvalidRegex);
    }
    if [";querytype=", ";invert", ";reply="]
        .iter()
        .any(|ext| re.contains(ext))
    {
        return Err(SkipReason::UnsupportedModifier);
    }
    let pat = if has_unescaped_upper(re) {
        Cow::Owned(format!("(?i){re}"))
    } else {
        Cow::Borrowed(re)
    };
    match regex::Regex::new(&pat) {
        Ok(_) => Ok(pat),
        Err(_) => {
            // Only the AST parser says precisely why; `regex::Error` is a string.
            use regex_syntax::ast::ErrorKind;
            match regex_syntax::ast::parse::Parser::new().parse(&pat) {
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::UnsupportedLookAround | ErrorKind::UnsupportedBackreference
                    ) =>
                {
                    Err(SkipReason::UnsupportedRegex)
                }
                _ => Err(SkipReason::InvalidRegex),
            }
        }
    }
}

/// An upper-case ASCII letter that is not an escape (`\D`, `\S`, `\W`, `\B`, `\A`, `\P`).
fn has_unescaped_upper(re: &str) -> bool {
    let b = re.as_bytes();
    (0..b.len()).any(|i| b[i].is_ascii_uppercase() && (i == 0 || b[i - 1] != b'\\'))
}

/// One line's view of a [`LineParser`].
struct Parser<'a, F> {
    subdomains: bool,
    stats: &'a mut ParseStats,
    on_rule: &'a mut F,
    line: u32,
    /// The current line, for skip reports.
    text: &'a str,
}

#[derive(Clone, Copy)]
enum Start {
    /// `||`: at a label boundary.
    Label,
    /// `|`: at the start of the name.
    Name,
    /// No anchor: anywhere.
    Anywhere,
}

impl<F: FnMut(Rule<'_>)> Parser<'_, F> {
    fn emit(&mut self, action: RuleAction, pattern: Pattern<'_>) {
        self.stats.rules += 1;
        if action == RuleAction::Allow {
            self.stats.allow_rules += 1;
        }
        (self.on_rule)(Rule {
            line: self.line,
            action,
            pattern,
        });
    }

    fn skip(&mut self, reason: SkipReason) {
        self.stats.skipped += 1;
        if self.stats.first_skipped.len() < MAX_FIRST_SKIPPED {
            self.stats.first_skipped.push(Skipped {
                line: self.line,
                reason,
                text: excerpt(self.text),
            });
        }
    }

    /// Normalises `name` and emits it, or skips it.
    fn domain(&mut self, action: RuleAction, name: &str, subdomains: bool) {
        match normalize_name(name) {
            Ok(name) if action == RuleAction::Block && is_local_name(&name) => {
                self.stats.ignored += 1
            }
            Ok(name) => self.emit(action, Pattern::Domain { name, subdomains }),
            Err(reason) => self.skip(reason),
        }
    }

    fn glob(&mut self, action: RuleAction, prefix: &str, body: &str, suffix: &str) {
        match glob_to_regex(prefix, body, suffix) {
            Ok(re) => self.emit(action, Pattern::Regex(Cow::Owned(re))),
            Err(reason) => self.skip(reason),
        }
    }

    fn regex(&mut self, action: RuleAction, re: &str) {
        match normalize_regex(re) {
            Ok(re) => self.emit(action, Pattern::Regex(re)),
            Err(reason) => self.skip(reason),
        }
    }

    fn auto(&mut self, line: &str) {
        let b = line.as_bytes();
        if b[0] == b'[' {
            return self.header(line);
        }
        // One pass says which of the (rare) slower checks a line needs.
        let mut class = byte_classes(b);
        let mut line = line;
        if class & COSMETIC != 0 {
            let stripped = strip_inline_comment(line).trim_ascii();
            if stripped.len() < line.len() {
                line = stripped;
                class = byte_classes(line.as_bytes());
            }
        }
        let b = line.as_bytes();
        // Before the blank test: scriptlets have blanks.
        if class & COSMETIC != 0 && is_cosmetic(line) {
            return self.skip(SkipReason::CosmeticRule);
        }
        if class & BLANK != 0 {
            let ws = b.iter().position(|&c| c == b' ' || c == b'\t').unwrap_or(0);
            let addr = &line[..ws];
            return if is_ip(addr) {
                self.hosts_names(addr, &line[ws..])
            } else {
                self.skip(SkipReason::Unrecognised)
            };
        }
        if class & SPECIAL == 0 {
            return self.plain(line, self.subdomains);
        }
        // `address=/x/`, and any other `option=` line of a dnsmasq config.
        if let Some(eq) = line.find('=') {
            if eq > 0
                && line[..eq]
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c == b'-')
            {
                return self.dnsmasq(line);
            }
        }
        if b[0] == b'^' {
            return self.skip(SkipReason::BareRegex);
        }
        let mut star = false;
        for &c in b {
            match c {
                b'*' => star = true,
                // Met before any adblock character: `(^|\.)x\.com`, `ad[0-9]*\.x\.com`.
                b'\\' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'+' => {
                    return self.skip(SkipReason::BareRegex)
                }
                b':' if is_ip(line) => return self.skip(SkipReason::IpAddress),
                b'|' | b'@' | b'/' | b'^' | b'$' | b'#' | b';' | b':' | b'=' | b'?' | b'&'
                | b',' => return self.adblock(line),
                _ => {}
            }
        }
        if star {
            self.wildcard(line)
        } else {
            self.plain(line, self.subdomains)
        }
    }

    fn header(&mut self, line: &str) {
        if line.ends_with(']') {
            self.stats.ignored += 1;
        } else {
            self.skip(SkipReason::Unrecognised);
        }
    }

    fn plain(&mut self, name: &str, subdomains: bool) {
        let name = name.strip_prefix('.').unwrap_or(name);
        self.domain(RuleAction::Block, name, subdomains);
    }

    fn hosts(&mut self, line: &str) {
        match line.find([' ', '\t']) {
            Some(ws) if is_ip(&line[..ws]) => self.hosts_names(&line[..ws], &line[ws..]),
            _ => self.skip(SkipReason::Unrecognised),
        }
    }

    fn hosts_names(&mut self, addr: &str, names: &str) {
        let names = names.trim_ascii_start();
        if !names.bytes().any(|c| c == b' ' || c == b'\t') {
            // The usual one name a line.
            return self.hosts_name(addr, names);
        }
        for name in names.split_ascii_whitespace() {
            self.hosts_name(addr, name);
        }
    }

    fn hosts_name(&mut self, addr: &str, name: &str) {
        // `0.0.0.0 0.0.0.0` is part of StevenBlack's local block.
        if name == "0.0.0.0" || name == addr {
            self.stats.ignored += 1;
        } else {
            self.domain(RuleAction::Block, name, self.subdomains);
        }
    }

    fn wildcard(&mut self, tok: &str) {
        let tok = tok.strip_suffix('.').unwrap_or(tok);
        if let Some(rest) = tok.strip_prefix("*.") {
            if rest.contains('*') {
                self.glob(RuleAction::Block, r"(?:^|\.)", rest, "$");
            } else {
                self.domain(RuleAction::Block, rest, true);
            }
        } else if tok.contains('*') {
            self.glob(RuleAction::Block, "^", tok, "$");
        } else {
            // The `-onlydomains` twin of a wildcard list: same meaning without `*.`.
            self.domain(
                RuleAction::Block,
                tok.strip_prefix('.').unwrap_or(tok),
                true,
            );
        }
    }

    fn adblock(&mut self, line: &str) {
        if is_cosmetic(line) {
            return self.skip(SkipReason::CosmeticRule);
        }
        let (action, rule) = match line.strip_prefix("@@") {
            Some(rest) => (RuleAction::Allow, rest),
            None => (RuleAction::Block, line),
        };
        if let Some(re) = rule.strip_prefix('/') {
            if let Some(re) = re.strip_suffix('/') {
                return self.regex(action, re);
            }
            if let Some(i) = re.rfind("/$") {
                return if modifiers_ok(&re[i + 2..]) {
                    self.regex(action, &re[..i])
                } else {
                    self.skip(SkipReason::UnsupportedModifier)
                };
            }
            return self.skip(SkipReason::PathOrUrlRule);
        }
        let pat = match rule.split_once('$') {
            Some((pat, mods)) if modifiers_ok(mods) => pat,
            Some(_) => return self.skip(SkipReason::UnsupportedModifier),
            None => rule,
        };
        let (start, mut body) = if let Some(b) = pat.strip_prefix("||") {
            (Start::Label, b)
        } else if let Some(b) = pat.strip_prefix('|') {
            (Start::Name, b)
        } else {
            (Start::Anywhere, pat)
        };
        let mut end_anchored = false;
        if let Some(b) = body.strip_suffix('|') {
            body = b;
            end_anchored = true;
        }
        if let Some(b) = body.strip_suffix('^') {
            body = b;
            end_anchored = true;
        }
        if body.is_empty() {
            return self.skip(SkipReason::Unrecognised);
        }
        if body.bytes().any(|c| b"/:;?=&%^|#,".contains(&c)) {
            return self.skip(if is_ip(body) {
                SkipReason::IpAddress
            } else {
                SkipReason::PathOrUrlRule
            });
        }
        let prefix = match start {
            Start::Label => r"(?:^|\.)",
            Start::Name => "^",
            Start::Anywhere => "",
        };
        let suffix = if end_anchored { "$" } else { "" };
        if body.contains('*') {
            return self.glob(action, prefix, body, suffix);
        }
        if body.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
            return self.skip(SkipReason::IpAddress);
        }
        if !end_anchored && body.ends_with('.') {
            // `||admulti.`: that name under any top-level domain.
            return self.glob(action, prefix, body, "");
        }
        match start {
            Start::Label => self.domain(action, body, true),
            Start::Name => self.domain(action, body, false),
            Start::Anywhere => {
                if let Some(b) = body.strip_prefix('.') {
                    self.domain(action, b, true)
                } else if body.starts_with('-') {
                    // Part of a label: only a suffix match says it.
                    self.glob(action, "", body, suffix)
                } else {
                    self.domain(action, body, true)
                }
            }
        }
    }

    fn dnsmasq(&mut self, line: &str) {
        let Some((key, value)) = line.split_once('=') else {
            return self.skip(SkipReason::Unrecognised);
        };
        let Some((names, target)) = value
            .trim_ascii()
            .strip_prefix('/')
            .and_then(|v| v.rsplit_once('/'))
        else {
            return self.skip(SkipReason::Unrecognised);
        };
        let blocks = match key.trim_ascii() {
            "local" | "server" => target.is_empty(),
            "address" => matches!(target, "" | "#" | "0.0.0.0" | "::" | "127.0.0.1" | "::1"),
            _ => return self.skip(SkipReason::Unrecognised),
        };
        if !blocks {
            return self.skip(SkipReason::UnsupportedAction);
        }
        for name in names.split('/') {
            if name == "#" {
                // dnsmasq's "every domain": not a list entry.
                self.skip(SkipReason::InvalidName);
                continue;
            }
            let name = name
                .strip_prefix("*.")
                .or_else(|| name.strip_prefix('.'))
                .unwrap_or(name);
            self.domain(RuleAction::Block, name, true);
        }
    }

    fn regex_line(&mut self, line: &str) {
        let re = line
            .strip_prefix('/')
            .and_then(|r| r.strip_suffix('/'))
            .unwrap_or(line);
        self.regex(RuleAction::Block, re);
    }
}

/// Cuts `s` at the first `#` that follows a blank; a `#` inside a token (`x/#`, `##.ad`) stays.
fn strip_inline_comment(s: &str) -> &str {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(i) = s[from..].find('#') {
        let i = from + i;
        if i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t' {
            return &s[..i];
        }
        from = i + 1;
    }
    s
}

const BLANK: u8 = 1;
/// `#` and `$`, which open cosmetic markers.
const COSMETIC: u8 = 2;
/// Anything but a name character or blank: adblock, regex, glob, dnsmasq syntax.
const SPECIAL: u8 = 4;

/// Byte classes for routing auto-detected lines in one pass.
static BYTE_CLASS: [u8; 256] = {
    let mut t = [SPECIAL; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' || b >= 0x80 {
            t[c] = 0;
        }
        c += 1;
    }
    t[b' ' as usize] = BLANK;
    t[b'\t' as usize] = BLANK;
    t[b'#' as usize] = SPECIAL | COSMETIC;
    t[b'$' as usize] = SPECIAL | COSMETIC;
    t
};

fn byte_classes(b: &[u8]) -> u8 {
    b.iter().fold(0, |acc, &c| acc | BYTE_CLASS[usize::from(c)])
}

/// `##`, `#@#`, `#%#`, `#$#`, `#?#` (element hiding, scriptlets) and `$$`, `$@$` (HTML filters).
fn is_cosmetic(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| match c {
        b'#' => matches!(b.get(i + 1), Some(b'#' | b'@' | b'%' | b'$' | b'?')),
        b'$' => b.get(i + 1) == Some(&b'$') || b.get(i + 1..i + 3) == Some(b"@$"),
        _ => false,
    })
}

/// Only `important` can be honoured by a DNS server (and changes nothing here).
fn modifiers_ok(mods: &str) -> bool {
    mods.split(',').all(|m| {
        let m = m.trim_ascii();
        m.is_empty() || m.eq_ignore_ascii_case("important")
    })
}

fn is_ip(t: &str) -> bool {
    if t == "0.0.0.0" || t == "127.0.0.1" {
        return true;
    }
    if t.contains(':') {
        // `fe80::1%lo0`: a scope id is legal in hosts files.
        let addr = t.split_once('%').map_or(t, |(a, _)| a);
        addr.parse::<Ipv6Addr>().is_ok()
    } else {
        t.as_bytes().first().is_some_and(u8::is_ascii_digit) && t.parse::<Ipv4Addr>().is_ok()
    }
}

fn is_local_name(n: &str) -> bool {
    matches!(n.as_bytes().first(), Some(b'l' | b'b' | b'i'))
        && matches!(
            n,
            "localhost"
                | "localhost.localdomain"
                | "local"
                | "broadcasthost"
                | "ip6-localhost"
                | "ip6-loopback"
                | "ip6-localnet"
                | "ip6-mcastprefix"
                | "ip6-allnodes"
                | "ip6-allrouters"
                | "ip6-allhosts"
        )
}

fn excerpt(s: &str) -> String {
    let s = s.trim_ascii();
    if s.len() <= MAX_SKIPPED_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_SKIPPED_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One rule as a short string: `block sub:x`, `block exact:x`, `allow re:...`.
    fn render(r: &Rule<'_>) -> String {
        let action = match r.action {
            RuleAction::Block => "block",
            RuleAction::Allow => "allow",
        };
        match &r.pattern {
            Pattern::Domain {
                name,
                subdomains: true,
            } => format!("{action} sub:{name}"),
            Pattern::Domain {
                name,
                subdomains: false,
            } => format!("{action} exact:{name}"),
            Pattern::Regex(re) => format!("{action} re:{re}"),
        }
    }

    fn run_opts(text: &str, opts: ParseOptions) -> (Vec<String>, ParseStats) {
        let mut out = Vec::new();
        let stats = parse_list(text, &opts, |r| out.push(render(&r)));
        (out, stats)
    }

    fn run(text: &str, format: Format) -> (Vec<String>, ParseStats) {
        run_opts(
            text,
            ParseOptions {
                format,
                subdomains: true,
            },
        )
    }

    fn auto(text: &str) -> Vec<String> {
        run(text, Format::Auto).0
    }

    /// Reasons of the kept skipped items, with their line numbers.
    fn skips(stats: &ParseStats) -> Vec<(u32, SkipReason)> {
        stats
            .first_skipped
            .iter()
            .map(|s| (s.line, s.reason))
            .collect()
    }

    fn skip_reason(line: &str, format: Format) -> Option<SkipReason> {
        let (rules, stats) = run(line, format);
        assert!(rules.is_empty(), "{line:?} gave {rules:?}");
        stats.first_skipped.first().map(|s| s.reason)
    }

    /// Compiles a produced regex and checks which names it matches.
    fn assert_regex(pattern: &str, matches: &[&str], misses: &[&str]) {
        let re = regex::Regex::new(pattern).unwrap();
        for m in matches {
            assert!(re.is_match(m), "{pattern} should match {m}");
        }
        for m in misses {
            assert!(!re.is_match(m), "{pattern} should not match {m}");
        }
    }

    fn only_regex(line: &str) -> String {
        let rules = auto(line);
        assert_eq!(rules.len(), 1, "{line:?} gave {rules:?}");
        rules[0]
            .split_once("re:")
            .expect("a regex rule")
            .1
            .to_owned()
    }

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        assert_eq!("Hosts".parse::<Format>(), Ok(Format::Hosts));
        assert_eq!(Format::Rpz.to_string(), "rpz");
        assert!("abp".parse::<Format>().is_err());
        assert_eq!(ParseOptions::default().format, Format::Auto);
        assert!(ParseOptions::default().subdomains);
    }

    #[test]
    fn plain_domain_covers_subdomains_unless_told_not_to() {
        assert_eq!(auto("tracking.miui.com"), ["block sub:tracking.miui.com"]);
        let exact = ParseOptions {
            format: Format::Auto,
            subdomains: false,
        };
        assert_eq!(
            run_opts("tracking.miui.com", exact).0,
            ["block exact:tracking.miui.com"]
        );
        // Privoxy-style leading dot.
        assert_eq!(auto(".leading.example"), ["block sub:leading.example"]);
    }

    #[test]
    fn subdomains_option_only_touches_plain_and_hosts() {
        let text = "plain.example\n0.0.0.0 hosts.example\n*.wild.example\n||ab.example^\naddress=/dm.example/\n";
        let exact = ParseOptions {
            format: Format::Auto,
            subdomains: false,
        };
        assert_eq!(
            run_opts(text, exact).0,
            [
                "block exact:plain.example",
                "block exact:hosts.example",
                "block sub:wild.example",
                "block sub:ab.example",
                "block sub:dm.example",
            ]
        );
    }

    #[test]
    fn hosts_lines_any_address_tab_or_space_several_names() {
        let text = "0.0.0.0 a.example\n127.0.0.1\tb.example\n:: c.example\n::1 d.example\n\
                    fe80::1%lo0 e.example\n192.168.1.1   f.example\t g.example h.example\n";
        assert_eq!(
            auto(text),
            [
                "block sub:a.example",
                "block sub:b.example",
                "block sub:c.example",
                "block sub:d.example",
                "block sub:e.example",
                "block sub:f.example",
                "block sub:g.example",
                "block sub:h.example",
            ]
        );
    }

    #[test]
    fn hosts_local_block_is_ignored_never_blocked() {
        let text = "127.0.0.1 localhost\n127.0.0.1 localhost.localdomain\n127.0.0.1 local\n\
                    255.255.255.255 broadcasthost\n::1 localhost ip6-localhost ip6-loopback\n\
                    fe80::1%lo0 localhost\nff00::0 ip6-localnet\nff00::0 ip6-mcastprefix\n\
                    ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\nff02::3 ip6-allhosts\n\
                    0.0.0.0 0.0.0.0\n";
        let (rules, stats) = run(text, Format::Auto);
        assert!(rules.is_empty(), "{rules:?}");
        assert_eq!((stats.ignored, stats.skipped), (14, 0));
        // Not in any format.
        assert!(auto("localhost\n||local^\n*.localhost\n").is_empty());
        // An allow rule for one is harmless and kept.
        assert_eq!(auto("@@||localhost^"), ["allow sub:localhost"]);
    }

    #[test]
    fn ip_literal_in_name_column_is_skipped() {
        let (rules, stats) = run("0.0.0.0 130.211.230.53 ok.example\n", Format::Auto);
        assert_eq!(rules, ["block sub:ok.example"]);
        assert_eq!(skips(&stats), [(1, SkipReason::IpAddress)]);
        assert_eq!(
            skip_reason("85.17.187.83", Format::Auto),
            Some(SkipReason::IpAddress)
        );
        assert_eq!(
            skip_reason("fe80::1", Format::Auto),
            Some(SkipReason::IpAddress)
        );
        assert_eq!(skip_reason("::", Format::Auto), Some(SkipReason::IpAddress));
        assert_eq!(
            skip_reason("0.0.0.0 ::1", Format::Auto),
            Some(SkipReason::IpAddress)
        );
    }

    #[test]
    fn wildcard_means_apex_and_subdomains() {
        assert_eq!(auto("*.miui.com"), ["block sub:miui.com"]);
        assert_eq!(run("miui.com", Format::Wildcard).0, ["block sub:miui.com"]);
        let exact = ParseOptions {
            format: Format::Wildcard,
            subdomains: false,
        };
        assert_eq!(
            run_opts("*.miui.com\nmiui.net", exact).0,
            ["block sub:miui.com", "block sub:miui.net"]
        );
    }

    #[test]
    fn wildcard_glob_inside_a_label_becomes_an_anchored_regex() {
        let re = only_regex("*.ads*.msads.net");
        assert_eq!(re, r"(?:^|\.)ads.*\.msads\.net$");
        assert_regex(
            &re,
            &["ads1.msads.net", "x.ads12.msads.net", "ads.msads.net"],
            &["xads1.msads.net", "msads.net", "ads1.msads.net.evil"],
        );
        let re = only_regex("ads*.example.com");
        assert_regex(
            &re,
            &["ads1.example.com"],
            &["x.ads1.example.com", "example.com"],
        );
        // Nothing literal: would match every name.
        for line in ["*", "*.*", "**"] {
            assert_eq!(
                skip_reason(line, Format::Auto),
                Some(SkipReason::InvalidName),
                "{line}"
            );
        }
    }

    #[test]
    fn adblock_anchors() {
        for line in [
            "||x.example^",
            "||x.example^|",
            "||x.example|",
            "||x.example",
            "x.example^",
            ".x.example^",
        ] {
            assert_eq!(
                run(line, Format::Adblock).0,
                ["block sub:x.example"],
                "{line}"
            );
            assert_eq!(auto(line), ["block sub:x.example"], "{line}");
        }
        // `|` anchors at the start of the name: exactly that name (AGH semantics).
        assert_eq!(auto("|x.example^"), ["block exact:x.example"]);
        assert_eq!(auto("|x.example^|"), ["block exact:x.example"]);
    }

    #[test]
    fn adblock_exceptions() {
        assert_eq!(auto("@@||ok.miui.com^"), ["allow sub:ok.miui.com"]);
        assert_eq!(auto("@@||a.adwolf.ru^|"), ["allow sub:a.adwolf.ru"]);
        assert_eq!(
            auto("@@dnsotls-ds.metric.gstatic.com^"),
            ["allow sub:dnsotls-ds.metric.gstatic.com"]
        );
        assert_eq!(auto("@@|host.example^|"), ["allow exact:host.example"]);
        let re = only_regex("@@-ds.metric.gstatic.com^|");
        assert_eq!(re, r"-ds\.metric\.gstatic\.com$");
        assert_regex(
            &re,
            &["dnsotls-ds.metric.gstatic.com"],
            &["ds.metric.gstatic.com"],
        );
        let (rules, stats) = run("@@||cdn.us*.exponea.com^|", Format::Auto);
        assert_eq!(rules, [r"allow re:(?:^|\.)cdn\.us.*\.exponea\.com$"]);
        assert_eq!((stats.rules, stats.allow_rules), (1, 1));
    }

    #[test]
    fn adblock_modifiers() {
        assert_eq!(auto("||x.example^$important"), ["block sub:x.example"]);
        assert_eq!(auto("@@||x.example^$important"), ["allow sub:x.example"]);
        for line in [
            "||x.example^$ctag=device_tv",
            "||x.example^$ctag=device_tv|device_other",
            "||x.example^$dnsrewrite=NXDOMAIN",
            "||click.aliexpress.com^$image,script",
            "||x.example^$client=192.168.1.2",
            "||x.example^$denyallow=y.example",
            "||x.example^$important,ctag=tv",
            "/^ads/$dnstype=AAAA",
        ] {
            assert_eq!(
                skip_reason(line, Format::Auto),
                Some(SkipReason::UnsupportedModifier),
                "{line}"
            );
        }
    }

    #[test]
    fn adblock_url_and_cosmetic_rules_are_skipped() {
        for line in [
            "||engine.*.medialand.ru/",
            "||ad.doubleclick.*;sz=",
            "||footbolka.ru^*partner=",
            "||covertarget.com^*_*.php",
            "://oyy.ru^",
            "://*.a-akamaihd.com^",
            "x://x.x^",
            "http://7ads.ru^",
            "//oyy.ru^",
            "||mxtads.com:8040",
            "||applift.com^empty",
            "||pokerstrategy.com/#",
            "/cdn-cgi/pe/bag2?r[]=*eth-pocket.de",
        ] {
            assert_eq!(
                skip_reason(line, Format::Auto),
                Some(SkipReason::PathOrUrlRule),
                "{line}"
            );
            assert_eq!(
                skip_reason(line, Format::Adblock),
                Some(SkipReason::PathOrUrlRule),
                "{line}"
            );
        }
        for line in [
            "example.com##.banner",
            "example.com#@#.banner",
            "estream.nu#%#Object.defineProperty(window, 'WebAssembly', { get: function() { return; } });",
            "example.com#$#.ad { display: none !important; }",
            "example.com#?#.ad:has(> a)",
            "example.com$$script[data-x]",
            "example.com$@$script",
        ] {
            assert_eq!(skip_reason(line, Format::Auto), Some(SkipReason::CosmeticRule), "{line}");
        }
        // Generic cosmetic rules start with `#`: comments.
        let (rules, stats) = run("##.banner\n", Format::Adblock);
        assert!(rules.is_empty());
        assert_eq!(stats.skipped, 0);
    }

    #[test]
    fn adblock_headers_comments_and_inline_comment() {
        let text = "[Adblock Plus 2.0]\n! Title: x\n! \n!vcs.vdspf.com  #  commented out\n\
                    ||api.thetake.com^ # https://thetake.ai/\n";
        let (rules, stats) = run(text, Format::Auto);
        assert_eq!(rules, ["block sub:api.thetake.com"]);
        assert_eq!((stats.ignored, stats.skipped), (1, 0));
        assert_eq!(run(text, Format::Adblock).0, rules);
    }

    #[test]
    fn adblock_globs_become_regexes() {
        let re = only_regex("||alishop*.ru^");
        assert_eq!(re, r"(?:^|\.)alishop.*\.ru$");
        assert_regex(
            &re,
            &["alishop1.ru", "www.alishop-x.ru"],
            &["xalishop1.ru", "alishop1.ru.com"],
        );
        let re = only_regex("|*app1e*^");
        assert_eq!(re, "^.*app1e.*$");
        assert_regex(&re, &["app1e.com", "login.app1e-id.net"], &["apple.com"]);
        let re = only_regex("||hbbtv.*.de^");
        assert_regex(
            &re,
            &["hbbtv.zdf.de", "x.hbbtv.a.b.de"],
            &["hbbtv.de", "hbbtv.zdf.com"],
        );
        let re = only_regex("||invenio_tracking_*.sgnapps.com^");
        assert_regex(&re, &["invenio_tracking_7.sgnapps.com"], &[]);
        let re = only_regex("||bondzgi*.");
        assert_regex(&re, &["bondzgi1.com", "bondzgi.ru"], &["bondzg.ru"]);
    }

    #[test]
    fn adblock_name_prefix_under_any_tld() {
        let re = only_regex("||fkp.samsungcloudsolution.");
        assert_eq!(re, r"(?:^|\.)fkp\.samsungcloudsolution\.");
        assert_regex(
            &re,
            &[
                "fkp.samsungcloudsolution.com",
                "a.fkp.samsungcloudsolution.net",
            ],
            &["xfkp.samsungcloudsolution.com"],
        );
        assert_eq!(
            skip_reason("||104.154.", Format::Auto),
            Some(SkipReason::IpAddress)
        );
        assert_eq!(
            skip_reason("||37.220.26.135^", Format::Auto),
            Some(SkipReason::IpAddress)
        );
    }

    #[test]
    fn adblock_regex_rules() {
        assert_eq!(
            auto(r"/^ad[0-9]*\.xiaomi\.com$/"),
            [r"block re:^ad[0-9]*\.xiaomi\.com$"]
        );
        assert_eq!(auto(r"@@/^ok\.example$/"), [r"allow re:^ok\.example$"]);
        assert_eq!(
            auto(r"/^ad\.example$/$important"),
            [r"block re:^ad\.example$"]
        );
        assert_eq!(
            skip_reason(
                r"/(^|\.)(0x)?(?=[0-9a-f]*[a-f])[0-9a-f]{10,64}\.[a-z]{2,}$/",
                Format::Auto
            ),
            Some(SkipReason::UnsupportedRegex)
        );
        assert_eq!(
            skip_reason("/ad(/", Format::Auto),
            Some(SkipReason::InvalidRegex)
        );
        assert_eq!(
            skip_reason("//", Format::Auto),
            Some(SkipReason::InvalidRegex)
        );
        // Meant for answer addresses; harmless as a name regex, kept.
        assert_eq!(auto("/^fe80:/"), ["block re:^fe80:"]);
    }

    #[test]
    fn regex_format_reads_bare_pihole_regexes() {
        let posix = r"^ad([sxv]?[0-9]*|system)[_.-]([^.[:space:]]+\.){1,}|[_.-]ad([sxv]?[0-9]*|system)[_.-]";
        let (rules, stats) = run(posix, Format::Regex);
        assert_eq!(rules, [format!("block re:{posix}")]);
        assert_eq!(stats.skipped, 0);
        assert_regex(
            posix,
            &["ads1.tracker.example", "x.ad-server.example"],
            &["adobe.com"],
        );
        assert_eq!(
            run(r"/^s[0-9]\.example$/", Format::Regex).0,
            [r"block re:^s[0-9]\.example$"]
        );
        assert_eq!(
            run(r"^(foo)\1$", Format::Regex).1.first_skipped[0].reason,
            SkipReason::UnsupportedRegex
        );
        assert_eq!(
            run(r"^(?<!x)y$", Format::Regex).1.first_skipped[0].reason,
            SkipReason::UnsupportedRegex
        );
        assert_eq!(
            run(r"^ad(\.", Format::Regex).1.first_skipped[0].reason,
            SkipReason::InvalidRegex
        );
        assert_eq!(
            run(r"^ads\.example$;querytype=AAAA", Format::Regex)
                .1
                .first_skipped[0]
                .reason,
            SkipReason::UnsupportedModifier
        );
        // In auto mode they cannot be told from garbage: skipped with a hint.
        for line in [
            r"(^|\.)lgsmartad\.com",
            r"^[a-rt-z][a-z]{10,14}$",
            r"ad[0-9]+\.example",
        ] {
            assert_eq!(
                skip_reason(line, Format::Auto),
                Some(SkipReason::BareRegex),
                "{line}"
            );
        }
    }

    #[test]
    fn regex_with_upper_case_is_made_case_insensitive() {
        let re = normalize_regex("^[A-Z]+\\.ads$").unwrap();
        assert_eq!(re, "(?i)^[A-Z]+\\.ads$");
        assert_regex(&re, &["abc.ads"], &[]);
        // Escapes are not letters.
        assert_eq!(normalize_regex(r"^\D+\.ads$").unwrap(), r"^\D+\.ads$");
        assert!(matches!(
            normalize_regex(r"^ads$").unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(normalize_regex(""), Err(SkipReason::InvalidRegex));
    }

    #[test]
    fn dnsmasq_forms() {
        let text = "address=/a.example/0.0.0.0\naddress=/b.example/\naddress=/c.example/::\n\
                    server=/d.example/\nlocal=/e.example/\naddress=/f.example/g.example/#\n\
                    server=/*.h.example/\naddress=/i.example/127.0.0.1\n";
        let expect = [
            "block sub:a.example",
            "block sub:b.example",
            "block sub:c.example",
            "block sub:d.example",
            "block sub:e.example",
            "block sub:f.example",
            "block sub:g.example",
            "block sub:h.example",
            "block sub:i.example",
        ];
        assert_eq!(run(text, Format::Auto).0, expect);
        assert_eq!(run(text, Format::Dnsmasq).0, expect);
        for line in [
            "server=/x.example/1.2.3.4",
            "server=/x.example/#",
            "address=/x.example/10.0.0.1",
        ] {
            assert_eq!(
                skip_reason(line, Format::Dnsmasq),
                Some(SkipReason::UnsupportedAction),
                "{line}"
            );
        }
        assert_eq!(
            skip_reason("server=/#/", Format::Dnsmasq),
            Some(SkipReason::InvalidName)
        );
        assert_eq!(
            skip_reason("cache-size=1000", Format::Auto),
            Some(SkipReason::Unrecognised)
        );
        assert_eq!(
            skip_reason("bogus-priv", Format::Dnsmasq),
            Some(SkipReason::Unrecognised)
        );
    }

    #[test]
    fn rpz_hagezi_preamble_and_records() {
        let text = "$TTL 3600\n@ SOA localhost. root.localhost. 1786745220 43200 3600 259200 3600\n  NS  localhost.\n;\n\
                    ; Title: x\n;\nh4g3z1-native.xiaomi.web.app CNAME .\n*.h4g3z1-native.xiaomi.web.app CNAME .\n";
        let (rules, stats) = run(text, Format::Rpz);
        assert_eq!(
            rules,
            [
                "block exact:h4g3z1-native.xiaomi.web.app",
                "block sub:h4g3z1-native.xiaomi.web.app"
            ]
        );
        assert_eq!((stats.ignored, stats.skipped), (3, 0));
        // Only by explicit format.
        assert_eq!(
            skip_reason("x.example CNAME .", Format::Auto),
            Some(SkipReason::Unrecognised)
        );
    }

    #[test]
    fn reader_gives_what_the_text_gives() {
        // Every fixture in every format, plus CRLF, no final newline, invalid UTF-8 and RPZ
        // owners carried over blank-led lines: line numbers, rules and stats all equal.
        let texts: [&[u8]; 14] = [
            include_bytes!("../../tests/fixtures/lists/adblock-quirks.txt"),
            include_bytes!("../../tests/fixtures/lists/dnsmasq.txt"),
            include_bytes!("../../tests/fixtures/lists/hosts-quirks-bom.txt"),
            include_bytes!("../../tests/fixtures/lists/hosts-quirks-crlf.txt"),
            include_bytes!("../../tests/fixtures/lists/hosts-quirks.txt"),
            include_bytes!("../../tests/fixtures/lists/mixed.txt"),
            include_bytes!("../../tests/fixtures/lists/regex.list"),
            include_bytes!("../../tests/fixtures/lists/rpz-origin.txt"),
            include_bytes!("../../tests/fixtures/lists/rpz.txt"),
            include_bytes!("../../tests/fixtures/lists/unicode.txt"),
            include_bytes!("../../tests/fixtures/lists/wildcard.txt"),
            b"a.example\r\nb\xff.example\n\xe2\x82\n0.0.0.0 c.example",
            b"$ORIGIN rpz.example.\nx CNAME .\n  TXT \"t\"\n  CNAME rpz-passthru.\n",
            b"",
        ];
        for text in texts {
            for format in Format::ALL {
                let opts = ParseOptions {
                    format,
                    subdomains: true,
                };
                let mut want = Vec::new();
                let lossy = String::from_utf8_lossy(text);
                let want_stats = parse_list(&lossy, &opts, |r| {
                    want.push((r.line, render(&r)));
                });
                let mut got = Vec::new();
                let (got_stats, bytes) = parse_reader(text, &opts, |r| {
                    got.push((r.line, render(&r)));
                })
                .unwrap();
                assert_eq!(got, want, "{format:?}");
                assert_eq!(got_stats, want_stats, "{format:?}");
                assert_eq!(bytes, text.len() as u64);
            }
        }
    }

    #[test]
    fn rpz_actions_fields_and_parentheses() {
        let text = "@ IN SOA ns. admin. (\n 1 ; serial\n 3600 600 86400 300 )\n\
                    a.example 3600 IN CNAME .\nb.example IN 3600 cname . ; note\nc.example CNAME *.\n\
                    d.example CNAME rpz-drop.\ne.example CNAME rpz-passthru.\n*.f.example CNAME rpz-passthru.\n\
                    g.example A 127.0.0.1\n  TXT \"more\"\nh.example CNAME garden.example.\n\
                    i.example CNAME rpz-tcp-only.\n32.1.0.0.127.rpz-ip CNAME .\nns.x.rpz-nsdname CNAME .\n\
                    $INCLUDE other.zone\nJ.Example. CNAME .\n";
        let (rules, stats) = run(text, Format::Rpz);
        assert_eq!(
            rules,
            [
                "block exact:a.example",
                "block exact:b.example",
                "block exact:c.example",
                "block exact:d.example",
                "allow exact:e.example",
                "allow sub:f.example",
                "block exact:j.example",
            ]
        );
        assert_eq!(stats.ignored, 1);
        assert_eq!(
            skips(&stats),
            [
                (10, SkipReason::UnsupportedAction),
                (11, SkipReason::UnsupportedAction),
                (12, SkipReason::UnsupportedAction),
                (13, SkipReason::UnsupportedAction),
                (14, SkipReason::UnsupportedTrigger),
                (15, SkipReason::UnsupportedTrigger),
                (16, SkipReason::Unrecognised),
            ]
        );
    }

    #[test]
    fn rpz_origin_is_stripped() {
        let text = "$ORIGIN rpz.example.\n@ SOA ns. admin. 1 2 3 4 5\nrel.example CNAME .\n\
                    abs.example.rpz.example. CNAME .\n*.wild.example.RPZ.example. CNAME .\n\
                    rpz.example. CNAME .\n$ORIGIN sub.rpz.example.\nleaf CNAME .\n";
        let (rules, stats) = run(text, Format::Rpz);
        assert_eq!(
            rules,
            [
                "block exact:rel.example",
                "block exact:abs.example",
                "block sub:wild.example",
                "block exact:leaf.sub"
            ]
        );
        assert_eq!(skips(&stats), [(6, SkipReason::Unrecognised)]);
        // An absolute SOA owner names the zone too.
        let text = "rpz.example. SOA ns. admin. 1 2 3 4 5\nx.example.rpz.example. CNAME .\n";
        assert_eq!(run(text, Format::Rpz).0, ["block exact:x.example"]);
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let text =
            "# c\n! c\n\n   \n\t# c\n  spaced.example  \nhash.example # c\ntab.example\t# c\n\
                    keep#hash.example\n";
        let (rules, stats) = run(text, Format::Auto);
        assert_eq!(
            rules,
            [
                "block sub:spaced.example",
                "block sub:hash.example",
                "block sub:tab.example"
            ]
        );
        assert_eq!(skips(&stats), [(9, SkipReason::PathOrUrlRule)]);
    }

    #[test]
    fn crlf_bom_and_missing_final_newline() {
        let text = "\u{feff}# header\r\nA.Example.\r\n0.0.0.0 b.example \r\n\r\n\u{feff}c.example";
        let (rules, stats) = run(text, Format::Auto);
        assert_eq!(
            rules,
            [
                "block sub:a.example",
                "block sub:b.example",
                "block sub:c.example"
            ]
        );
        assert_eq!(stats.skipped, 0);
        // Line numbers count CRLF lines.
        let mut lines = Vec::new();
        parse_list(text, &ParseOptions::default(), |r| lines.push(r.line));
        assert_eq!(lines, [2, 3, 5]);
    }

    #[test]
    fn names_are_borrowed_unless_rewritten() {
        let mut owned = Vec::new();
        let text =
            "a.example\nB.example\nc.example.\n0.0.0.0 d.example\nbücher.example\n||e.example^\n";
        parse_list(text, &ParseOptions::default(), |r| {
            if let Pattern::Domain { name, .. } = r.pattern {
                owned.push((name.to_string(), matches!(name, Cow::Owned(_))));
            }
        });
        assert_eq!(
            owned,
            [
                ("a.example".to_owned(), false),
                ("b.example".to_owned(), true),
                ("c.example".to_owned(), false),
                ("d.example".to_owned(), false),
                ("xn--bcher-kva.example".to_owned(), true),
                ("e.example".to_owned(), false),
            ]
        );
    }

    #[test]
    fn unicode_names_become_punycode() {
        assert_eq!(auto("банрек.рус"), ["block sub:xn--80abnuns.xn--p1acf"]);
        assert_eq!(auto("||хельга.рф^"), ["block sub:xn--80affy2c3b.xn--p1ai"]);
        assert_eq!(auto("ÜBER.example"), ["block sub:xn--ber-goa.example"]);
        assert_eq!(
            normalize_domain("Bücher.Example.").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn underscores_are_allowed() {
        assert_eq!(auto("_dns.example"), ["block sub:_dns.example"]);
        assert_eq!(
            auto("0.0.0.0 ghm_bulgaria.hit.gemius.pl"),
            ["block sub:ghm_bulgaria.hit.gemius.pl"]
        );
        assert_eq!(
            auto("||_dns.resolver.arpa^"),
            ["block sub:_dns.resolver.arpa"]
        );
        assert_eq!(
            auto("_xmpp-client._tcp.managed.xmpp.foxtel.com.au"),
            ["block sub:_xmpp-client._tcp.managed.xmpp.foxtel.com.au"]
        );
    }

    #[test]
    fn normalize_domain_validates() {
        assert_eq!(normalize_domain("  Example.COM. ").unwrap(), "example.com");
        assert!(matches!(
            normalize_domain("example.com").unwrap(),
            Cow::Borrowed("example.com")
        ));
        let label63 = "a".repeat(63);
        assert!(normalize_domain(&format!("{label63}.example")).is_ok());
        let long = format!("{}.example", "a".repeat(64));
        let too_long = [label63.as_str(); 4].join(".");
        assert_eq!(too_long.len(), 255);
        let max = format!("{}.{}", [label63.as_str(); 3].join("."), "a".repeat(61));
        assert_eq!(max.len(), 253);
        assert!(normalize_domain(&max).is_ok());
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            long.as_str(),
            too_long.as_str(),
            "*.a.example",
            "a b",
            "a/b",
            "x.123",
        ] {
            assert_eq!(
                normalize_domain(bad),
                Err(SkipReason::InvalidName),
                "{bad:?}"
            );
        }
        assert_eq!(normalize_domain("10.0.0.1"), Err(SkipReason::IpAddress));
        assert_eq!(normalize_domain("::1"), Err(SkipReason::IpAddress));
        assert!(normalize_domain("com").is_ok());
        assert!(normalize_domain("123.example").is_ok());
    }

    #[test]
    fn explicit_formats_are_strict() {
        assert_eq!(
            skip_reason("0.0.0.0 a.example", Format::Domains),
            Some(SkipReason::InvalidName)
        );
        assert_eq!(
            skip_reason("a.example", Format::Hosts),
            Some(SkipReason::Unrecognised)
        );
        assert_eq!(
            skip_reason("||a.example^", Format::Wildcard),
            Some(SkipReason::InvalidName)
        );
        assert_eq!(
            skip_reason("a.example", Format::Dnsmasq),
            Some(SkipReason::Unrecognised)
        );
        assert_eq!(run("0.0.0.0 a.example b.example", Format::Hosts).0.len(), 2);
        // A domain in an adblock list is a domain rule.
        assert_eq!(
            run("octopusads.net", Format::Adblock).0,
            ["block sub:octopusads.net"]
        );
    }

    #[test]
    fn bad_lines_are_counted_and_the_first_ten_kept() {
        let mut text = String::from("ok.example\n");
        for i in 0..15 {
            text.push_str(&format!("bad{i}!.example\n"));
        }
        text.push_str(&format!("{}!\n", "é".repeat(300)));
        let (rules, stats) = run(&text, Format::Auto);
        assert_eq!(rules, ["block sub:ok.example"]);
        assert_eq!(stats.skipped, 16);
        assert_eq!(stats.first_skipped.len(), MAX_FIRST_SKIPPED);
        assert_eq!(stats.first_skipped[0].line, 2);
        assert_eq!(stats.first_skipped[0].text, "bad0!.example");
        assert_eq!(
            stats.first_skipped[0].reason.to_string(),
            "invalid domain name"
        );
        assert_eq!(stats.first_skipped[9].line, 11);
        // A long line is cut on a character boundary.
        let (_, stats) = run(&format!("{}!", "é".repeat(300)), Format::Auto);
        let text = &stats.first_skipped[0].text;
        assert!(text.len() <= MAX_SKIPPED_TEXT + '…'.len_utf8() && text.ends_with('…'));
    }

    #[test]
    fn skip_reasons_read_as_phrases() {
        assert_eq!(
            SkipReason::UnsupportedModifier.to_string(),
            "modifier a DNS server cannot honour"
        );
        assert_eq!(
            SkipReason::PathOrUrlRule.to_string(),
            "rule with a path or URL part"
        );
    }

    #[test]
    fn rules_can_outlive_the_text_once_owned() {
        let kept: Vec<Rule<'static>> = {
            let text = String::from("a.example\n/^b/\n");
            let mut v = Vec::new();
            parse_list(&text, &ParseOptions::default(), |r| v.push(r.into_owned()));
            v
        };
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].pattern, Pattern::Regex(Cow::Borrowed("^b")));
    }

    // Fixture files: written for these tests from the quirks of real lists (see their README).

    const HOSTS: &str = include_str!("../../tests/fixtures/lists/hosts-quirks.txt");
    const HOSTS_CRLF: &str = include_str!("../../tests/fixtures/lists/hosts-quirks-crlf.txt");
    const HOSTS_BOM: &str = include_str!("../../tests/fixtures/lists/hosts-quirks-bom.txt");

    #[test]
    fn fixture_hosts_quirks() {
        let (rules, stats) = run(HOSTS, Format::Auto);
        assert_eq!(
            rules,
            [
                "block sub:tracking.miui.com",
                "block sub:misspelled.example",
                "block sub:phishing.example",
                "block sub:tab.example",
                "block sub:upper.example.com",
                "block sub:trailing-dot.example",
                "block sub:ghm_bulgaria.hit.gemius.pl",
                "block sub:xn--yotu-1ra.be",
                "block sub:v6-null.example",
                "block sub:loopback.example",
                "block sub:a.example",
                "block sub:b.example",
                "block sub:c.example",
                "block sub:good.example",
                "block sub:last.example",
            ]
        );
        assert_eq!(stats.ignored, 14);
        assert_eq!(
            skips(&stats),
            [(26, SkipReason::IpAddress), (30, SkipReason::InvalidName)]
        );
        assert_eq!(run(HOSTS, Format::Hosts), (rules, stats));
    }

    #[test]
    fn fixture_hosts_crlf_and_bom_variants_parse_identically() {
        assert!(HOSTS_CRLF.contains("\r\n") && HOSTS_BOM.starts_with('\u{feff}'));
        let expect = run(HOSTS, Format::Auto);
        assert_eq!(run(HOSTS_CRLF, Format::Auto), expect);
        assert_eq!(run(HOSTS_BOM, Format::Auto), expect);
        assert_eq!(run(HOSTS_CRLF, Format::Hosts), expect);
    }

    #[test]
    fn fixture_adblock_quirks() {
        let text = include_str!("../../tests/fixtures/lists/adblock-quirks.txt");
        let (rules, stats) = run(text, Format::Auto);
        assert_eq!(
            rules,
            [
                "block sub:tracking.miui.com",
                "block sub:upper.example.com",
                "block sub:pipe-end.example",
                "block sub:no-caret.example",
                "block exact:exact.example",
                "allow sub:ok.miui.com",
                "allow exact:exact-allow.example",
                "allow sub:unanchored-allow.example",
                r"allow re:-ds\.metric\.example$",
                "block sub:leading-dot.example",
                "block sub:important.example",
                r"block re:(?:^|\.)alishop.*\.ru$",
                "block re:^.*typo.*$",
                r"block re:(?:^|\.)tld-prefix\.",
                "block sub:_dns.resolver.arpa",
                "block sub:api.thetake.com",
                r"block re:^ad[0-9]*\.xiaomi\.com$",
                r"allow re:^allowed[0-9]+\.example$",
                "block sub:xn--80abnuns.xn--p1acf",
            ]
        );
        assert_eq!(
            (stats.rules, stats.allow_rules, stats.ignored, stats.skipped),
            (19, 5, 1, 12)
        );
        use SkipReason::*;
        assert_eq!(
            skips(&stats),
            [
                (15, UnsupportedModifier),
                (16, UnsupportedModifier),
                (17, UnsupportedModifier),
                (18, PathOrUrlRule),
                (19, PathOrUrlRule),
                (20, PathOrUrlRule),
                (21, PathOrUrlRule),
                (22, CosmeticRule),
                (23, CosmeticRule),
                (24, CosmeticRule),
            ]
        );
        assert_eq!(run(text, Format::Adblock), (rules, stats));
    }

    #[test]
    fn fixture_dnsmasq() {
        let text = include_str!("../../tests/fixtures/lists/dnsmasq.txt");
        let (rules, stats) = run(text, Format::Dnsmasq);
        assert_eq!(
            rules,
            [
                "block sub:address.example",
                "block sub:empty.example",
                "block sub:null6.example",
                "block sub:a.example",
                "block sub:b.example",
                "block sub:server.example",
                "block sub:local-directive.example",
                "block sub:upper.example",
            ]
        );
        use SkipReason::*;
        assert_eq!(
            skips(&stats),
            [
                (9, UnsupportedAction),
                (10, UnsupportedAction),
                (11, InvalidName),
                (12, Unrecognised)
            ]
        );
        assert_eq!(run(text, Format::Auto), (rules, stats));
    }

    #[test]
    fn fixture_rpz() {
        let text = include_str!("../../tests/fixtures/lists/rpz.txt");
        let (rules, stats) = run(text, Format::Rpz);
        assert_eq!(
            rules,
            [
                "block exact:tracking.miui.com",
                "block sub:tracking.miui.com",
                "block exact:ttl-class.example",
                "block exact:class-ttl.example",
                "block exact:nodata.example",
                "block exact:drop.example",
                "allow exact:passthru.example",
                "allow sub:passthru-tree.example",
                "block exact:upper.example",
            ]
        );
        assert_eq!((stats.ignored, stats.allow_rules), (3, 2));
        use SkipReason::*;
        assert_eq!(
            skips(&stats),
            [
                (17, UnsupportedAction),
                (18, UnsupportedAction),
                (19, UnsupportedTrigger)
            ]
        );
    }

    #[test]
    fn fixture_rpz_origin() {
        let text = include_str!("../../tests/fixtures/lists/rpz-origin.txt");
        let (rules, stats) = run(text, Format::Rpz);
        assert_eq!(
            rules,
            [
                "block exact:relative.example",
                "block exact:absolute.example",
                "block sub:wild.example",
                "block exact:under-sub.sub",
            ]
        );
        assert_eq!((stats.ignored, stats.skipped), (5, 0));
    }

    #[test]
    fn fixture_wildcard() {
        let text = include_str!("../../tests/fixtures/lists/wildcard.txt");
        let (rules, stats) = run(text, Format::Wildcard);
        assert_eq!(
            rules,
            [
                "block sub:miui.com",
                r"block re:(?:^|\.)ads.*\.msads\.net$",
                r"block re:^ads.*\.example\.com$",
                "block sub:xn--yotu-1ra.be",
                "block sub:09_19.supfree.net",
                "block sub:plain-in-wildcard.example",
            ]
        );
        assert_eq!(
            skips(&stats),
            [(8, SkipReason::InvalidName), (9, SkipReason::InvalidName)]
        );
        assert_eq!(run(text, Format::Auto), (rules, stats));
    }

    #[test]
    fn fixture_regex_list() {
        let text = include_str!("../../tests/fixtures/lists/regex.list");
        let (rules, stats) = run(text, Format::Regex);
        assert_eq!(
            rules,
            [
                r"block re:^ad([sxv]?[0-9]*|system)[_.-]([^.[:space:]]+\.){1,}|[_.-]ad([sxv]?[0-9]*|system)[_.-]",
                r"block re:(^|\.)telemetry\.example$",
                r"block re:^slashed[0-9]*\.example$",
                r"block re:(?i)^[A-Z]+\.upper\.example$",
            ]
        );
        use SkipReason::*;
        assert_eq!(
            skips(&stats),
            [
                (8, UnsupportedModifier),
                (9, UnsupportedRegex),
                (10, UnsupportedRegex),
                (11, InvalidRegex)
            ]
        );
    }

    #[test]
    fn fixture_mixed() {
        let text = include_str!("../../tests/fixtures/lists/mixed.txt");
        let (rules, stats) = run(text, Format::Auto);
        assert_eq!(
            rules,
            [
                "block sub:plain.example",
                "block sub:hosts.example",
                "block sub:wildcard.example",
                "block sub:adblock.example",
                "allow sub:allowed.example",
                "block sub:dnsmasq.example",
                r"block re:^regex[0-9]+\.example$",
            ]
        );
        assert_eq!(
            skips(&stats),
            [(9, SkipReason::BareRegex), (10, SkipReason::Unrecognised)]
        );
    }

    #[test]
    fn fixture_unicode() {
        let text = include_str!("../../tests/fixtures/lists/unicode.txt");
        let (rules, stats) = run(text, Format::Auto);
        assert_eq!(
            rules,
            [
                "block sub:xn--80abnuns.xn--p1acf",
                "block sub:xn--80affy2c3b.xn--p1ai",
                "block sub:xn--bcher-kva.example",
                "block sub:xn--mnchen-3ya.example",
                "block sub:xn--ber-goa.example",
                "block sub:xn--yotu-1ra.be",
            ]
        );
        assert_eq!(stats.skipped, 0);
    }
}
