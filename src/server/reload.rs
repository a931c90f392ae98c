//! Hot reload: SIGHUP, a change to the config file or a local list, or a URL list download that
//! brought new content, builds a complete new policy off the query path and swaps it in whole.
//! A reload that fails keeps the whole previous policy.
//!
//! * **What is watched.** The directories holding the config file and every local list (so that
//!   every way of replacing a file is seen: write in place, an editor's write-temp-then-rename,
//!   delete-then-create, `cp` over it, a Kubernetes ConfigMap's `..data` symlink swap), but only
//!   events naming those files, or a symlink on the way to them (`..data`), count: the query
//!   log's `telesink.db-wal` next to the config changes all the time and must not reload.
//!   The set follows the config: a list added to it is watched from the reload that adds it.
//! * **Debounce.** A burst of events is one reload: it starts after [`DEBOUNCE`] without
//!   events, or [`MAX_DELAY`] after the first, whichever is first.
//! * **Swap.** The new `Live` is built on a blocking thread while queries go on with the old
//!   one, then swapped in with one atomic store. Queries in flight finish on the old policy;
//!   the old one is freed as soon as they are done (peak: old + new, never more).
//! * **Failure.** Invalid config, unreadable list: the previous policy stays, the reason is
//!   logged with `file:line`, `telesink_reloads_total{outcome="failure"}` counts it. A file
//!   that changes while it is read is read again (not a failure).
//! * **Restart-only settings** changed in the file are reported at each reload until restart.
//! * **SIGHUP** reloads and also checks every URL list now (conditional requests); a download
//!   that brings new content triggers a reload of its own (see [`crate::lists::sources`]).
//! * **Memory.** The old policy is freed on the reload thread (or by the last query in flight
//!   holding it), then the heap is trimmed; big buffers get their own pages (glibc), so the
//!   resident size after a reload is back to that of one policy.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ListSource};
use crate::lists::sources::{url_lists, Refresher};
use crate::observe::metrics::Metrics;
use crate::policy::PolicyError;
use crate::resolve::Live;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Longest wait after the first event of a burst that does not stop.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// Reads again when a file changed while it was being read, at most this many times.
const MAX_REREADS: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Trigger {
    /// A watched file changed.
    Files,
    /// SIGHUP: reload, and check every URL list now.
    Signal,
    /// A URL list download replaced its cached copy.
    Download,
}

pub struct Reloader {
    tx: mpsc::UnboundedSender<Trigger>,
}

impl Reloader {
    /// Starts watching, the URL list refresher and the reload task. `config` is the config
    /// the server started with (and `live` was built from).
    pub fn start(
        config_path: PathBuf,
        config: Config,
        live: Arc<ArcSwap<Live>>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Self::start_with(config_path, config, live, metrics, None)
    }

    /// [`start`](Self::start), with `after_swap` called with each new config once its policy
    /// is in force (what else a reload keeps in step: the addresses learner).
    pub fn start_with(
        config_path: PathBuf,
        config: Config,
        live: Arc<ArcSwap<Live>>,
        metrics: Arc<Metrics>,
        after_swap: Option<AfterSwap>,
    ) -> Reloader {
        let (tx, rx) = mpsc::unbounded_channel();
        metrics.config_loaded(SystemTime::now());
        let refresher = {
            let tx = tx.clone();
            Refresher::start(config.state_dir(), move |_url| {
                let _ = tx.send(Trigger::Download);
            })
        };
        refresher.set(url_lists(&config.list_specs(), &config.allow.lists));
        let config_path = std::path::absolute(&config_path).unwrap_or(config_path);
        let watch = Watch::new(tx.clone());
        let root = config_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let state = State {
            root,
            config_path,
            started: config.clone(),
            current: config,
            live,
            metrics,
            refresher,
            watch,
            after_swap,
        };
        tokio::spawn(reload_loop(state, rx));
        Reloader { tx }
    }

