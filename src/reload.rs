//! Hot reload: SIGHUP, or a change to the config file or a local list, builds a complete new
//! policy off the query path and swaps it in whole. A reload that fails keeps the old policy.
//!
//! Files are watched through their parent directories, so that every way of replacing a file
//! is seen (write in place, editor rename-saves, delete-then-create, Kubernetes ConfigMap
//! `..data` symlink swaps). Bursts of events are debounced into one reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ListSource};
use crate::handler::Live;
use crate::metrics::Metrics;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(300);

pub struct Reloader {
    tx: mpsc::UnboundedSender<()>,
}

impl Reloader {
    pub fn start(
        config_path: PathBuf,
        config: Config,
        live: Arc<ArcSwap<Live>>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        let (tx, rx) = mpsc::unbounded_channel();
        metrics.config_loaded(SystemTime::now());
        let watch_tx = tx.clone();
        tokio::spawn(reload_loop(config_path, config, live, metrics, rx, watch_tx));
        Reloader { tx }
    }

    /// Asks for a reload (SIGHUP).
    pub fn trigger(&self) {
        let _ = self.tx.send(());
    }
}

/// The directories to watch for a config: its own and those of its local lists.
fn watched_dirs(config_path: &Path, config: &Config) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    let parent = |p: &Path| -> PathBuf {
        match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    dirs.insert(parent(config_path));
    let lists = config
        .lists
        .iter()
        .map(|l| &l.source)
        .chain(config.allow.lists.iter());
    for src in lists {
        if let ListSource::File(p) = src {
            dirs.insert(parent(p));
        }
    }
    dirs
}

fn make_watcher(tx: mpsc::UnboundedSender<()>, dirs: &BTreeSet<PathBuf>) -> Option<RecommendedWatcher> {
    let mut watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            // Reading a file is not a change; everything else (create, modify, remove,
            // rename) may be.
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP");
            return None;
        }
    };
    for d in dirs {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; reload with SIGHUP");
        }
    }
    Some(watcher)
}

async fn reload_loop(
    config_path: PathBuf,
    mut current: Config,
    live: Arc<ArcSwap<Live>>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<()>,
    tx: mpsc::UnboundedSender<()>,
) {
    let mut dirs = watched_dirs(&config_path, &current);
    let mut _watcher = make_watcher(tx.clone(), &dirs);
    while rx.recv().await.is_some() {
        // Debounce: wait until the events stop for a moment.
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let path = config_path.clone();
        let previous = live.load_full();
        let built = tokio::task::spawn_blocking(move || -> anyhow::Result<(Config, Live)> {
            let config = Config::load(&path)?;
            let new = crate::server::build_live(&config, Some(&previous))?;
            Ok((config, new))
        })
        .await;
        match built {
            Ok(Ok((config, new))) => {
                for setting in current.restart_required(&config) {
                    tracing::warn!(setting, "changed in the config, but takes effect only after a restart");
                }
                let names = new.policy.names();
                crate::server::publish_lists(&metrics, &new.policy);
                live.store(Arc::new(new));
                metrics.reload_succeeded(SystemTime::now());
                tracing::info!(
                    names,
                    took_ms = started.elapsed().as_millis() as u64,
                    "reloaded"
                );
                let new_dirs = watched_dirs(&config_path, &config);
                if new_dirs != dirs {
                    dirs = new_dirs;
                    _watcher = make_watcher(tx.clone(), &dirs);
                }
                current = config;
            }
            Ok(Err(e)) => {
                metrics.reload_failed(SystemTime::now());
                tracing::error!("reload failed, keeping the previous policy: {e:#}");
            }
            Err(e) => {
                metrics.reload_failed(SystemTime::now());
                tracing::error!("reload failed, keeping the previous policy: {e}");
            }
        }
    }
}
