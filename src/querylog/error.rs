//! Errors of the query log and of the commands that read it, each naming the file and what to do.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use crate::timespec;

/// What went wrong with the database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The file does not exist (commands that only read).
    Missing,
    /// The file or its directory cannot be opened or created.
    CannotOpen,
    /// The file or its directory is read-only.
    ReadOnly,
    /// Not a SQLite database, or a corrupt one.
    Corrupt,
    /// A SQLite database, but not a telesink query log (or a newer one).
    NotAQueryLog,
    /// Another process holds the lock.
    Locked,
    /// No space left.
    DiskFull,
    Other,
}

/// A database problem, named with its path and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("query log {}: {message}", path.display())]
pub struct QueryLogError {
    pub path: PathBuf,
    pub kind: DbErrorKind,
    pub message: String,
}

impl QueryLogError {
    pub(crate) fn new(path: &Path, kind: DbErrorKind, message: impl Into<String>) -> Self {
        QueryLogError {
            path: path.to_path_buf(),
            kind,
            message: message.into(),
        }
    }

    /// Classifies a SQLite error and says what the user can do.
    pub(crate) fn from_sqlite(path: &Path, e: &rusqlite::Error) -> Self {
        let detail = e.to_string();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (kind, message) = match e.sqlite_error_code() {
            Some(ErrorCode::CannotOpen) => {
                let why = if path.is_dir() {
                    "it is a directory: point [querylog] path at a file".to_string()
                } else if dir.exists() && !dir.is_dir() {
                    format!(
                        "{} is a file, not a directory: change [querylog] path",
                        dir.display()
                    )
                } else if !dir.is_dir() {
                    format!(
                        "the directory {} does not exist: create it or change [querylog] path",
                        dir.display()
                    )
                } else {
                    format!(
                        "check that telesink's user may read and write it and the directory {}, or change [querylog] path",
                        dir.display()
                    )
                };
                (DbErrorKind::CannotOpen, format!("cannot open it ({detail}); {why}"))
            }
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) => (
                DbErrorKind::ReadOnly,
                format!(
                    "it is read-only ({detail}); give telesink's user write access to it and to {} \
                     (SQLite also writes {file}-wal and {file}-shm there), or change [querylog] path",
                    dir.display()
                ),
            ),
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => (
                DbErrorKind::Corrupt,
                format!(
                    "it is not a SQLite database, or it is corrupt ({detail}); move it aside \
                     (telesink then starts a new log) or change [querylog] path"
                ),
            ),
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => (
                DbErrorKind::Locked,
                format!(
                    "it is locked by another process ({detail}); is another telesink using the same \
                     file? give each instance its own [querylog] path"
                ),
            ),
            Some(ErrorCode::DiskFull) => (
                DbErrorKind::DiskFull,
                format!("the disk is full ({detail}); free space or lower [querylog] retention_days"),
            ),
            Some(ErrorCode::SystemIoFailure) => (
                DbErrorKind::Other,
                format!("disk I/O error ({detail}); check the disk and free space in {}", dir.display()),
            ),
            _ => (DbErrorKind::Other, detail),
        };
        QueryLogError::new(path, kind, message)
    }
}

/// Why a `mark`, `log` or `verify` command failed (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Db(#[from] QueryLogError),
    #[error(transparent)]
    Time(#[from] timespec::TimeSpecError),
    #[error("{0}")]
    Usage(String),
    #[error("Prometheus {url}: {message}")]
    Prometheus { url: String, message: String },
}