    /// Asks for a reload (SIGHUP); URL lists are checked for new content too.
    pub fn trigger(&self) {
        let _ = self.tx.send(Trigger::Signal);
    }
}

/// Called with each config a reload put in force.
pub type AfterSwap = Box<dyn Fn(&Config) + Send + Sync>;

struct State {
    after_swap: Option<AfterSwap>,
    config_path: PathBuf,
    /// The config's directory.
    root: PathBuf,
    /// What the process started with: restart-only settings compare against it.
    started: Config,
    /// The config of the policy in force.
    current: Config,
    live: Arc<ArcSwap<Live>>,
    metrics: Arc<Metrics>,
    refresher: Refresher,
    watch: Watch,
}

async fn reload_loop(mut st: State, mut rx: mpsc::UnboundedReceiver<Trigger>) {
    let files = watched_files(&st.config_path, &st.current);
    st.watch.update(WatchSet::for_files(&st.root, files));
    while let Some(first) = rx.recv().await {
        let mut causes = BTreeSet::from([first]);
        let hard = Instant::now() + MAX_DELAY;
        loop {
            let wait = DEBOUNCE.min(hard.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(t)) => {
                    causes.insert(t);
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if causes.contains(&Trigger::Signal) {
            st.refresher.check_all();
        }
        let cause = causes
            .iter()
            .map(|c| match c {
                Trigger::Files => "file change",
                Trigger::Signal => "SIGHUP",
                Trigger::Download => "list download",
            })
            .collect::<Vec<_>>()
            .join(", ");
        reload(&mut st, &cause).await;
    }
}

/// What a reload attempt gave.
enum Attempt {
    Swapped(Box<Swapped>),
    Failed {
        message: String,
        /// Files the failing config seems to name (a list added before its file exists).
        candidates: Vec<PathBuf>,
        /// Those of them that did not exist when the attempt failed.
        missing: Vec<PathBuf>,
    },
    /// A file changed while it was read: read again.
    Reread(String),
}

struct Swapped {
    config: Config,
    names: usize,
    heap_bytes: usize,
    lists: Vec<(Arc<str>, usize)>,
    previous_lists: Vec<(Arc<str>, usize)>,
    /// Whether the old policy was freed at once (false: queries in flight still hold it; the
    /// last of them frees it).
    old_freed: bool,
}

async fn reload(st: &mut State, cause: &str) {
    let started = Instant::now();
    let mut rereads = 0;
    let attempt = loop {
        let path = st.config_path.clone();
        let live = st.live.clone();
        let metrics = st.metrics.clone();
        let res = tokio::task::spawn_blocking(move || {
            // The build shares the cores with the listeners: it gets what they leave, so that
            // queries keep their latency while a big list is parsed and sorted.
            let _background = crate::sched::Background::enter("policy build");
            attempt(&path, &live, &metrics)
        })
        .await;
        match res {
            Ok(Attempt::Reread(why)) if rereads < MAX_REREADS => {
                rereads += 1;
                tracing::debug!("{why}; reading again");
                tokio::time::sleep(DEBOUNCE).await;
            }
            Ok(Attempt::Reread(why)) => {
                break Attempt::Failed {
                    message: format!("{why}, {MAX_REREADS} times in a row"),
                    candidates: Vec::new(),
                    missing: Vec::new(),
                }
            }
            Ok(a) => break a,
            Err(e) => {
                break Attempt::Failed {
                    message: format!("the reload task failed: {e}"),
                    candidates: Vec::new(),
                    missing: Vec::new(),
                }
            }
        }
    };
    let took_ms = (started.elapsed().as_secs_f64() * 1e5).round() / 100.0;
    match attempt {
        Attempt::Swapped(s) => {
            let s = *s;
            let rules: usize = s.lists.iter().map(|(_, n)| n).sum();
            tracing::info!(
                outcome = "success",
                cause,
                took_ms,
                names = s.names,
                lists = s.lists.len(),
                rules,
                bytes = s.heap_bytes,
                "reloaded"
            );
            for (name, n) in &s.lists {
                match s.previous_lists.iter().find(|(p, _)| p == name) {
                    Some((_, was)) if was == n => {}
                    Some((_, was)) => tracing::info!(list = %name, rules = n, was, "list changed"),
                    None => tracing::info!(list = %name, rules = n, "list added"),
                }
            }
            for (name, _) in &s.previous_lists {
                if !s.lists.iter().any(|(n, _)| n == name) {
                    tracing::info!(list = %name, "list removed");
                }
            }
            if !s.old_freed {
                tracing::debug!("the previous policy is still held by queries in flight");
            }
            for setting in st.started.restart_required(&s.config) {
                tracing::warn!(
                    setting,
                    "changed in the config, but takes effect only after a restart; the running value is kept"
                );
            }
            st.refresher
                .set(url_lists(&s.config.list_specs(), &s.config.allow.lists));
            if let Some(f) = &st.after_swap {
                f(&s.config);
            }
            st.current = s.config;
            let files = watched_files(&st.config_path, &st.current);
            st.watch.update(WatchSet::for_files(&st.root, files));
        }
        Attempt::Failed {
            message,
            candidates,
            missing,
        } => {
            tracing::error!(
                outcome = "failure",
                cause,
                took_ms,
                "reload failed, keeping the previous policy: {message}"
            );
            // Keep watching what the policy in force reads, and whatever the failing config
            // names, so that creating a missing list file is seen. Watched before the failure
            // is published: whoever sees it and then creates the file is seen.
            let mut files = watched_files(&st.config_path, &st.current);
            files.extend(candidates);
            st.watch.update(WatchSet::for_files(&st.root, files));
            // A file the attempt missed may have appeared before it was watched: its event
            // went by unheeded, so look once more.
            if missing.iter().any(|f| f.exists()) {
                tracing::debug!("a file the failed reload missed exists now; reloading again");
                st.watch.poke();
            }
            st.metrics.reload_failed(SystemTime::now());
        }
        Attempt::Reread(_) => unreachable!("handled above"),
    }
}

/// A failed attempt: `message`, and the files the failing config names, with those missing
/// now (looked at right away: one that appears later is seen by the watch, or by the look
/// [`reload`] takes once the watch is in place).
fn failed(message: String, config_path: &Path) -> Attempt {
    let candidates = candidate_files(config_path);
    let missing = candidates.iter().filter(|f| !f.exists()).cloned().collect();
    Attempt::Failed {
        message,
        candidates,
        missing,
    }
}

/// One reload attempt, on a blocking thread: load the config, read every list, build, swap.
fn attempt(config_path: &Path, live: &ArcSwap<Live>, metrics: &Arc<Metrics>) -> Attempt {
    let before = stamp(config_path);
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            if stamp(config_path) != before {
                return Attempt::Reread(format!(
                    "{} changed while it was read",
                    config_path.display()
                ));
            }
            return failed(e.to_string(), config_path);
        }
    };
    if stamp(config_path) != before {
        return Attempt::Reread(format!(
            "{} changed while it was read",
            config_path.display()
        ));
    }

    let previous = live.load_full();
    let previous_lists = list_counts(&previous);
    let built = super::live::build_live_observed(&config, Some(&previous), Some(metrics.clone()));
    drop(previous);
    let new = match built {
        Ok(new) => Arc::new(new),
        Err(e) => {
            let message = match e.downcast_ref::<PolicyError>() {
                Some(PolicyError::ReadList { source, path, .. })
                    if source.kind() == std::io::ErrorKind::Interrupted =>
                {
                    return Attempt::Reread(format!(
                        "{} changed while it was read",
                        path.display()
                    ));
                }
                Some(pe) => with_location(&config, pe),
                None => format!("{}: {e:#}", config.path.display()),
            };
            return failed(message, config_path);
        }
    };

    // The commit point: from here on, queries get the new policy.
    let old = live.swap(new.clone());
    metrics.reload_succeeded(SystemTime::now());
    super::live::publish_lists(metrics, &new.policy);
    super::live::publish_list_ages(metrics, &config);
    super::live::publish_forwards(metrics, &new);
    // Devices the reload names get their `client` label slots now, before strangers can ask.
    metrics.reserve_clients(config.clients.iter().map(|c| c.name.as_str()));
    let swapped = Swapped {
        names: new.policy.names(),
        heap_bytes: new.policy.matcher_heap_bytes(),
        lists: list_counts(&new),
        previous_lists,
        config,
        old_freed: free(old),
    };
    drop(new);
    Attempt::Swapped(Box::new(swapped))
}

