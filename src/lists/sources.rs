//! Where list text comes from: local files, and the on-disk cache of URL lists.
//!
//! A URL list (`source = "https://…"`) is never read from the network on the query path or at
//! start-up: the policy reads its cached copy ([`cache_path`], in `.telesink-cache/` in the state
//! directory, the query log's, by default next to the config). The [`Refresher`] downloads each URL in the background, at start-up when the copy is
//! missing or older than the list's `refresh`, then every `refresh`. Requests are conditional
//! (`If-None-Match` / `If-Modified-Since`, from `<cache>.meta`), a new copy is written to a
//! temporary file and renamed over the old one, and a failed or empty download keeps the old
//! copy. When a download brings new content, the refresher asks for a reload.
//!
//! `<cache>.meta` also keeps the time of the last new copy and of the last failure with its
//! reason ([`fetch_recorded`]), so that `telesink lists` and `telesink check` can say how old a
//! copy is ([`CacheState`]) and why a list is empty or stale. `telesink lists update` downloads
//! through the same function; the server watches the cached copies, so it loads what the
//! command wrote. HTTPS is checked against Mozilla's roots, or the PEM bundle that
//! `SSL_CERT_FILE` names (a mirror with a private CA).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::lists::{self, Format, ListSource, ListSpec, ParseOptions};

/// The folder, next to the config, where downloaded URL lists are kept.
pub const CACHE_DIR: &str = ".telesink-cache";

/// Largest list accepted from the network (the biggest public lists are a few tens of MB).
const MAX_LIST_BYTES: u64 = 256 << 20;
/// First retry after a failed download; doubles per failure, capped by the list's `refresh`
/// and by [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// The cached copy of a URL list: a file name derived from the URL, readable by a person.
pub fn cache_path(base_dir: &Path, url: &str) -> PathBuf {
    let bare = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let mut name: String = bare
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(150);
    base_dir.join(CACHE_DIR).join(format!("{name}.txt"))
}

/// Where the validators (ETag, Last-Modified) and the time of the last check of a cached copy
/// are kept: `<cache>.meta`.
pub fn meta_path(cache: &Path) -> PathBuf {
    let mut s = cache.as_os_str().to_os_string();
    s.push(".meta");
    PathBuf::from(s)
}

/// What `<cache>.meta` holds: one `key value` per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Unix seconds of the last successful check (200 or 304).
    pub checked: Option<u64>,
    /// Unix seconds of the last download that brought new content (a 200 that replaced the
    /// cached copy).
    pub downloaded: Option<u64>,
    /// The last failed attempt: Unix seconds and the reason. Cleared by a success.
    pub failed: Option<u64>,
    pub error: Option<String>,
}

impl Meta {
    pub fn read(path: &Path) -> Option<Meta> {
        let text = fs::read_to_string(path).ok()?;
        let mut m = Meta::default();
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "url" => m.url = v.to_string(),
                "etag" => m.etag = Some(v.to_string()),
                "last-modified" => m.last_modified = Some(v.to_string()),
                "checked" => m.checked = v.parse().ok(),
                "downloaded" => m.downloaded = v.parse().ok(),
                "failed" => m.failed = v.parse().ok(),
                "error" => m.error = Some(v.to_string()),
                _ => {}
            }
        }
        Some(m)
    }

    fn write(&self, path: &Path) -> io::Result<()> {
        let mut text = format!("url {}\n", self.url);
        if let Some(e) = &self.etag {
            text.push_str(&format!("etag {e}\n"));
        }
        if let Some(l) = &self.last_modified {
            text.push_str(&format!("last-modified {l}\n"));
        }
        if let Some(c) = self.checked {
            text.push_str(&format!("checked {c}\n"));
        }
        if let Some(d) = self.downloaded {
            text.push_str(&format!("downloaded {d}\n"));
        }
        if let Some(f) = self.failed {
            text.push_str(&format!("failed {f}\n"));
        }
        if let Some(e) = &self.error {
            // One line: the file is line-based.
            let e: String = e
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            text.push_str(&format!("error {e}\n"));
        }
        write_atomic(path, text.as_bytes())
    }
}

/// A URL named by the config, with what the refresher needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlList {
    pub url: String,
    /// The first list naming it (for logs).
    pub list: String,
    /// The shortest `refresh` of the lists naming it.
    pub refresh: Duration,
    pub format: Format,
    pub subdomains: bool,
}

