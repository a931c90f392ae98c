//! Certificate renewal without a restart: the directories of `server.tls_cert` and `tls_key`
//! are watched (certbot and lego write new files or swap symlinks, so a watch on the file
//! itself would follow the old inode); after a change the pair is read and checked again and,
//! when good, served to new connections. A bad pair (half written, mismatched, expired) keeps
//! the old certificate, counts a failed reload and says why in the log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::observe::metrics::Metrics;
use crate::tls::Certificates;

/// Changes closer together than this are one renewal (the chain and the key are two writes).
const SETTLE: Duration = Duration::from_millis(400);

/// Keeps the watch alive; dropping it stops watching.
pub struct CertWatch {
    _watcher: RecommendedWatcher,
}

/// The paths whose change means a renewal: the two files, and the directories their symlinks
/// point into (certbot's `live/` links to `archive/`).
struct Paths {
    files: [PathBuf; 2],
    target_dirs: BTreeSet<PathBuf>,
}

impl Paths {
    fn new(cert: &Path, key: &Path) -> Paths {
        let mut target_dirs = BTreeSet::new();
        for f in [cert, key] {
            if let Ok(real) = std::fs::canonicalize(f) {
                if let Some(d) = real.parent() {
                    if Some(d) != f.parent() {
                        target_dirs.insert(d.to_path_buf());
                    }
                }
            }
        }
        Paths {
            files: [cert.to_path_buf(), key.to_path_buf()],
            target_dirs,
        }
    }

    fn dirs(&self) -> BTreeSet<PathBuf> {
        self.files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .chain(self.target_dirs.iter().cloned())
            .collect()
    }

    fn matters(&self, p: &Path) -> bool {
        self.files.iter().any(|f| f == p)
            || p.parent().is_some_and(|d| self.target_dirs.contains(d))
    }
}

/// Starts watching; `None` (with a warning) when the platform cannot watch.
pub fn start(
    cert: PathBuf,
    key: PathBuf,
    certs: Arc<Certificates>,
    metrics: Arc<Metrics>,
) -> Option<CertWatch> {
    let paths = Paths::new(&cert, &key);
    let dirs = paths.dirs();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            Ok(ev) => {
                !matches!(ev.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write))
                    && (ev.paths.is_empty() || ev.paths.iter().any(|p| paths.matters(p)))
            }
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the certificate files; restart telesink after a renewal");
            return None;
        }
    };
    for d in &dirs {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch the certificate's directory; restart telesink after a renewal");
        }
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let the renewal finish writing, then read once for all its events.
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            reload(&cert, &key, &certs, &metrics);
        }
    });
    Some(CertWatch { _watcher: watcher })
}

fn reload(cert: &Path, key: &Path, certs: &Certificates, metrics: &Metrics) {
    match crate::tls::load(cert, key) {
        Ok(next) => {
            if certs.serves(&next) {
                return;
            }
            certs.replace(next);
            metrics.reload_succeeded(SystemTime::now());
            tracing::info!(cert = %cert.display(), "new TLS certificate: served to new connections");
        }
        Err(e) => {
            metrics.reload_failed(SystemTime::now());
            tracing::error!(error = %e, "the new TLS certificate cannot be served; keeping the previous one");
        }
    }
}