/// Drops our reference to the old policy and hands the freed memory back to the system. When
/// queries in flight still hold it (for at most their upstream timeout), the last of them frees
/// it; a helper thread trims after that, without holding up the next reload.
fn free(old: Arc<Live>) -> bool {
    let weak = Arc::downgrade(&old);
    drop(old);
    if weak.strong_count() == 0 {
        crate::alloc::trim();
        return true;
    }
    let _ = std::thread::Builder::new()
        .name("reload-trim".into())
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while weak.strong_count() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            crate::alloc::trim();
        });
    false
}

fn list_counts(live: &Live) -> Vec<(Arc<str>, usize)> {
    live.policy
        .lists
        .iter()
        .map(|l| (l.name.clone(), l.stats.rules))
        .collect()
}

/// A policy error with the config's `file:line` of the list at fault.
fn with_location(config: &Config, e: &PolicyError) -> String {
    let list = match e {
        PolicyError::ReadList { list, .. } | PolicyError::List { list, .. } => Some(list.as_str()),
        PolicyError::Config(_) => None,
    };
    // "allow-N" lists (the [allow] table's) have no line of their own.
    let line = list.and_then(|name| config.lists.iter().find(|l| l.name == name).map(|l| l.line));
    match line {
        Some(line) => format!("{}:{line}: {e}", config.path.display()),
        None => format!("{}: {e}", config.path.display()),
    }
}