/// Every distinct URL among the block lists and the allow lists (`[[list]]` and
/// `[allow] lists`).
pub fn url_lists(lists: &[ListSpec], allow_lists: &[ListSource]) -> Vec<UrlList> {
    let mut out: Vec<UrlList> = Vec::new();
    let mut add =
        |url: &str, list: &str, refresh: Duration, format: Format, subdomains: bool| match out
            .iter_mut()
            .find(|u| u.url == url)
        {
            Some(u) => u.refresh = u.refresh.min(refresh),
            None => out.push(UrlList {
                url: url.to_string(),
                list: list.to_string(),
                refresh,
                format,
                subdomains,
            }),
        };
    for l in lists {
        if let ListSource::Url(url) = &l.source {
            add(url, &l.name, l.refresh, l.format, l.subdomains);
        }
    }
    for (i, src) in allow_lists.iter().enumerate() {
        if let ListSource::Url(url) = src {
            add(
                url,
                &format!("allow-{}", i + 1),
                Duration::from_secs(86400),
                Format::Auto,
                true,
            );
        }
    }
    out
}

/// What a download did to the cached copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A new copy replaced the cache (or created it).
    New { bytes: u64, rules: usize },
    /// 304 Not Modified.
    NotModified,
    /// 200, but the same bytes as the cached copy.
    Same,
}

/// The HTTP client for lists: rustls, timeouts, https only.
pub fn agent() -> ureq::Agent {
    agent_with(true)
}

/// The config admits `http://` only from a loopback host (a mirror on this machine); such a
/// list is fetched by an agent that allows plain HTTP but follows no redirect, so it cannot be
/// sent elsewhere in the clear.
fn loopback_agent() -> ureq::Agent {
    agent_with(false)
}

fn agent_with(https_only: bool) -> ureq::Agent {
    let mut builder = ureq::Agent::config_builder();
    if let Some(roots) = roots_from_env() {
        builder = builder.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
    }
    let config = builder
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(120)))
        .https_only(https_only)
        .max_redirects(if https_only { 10 } else { 0 })
        .user_agent(concat!("telesink/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::new_with_config(config)
}

/// The certificate authorities that HTTPS lists are checked against. By default Mozilla's
/// roots, built in (so a slim container without `ca-certificates` works). When the
/// `SSL_CERT_FILE` environment variable names a PEM bundle, that bundle is the trust store
/// instead, as for OpenSSL and curl: a list mirror signed by a private CA works by pointing it
/// at a bundle holding that CA (and the public roots too, e.g. a copy of
/// `/etc/ssl/certs/ca-certificates.crt` with the CA appended, if other lists are public).
fn roots_from_env() -> Option<ureq::tls::RootCerts> {
    let path = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty())?;
    let pem = match fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(file = %Path::new(&path).display(), "SSL_CERT_FILE cannot be read, using the built-in roots: {e}");
            return None;
        }
    };
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        tracing::error!(file = %Path::new(&path).display(), "SSL_CERT_FILE holds no PEM certificate, using the built-in roots");
        return None;
    }
    Some(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// Downloads `list.url` (conditionally, when a cached copy and its validators exist) and
/// replaces the cached copy atomically if the content is new. Blocking.
pub fn fetch(agent: &ureq::Agent, list: &UrlList, base_dir: &Path) -> anyhow::Result<Fetched> {
    use anyhow::Context;
    let plain;
    let agent = if list.url.starts_with("http://") {
        plain = loopback_agent();
        &plain
    } else {
        agent
    };
    let cache = cache_path(base_dir, &list.url);
    let meta_file = meta_path(&cache);
    let have_cache = cache.is_file();
    // Validators only make sense with the copy they describe.
    let old = if have_cache {
        Meta::read(&meta_file).filter(|m| m.url == list.url)
    } else {
        None
    };
    let mut req = agent.get(&list.url);
    if let Some(m) = &old {
        if let Some(e) = &m.etag {
            req = req.header("If-None-Match", e.as_str());
        }
        if let Some(l) = &m.last_modified {
            req = req.header("If-Modified-Since", l.as_str());
        }
    }
    let resp = req.call().map_err(|e| anyhow::anyhow!("{e}"))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut meta = Meta {
        url: list.url.clone(),
        etag: header("etag"),
        last_modified: header("last-modified"),
        checked: Some(unix_now()),
        downloaded: old.as_ref().and_then(|m| m.downloaded),
        failed: None,
        error: None,
    };
    if status == 304 {
        anyhow::ensure!(have_cache, "304 Not Modified, but there is no cached copy");
        let old = old.unwrap_or_default();
        meta.etag = meta.etag.or(old.etag);
        meta.last_modified = meta.last_modified.or(old.last_modified);
        meta.write(&meta_file)
            .with_context(|| format!("cannot write {}", meta_file.display()))?;
        return Ok(Fetched::NotModified);
    }
    anyhow::ensure!((200..300).contains(&status), "HTTP status {status}");

    let dir = cache.parent().expect("cache path has a directory");
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the list cache {} (is the config directory read-only?)",
            dir.display()
        )
    })?;
    let tmp = temp_name(&cache);
    let written = (|| -> anyhow::Result<u64> {
        let mut reader = resp
            .into_body()
            .into_with_config()
            .limit(MAX_LIST_BYTES)
            .reader();
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        let n = io::copy(&mut reader, &mut file).map_err(|e| anyhow::anyhow!("download: {e}"))?;
        file.sync_all()?;
        Ok(n)
    })();
    let bytes = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };

    let opts = ParseOptions {
        format: list.format,
        subdomains: list.subdomains,
    };
    let rules = count_rules(&tmp, &opts).unwrap_or(0);
    if rules == 0 && have_cache && count_rules(&cache, &opts).unwrap_or(0) > 0 {
        // An error page served with 200, a captive portal, a truncated mirror: not a list.
        let _ = fs::remove_file(&tmp);
        anyhow::bail!("the download ({bytes} bytes) has no rules, while the cached copy has; kept the cached copy");
    }
    if have_cache && same_content(&tmp, &cache).unwrap_or(false) {
        let _ = fs::remove_file(&tmp);
        meta.write(&meta_file)
            .with_context(|| format!("cannot write {}", meta_file.display()))?;
        return Ok(Fetched::Same);
    }
    if let Err(e) = fs::rename(&tmp, &cache) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot replace {}", cache.display()));
    }
    meta.downloaded = meta.checked;
    meta.write(&meta_file)
        .with_context(|| format!("cannot write {}", meta_file.display()))?;
    Ok(Fetched::New { bytes, rules })
}

/// [`fetch`], and a failure is written to `<cache>.meta` (`failed`, `error`), so that
/// `telesink lists` and `telesink check` can say why a list is empty or old. The refresher and
/// `telesink lists update` both download through this.
pub fn fetch_recorded(
    agent: &ureq::Agent,
    list: &UrlList,
    base_dir: &Path,
) -> anyhow::Result<Fetched> {
    let res = fetch(agent, list, base_dir);
    if let Err(e) = &res {
        let cache = cache_path(base_dir, &list.url);
        let meta_file = meta_path(&cache);
        let mut meta = Meta::read(&meta_file)
            .filter(|m| m.url == list.url)
            .unwrap_or_else(|| Meta {
                url: list.url.clone(),
                ..Meta::default()
            });
        meta.failed = Some(unix_now());
        meta.error = Some(format!("{e:#}"));
        // Best effort: the directory may be read-only, which the error itself may say.
        if let Some(dir) = cache.parent() {
            let _ = fs::create_dir_all(dir);
        }
        if let Err(werr) = meta.write(&meta_file) {
            tracing::debug!(file = %meta_file.display(), "cannot record the failure: {werr}");
        }
    }
    res
}

/// A list whose cached copy is older than this many `refresh` periods is stale: `check`,
/// `telesink lists` and the `telesink_list_age_seconds` panel flag it.
pub const STALE_AFTER_REFRESHES: u32 = 3;

/// What is on disk for one URL list: its cached copy and what the last attempts left in
/// `<cache>.meta`.
#[derive(Debug, Clone)]
pub struct CacheState {
    pub path: PathBuf,
    /// Size of the cached copy; `None` when there is none.
    pub bytes: Option<u64>,
    /// The cached copy's modification time (when it was written).
    pub modified: Option<SystemTime>,
    /// The validators and the times of the last attempts, when they are for this URL.
    pub meta: Option<Meta>,
}

impl CacheState {
    /// Reads the state of `url`'s cached copy under `base_dir` (the state directory).
    pub fn read(base_dir: &Path, url: &str) -> CacheState {
        let path = cache_path(base_dir, url);
        let file = fs::metadata(&path).ok().filter(|m| m.is_file());
        let meta = Meta::read(&meta_path(&path)).filter(|m| m.url == url);
        CacheState {
            bytes: file.as_ref().map(|m| m.len()),
            modified: file.and_then(|m| m.modified().ok()),
            meta,
            path,
        }
    }

    pub fn present(&self) -> bool {
        self.bytes.is_some()
    }