/// Identity and version of a file: changes with every write, rename over, or symlink swap.
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

// ---------------------------------------------------------------------------------------------
// What to watch
// ---------------------------------------------------------------------------------------------

/// The config file, every local list of `config`, and the cached copies of its URL lists (a
/// copy written by `telesink lists update`, another process, is loaded like an edited file).
fn watched_files(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    let sources = config
        .lists
        .iter()
        .map(|l| &l.source)
        .chain(config.allow.lists.iter());
    let state_dir = config.state_dir();
    for src in sources {
        match src {
            ListSource::File(p) => files.push(p.clone()),
            ListSource::Url(url) => files.push(crate::lists::sources::cache_path(&state_dir, url)),
        }
    }
    files
}

/// The local list files a config that does not load seems to name (best effort: only when its
/// TOML parses), so that a list added to the config before its file exists is watched.
fn candidate_files(config_path: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(config_path) else {
        return Vec::new();
    };
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let base = match config_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut out = Vec::new();
    let mut add = |v: Option<&toml::Value>| {
        if let Some(s) = v.and_then(|v| v.as_str()) {
            let s = s.trim();
            if !s.is_empty() && !s.contains("://") {
                out.push(base.join(s));
            }
        }
    };
    if let Some(lists) = doc.get("list").and_then(|v| v.as_array()) {
        for l in lists {
            add(l.get("source"));
        }
    }
    if let Some(lists) = doc
        .get("allow")
        .and_then(|a| a.get("lists"))
        .and_then(|v| v.as_array())
    {
        for l in lists {
            add(Some(l));
        }
    }
    out
}