    /// When the cached copy was last known to be current: the last successful check (a 200,
    /// or a 304 that confirmed it), else the file's own time (a copy seeded by hand).
    pub fn current_at(&self) -> Option<SystemTime> {
        if !self.present() {
            return None;
        }
        self.meta
            .as_ref()
            .and_then(|m| m.checked)
            .map(|t| UNIX_EPOCH + Duration::from_secs(t))
            .or(self.modified)
    }

    /// The age of the cached copy at `now` (see [`CacheState::current_at`]); `None` without one.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        self.current_at()
            .map(|t| now.duration_since(t).unwrap_or_default())
    }

    /// Older than [`STALE_AFTER_REFRESHES`] times `refresh`.
    pub fn is_stale(&self, refresh: Duration, now: SystemTime) -> bool {
        self.age(now)
            .is_some_and(|a| a > refresh.saturating_mul(STALE_AFTER_REFRESHES))
    }

    /// The last failure, when it came after the last success: `(unix seconds, reason)`.
    pub fn last_error(&self) -> Option<(u64, &str)> {
        let m = self.meta.as_ref()?;
        let failed = m.failed?;
        if m.checked.is_some_and(|c| c > failed) {
            return None;
        }
        Some((failed, m.error.as_deref().unwrap_or("unknown error")))
    }
}