/// Directories to watch, each with the entry names in it whose events count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct WatchSet {
    dirs: BTreeMap<PathBuf, BTreeSet<OsString>>,
}

impl WatchSet {
    /// The set for `files`; `root` is the config's directory: directories between it and a
    /// list count as names too, so that a list directory replaced whole (`rm -r lists;
    /// mv lists.new lists`) is seen.
    fn for_files(root: &Path, files: impl IntoIterator<Item = PathBuf>) -> WatchSet {
        let mut set = WatchSet::default();
        for f in files {
            let abs = std::path::absolute(&f).unwrap_or(f);
            set.add(&abs, 0);
            for a in abs.ancestors().skip(1) {
                if a == root || !a.starts_with(root) {
                    break;
                }
                if let (Some(dir), Some(name)) = (a.parent(), a.file_name()) {
                    set.dirs
                        .entry(dir.to_path_buf())
                        .or_default()
                        .insert(name.to_os_string());
                }
            }
        }
        set
    }

    /// `path` (absolute), and every symlink on the way to the file it names: the final one
    /// and its targets, and symlinked directories among its ancestors. A ConfigMap mounts
    /// `config.toml -> ..data/config.toml` and `..data -> ..2026_…`, and an update swaps
    /// `..data`, so events naming `..data` (in the config's directory) must count.
    fn add(&mut self, path: &Path, depth: u32) {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        self.dirs
            .entry(dir.to_path_buf())
            .or_default()
            .insert(name.to_os_string());
        if depth >= 8 {
            return;
        }
        for a in path.ancestors().skip(1) {
            if a.parent().is_none() {
                break;
            }
            if !self.has(a)
                && a.symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
            {
                self.add(a, depth + 1);
            }
        }
        if let Ok(target) = std::fs::read_link(path) {
            self.add(&dir.join(target), depth + 1);
        }
    }

    fn has(&self, path: &Path) -> bool {
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => self.dirs.get(dir).is_some_and(|names| names.contains(name)),
            _ => false,
        }
    }

    /// Whether an event about `path` may change a watched file.
    fn matters(&self, path: &Path) -> bool {
        if self.dirs.contains_key(path) {
            // A watched directory itself was removed or moved.
            return true;
        }
        self.has(path)
    }
}

/// The file watcher: one `notify` watcher on the directories of a [`WatchSet`]; the set is
/// shared with its callback, which forwards only the events that matter.
struct Watch {
    /// Where its events go: [`poke`](Watch::poke) sends one of its own.
    tx: mpsc::UnboundedSender<Trigger>,
    watcher: Option<RecommendedWatcher>,
    set: Arc<Mutex<WatchSet>>,
    watching: BTreeSet<PathBuf>,
}

/// Reading a file (ours included) is not a change; closing it after writing is.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl Watch {
    fn new(tx: mpsc::UnboundedSender<Trigger>) -> Watch {
        let set = Arc::new(Mutex::new(WatchSet::default()));
        let shared = set.clone();
        let own = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let relevant = match &res {
                Ok(ev) => {
                    is_change(&ev.kind) && {
                        let set = shared.lock().unwrap_or_else(|e| e.into_inner());
                        // No path: the kernel's queue overflowed; anything may have changed.
                        ev.paths.is_empty() || ev.paths.iter().any(|p| set.matters(p))
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "file watcher error; reloading to be safe");
                    true
                }
            };
            if relevant {
                let _ = tx.send(Trigger::Files);
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP");
                None
            }
        };
        Watch {
            tx: own,
            watcher,
            set,
            watching: BTreeSet::new(),
        }
    }

    /// A reload, as if a watched file had changed.
    fn poke(&self) {
        let _ = self.tx.send(Trigger::Files);
    }

    /// Watches the directories of `set` (again: a directory that was removed and made anew
    /// needs a new watch) and stops watching those no longer needed.
    fn update(&mut self, set: WatchSet) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        let dirs: BTreeSet<PathBuf> = set.dirs.keys().cloned().collect();
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = set;
        let mut watching = BTreeSet::new();
        for d in &dirs {
            if !d.is_dir() {
                // A list the failing config names, in a directory not made yet.
                tracing::debug!(dir = %d.display(), "not watching a directory that does not exist");
                continue;
            }
            match w.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watching.insert(d.clone());
                }
                Err(e) => {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; its files reload with SIGHUP only");
                }
            }
        }
        for gone in self.watching.difference(&dirs) {
            let _ = w.unwatch(gone);
        }
        if watching != self.watching {
            tracing::debug!(dirs = ?watching, "watching");
        }
        self.watching = watching;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(set: &WatchSet, dir: &Path) -> Vec<String> {
        set.dirs
            .get(dir)
            .map(|n| n.iter().map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn configmap_links_are_watched() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir(d.join("..2026_11_25_01")).unwrap();
        std::fs::write(d.join("..2026_11_25_01/config.toml"), "").unwrap();
        symlink("..2026_11_25_01", d.join("..data")).unwrap();
        symlink("..data/config.toml", d.join("config.toml")).unwrap();
        let set = WatchSet::for_files(d, [d.join("config.toml")]);
        assert_eq!(names(&set, d), ["..2026_11_25_01", "..data", "config.toml"]);
        assert!(set.matters(&d.join("..data")));
        assert!(set.matters(&d.join("config.toml")));
        assert!(!set.matters(&d.join("..data_tmp")));
        assert!(!set.matters(&d.join("telesink.db-wal")));
    }

    #[test]
    fn plain_files_and_their_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let set = WatchSet::for_files(d, [d.join("config.toml"), d.join("lists/a.txt")]);
        assert_eq!(names(&set, d), ["config.toml", "lists"]);
        assert_eq!(names(&set, &d.join("lists")), ["a.txt"]);
        assert!(set.matters(&d.join("lists/a.txt")));
        assert!(set.matters(&d.join("lists")));
        assert!(!set.matters(&d.join("lists/b.txt")));
        assert!(!set.matters(&d.join(".config.toml.swp")));
    }

    #[test]
    fn absolute_links_to_other_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir(d.join("srv")).unwrap();
        std::fs::write(d.join("srv/real.txt"), "").unwrap();
        symlink(d.join("srv/real.txt"), d.join("list.txt")).unwrap();
        let set = WatchSet::for_files(d, [d.join("list.txt")]);
        assert_eq!(names(&set, d), ["list.txt"]);
        assert_eq!(names(&set, &d.join("srv")), ["real.txt"]);
    }

    #[test]
    fn symlinked_directories_on_the_way() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir(d.join("v1")).unwrap();
        std::fs::write(d.join("v1/a.txt"), "").unwrap();
        symlink("v1", d.join("current")).unwrap();
        let set = WatchSet::for_files(d, [d.join("current/a.txt")]);
        assert_eq!(names(&set, d), ["current", "v1"]);
        assert!(set.matters(&d.join("current")));
        assert!(set.matters(&d.join("current/a.txt")));
    }

    #[test]
    fn candidates_of_a_config_that_does_not_load() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("config.toml");
        std::fs::write(
            &p,
            "[[list]]\nname = \"a\"\nsource = \"new/a.txt\"\ncategories = [\"t\"]\n\
             [[list]]\nname = \"b\"\nsource = \"https://x.org/b\"\ncategories = [\"t\"]\n\
             [allow]\nlists = [\"allow.txt\"]\n",
        )
        .unwrap();
        assert_eq!(
            candidate_files(&p),
            [tmp.path().join("new/a.txt"), tmp.path().join("allow.txt")]
        );
    }

    #[test]
    fn only_changes_count() {
        use notify::event::{CreateKind, DataChange, ModifyKind};
        assert!(is_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
    }
}