/// Streamed: a download's check must not hold the text of a big list (it may run during a
/// reload, whose peak it would add to).
fn count_rules(path: &Path, opts: &ParseOptions) -> io::Result<usize> {
    let file = io::BufReader::with_capacity(64 << 10, fs::File::open(path)?);
    Ok(lists::parse_reader(file, opts, |_| {})?.0.rules)
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A temporary name beside `path` (same directory, so that the rename is atomic).
fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Writes `data` to a temporary file beside `path`, then renames it over `path`.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = temp_name(path);
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When a URL is first due: now when there is no cached copy or it was last checked more than
/// `refresh` ago; else when `refresh` has passed since that check.
fn first_due(base_dir: &Path, list: &UrlList, now: Instant) -> Instant {
    let cache = cache_path(base_dir, &list.url);
    if !cache.is_file() {
        return now;
    }
    let checked = Meta::read(&meta_path(&cache))
        .filter(|m| m.url == list.url)
        .and_then(|m| m.checked);
    match checked {
        Some(t) => {
            let age = Duration::from_secs(unix_now().saturating_sub(t));
            now + list.refresh.saturating_sub(age)
        }
        None => now,
    }
}

enum Command {
    Set(Vec<UrlList>),
    CheckAll,
}

/// Keeps the URL lists' cached copies fresh, in the background.
pub struct Refresher {
    tx: mpsc::UnboundedSender<Command>,
    base_dir: PathBuf,
}

impl Refresher {
    /// Starts the refresher (on the tokio runtime). `on_new` is called with the URL each time a
    /// download replaced a cached copy: the caller reloads.
    pub fn start(base_dir: PathBuf, on_new: impl Fn(&str) + Send + Sync + 'static) -> Refresher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(refresh_loop(base_dir.clone(), Arc::new(on_new), rx));
        Refresher { tx, base_dir }
    }

    /// The URL lists of the config now in force. New URLs are scheduled, gone ones dropped.
    pub fn set(&self, lists: Vec<UrlList>) {
        if !lists.is_empty() {
            // Made now, so that the reloader can watch it from the start: a copy that
            // `telesink lists update` writes is then seen and loaded. Best effort: a download
            // reports a directory that cannot be made.
            let _ = fs::create_dir_all(self.base_dir.join(CACHE_DIR));
        }
        let _ = self.tx.send(Command::Set(lists));
    }

    /// Checks every URL now (conditionally), whatever its schedule: SIGHUP does this.
    pub fn check_all(&self) {
        let _ = self.tx.send(Command::CheckAll);
    }
}

struct Entry {
    list: UrlList,
    due: Instant,
    failures: u32,
}

async fn refresh_loop(
    base_dir: PathBuf,
    on_new: Arc<dyn Fn(&str) + Send + Sync>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let agent = agent();
    let mut entries: HashMap<String, Entry> = HashMap::new();
    loop {
        let next = entries.values().map(|e| e.due).min();
        let cmd = match next {
            Some(due) => tokio::select! {
                c = rx.recv() => match c { Some(c) => Some(c), None => return },
                _ = tokio::time::sleep_until(due.into()) => None,
            },
            None => match rx.recv().await {
                Some(c) => Some(c),
                None => return,
            },
        };
        let now = Instant::now();
        match cmd {
            Some(Command::Set(lists)) => {
                entries.retain(|url, _| lists.iter().any(|l| &l.url == url));
                for l in lists {
                    match entries.get_mut(&l.url) {
                        Some(e) => {
                            if l.refresh < e.list.refresh {
                                // A shorter interval applies from the last check, not the next.
                                e.due = e.due.min(first_due(&base_dir, &l, now));
                            }
                            e.list = l;
                        }
                        None => {
                            let due = first_due(&base_dir, &l, now);
                            entries.insert(
                                l.url.clone(),
                                Entry {
                                    list: l,
                                    due,
                                    failures: 0,
                                },
                            );
                        }
                    }
                }
            }
            Some(Command::CheckAll) => {
                for e in entries.values_mut() {
                    e.due = now;
                }
            }
            None => {}
        }

        let mut due: Vec<String> = entries
            .iter()
            .filter(|(_, e)| e.due <= now)
            .map(|(u, _)| u.clone())
            .collect();
        due.sort();
        for url in due {
            let Some(list) = entries.get(&url).map(|e| e.list.clone()) else {
                continue;
            };
            let started = Instant::now();
            // A thread of its own, not `spawn_blocking`: the runtime waits for blocking tasks when
            // it shuts down, and a download may hang until its timeout; SIGTERM must not.
            let (agent2, dir) = (agent.clone(), base_dir.clone());
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("list-download".into())
                .spawn(move || {
                    let _ = done_tx.send(fetch_recorded(&agent2, &list, &dir));
                });
            let res = match spawned {
                Ok(_) => done_rx
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the download thread panicked"))),
                Err(e) => Err(anyhow::anyhow!("cannot start a download thread: {e}")),
            };
            let took_ms = started.elapsed().as_millis() as u64;
            let Some(e) = entries.get_mut(&url) else {
                continue;
            };
            let done = Instant::now();
            match res {
                Ok(Fetched::New { bytes, rules }) => {
                    tracing::info!(list = %e.list.list, %url, bytes, rules, took_ms, "downloaded a new copy of the list");
                    e.failures = 0;
                    e.due = done + e.list.refresh;
                    on_new(&url);
                }
                Ok(Fetched::NotModified) => {
                    tracing::info!(list = %e.list.list, %url, took_ms, "list not modified (304)");
                    e.failures = 0;
                    e.due = done + e.list.refresh;
                }
                Ok(Fetched::Same) => {
                    tracing::info!(list = %e.list.list, %url, took_ms, "list unchanged");
                    e.failures = 0;
                    e.due = done + e.list.refresh;
                }
                Err(err) => {
                    e.failures += 1;
                    let retry = FIRST_RETRY
                        .saturating_mul(1 << (e.failures - 1).min(16))
                        .min(MAX_RETRY)
                        .min(e.list.refresh);
                    e.due = done + retry;
                    let cached = cache_path(&base_dir, &url).is_file();
                    let kept = if cached {
                        "keeping the cached copy"
                    } else {
                        "no cached copy yet: the list is empty until a download succeeds"
                    };
                    tracing::warn!(
                        list = %e.list.list,
                        %url,
                        retry_in_s = retry.as_secs(),
                        "download failed, {kept}: {err:#}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_are_flat_and_stable() {
        let p = cache_path(
            Path::new("/etc/telesink"),
            "https://example.org/lists/a b.txt?x=1",
        );
        assert_eq!(
            p,
            Path::new("/etc/telesink/.telesink-cache/example.org_lists_a_b.txt_x_1.txt")
        );
        assert_eq!(
            meta_path(&p),
            Path::new("/etc/telesink/.telesink-cache/example.org_lists_a_b.txt_x_1.txt.meta")
        );
    }

    #[test]
    fn meta_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.meta");
        let m = Meta {
            url: "https://x.org/l".into(),
            etag: Some("W/\"a b\"".into()),
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            checked: Some(1_700_000_000),
            downloaded: Some(1_600_000_000),
            failed: Some(1_700_000_100),
            error: Some("HTTP status 503".into()),
        };
        m.write(&p).unwrap();
        assert_eq!(Meta::read(&p), Some(m));
    }

    #[test]
    fn same_content_compares_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        fs::write(&a, vec![7u8; 200_000]).unwrap();
        fs::write(&b, vec![7u8; 200_000]).unwrap();
        let mut other = vec![7u8; 200_000];
        other[150_000] = 8;
        fs::write(&c, other).unwrap();
        assert!(same_content(&a, &b).unwrap());
        assert!(!same_content(&a, &c).unwrap());
    }
}
