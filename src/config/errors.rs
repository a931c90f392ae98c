//! What a bad configuration is told: [`ConfigError`] and [`ConfigWarning`] (file, line, key
//! path, what is valid), the key path of a serde error found from its span in the document, and
//! the did-you-mean hints.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `key` is the path to the value at fault: `server.listen[1]`, `list "xiaomi".source`.
    #[error("{}:{line}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// Line at fault, for `Invalid`.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Read { .. } => None,
        }
    }

    /// Key path at fault, for `Invalid`.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }
}

/// Something allowed but probably not meant; shown as `file:line: key: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    pub path: PathBuf,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.key,
            self.message
        )
    }
}

/// Line (1-based) of a byte offset.
pub(super) fn line_of(text: &str, span: &Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub(super) fn invalid(
    path: &Path,
    text: &str,
    span: &Range<usize>,
    key: impl Into<String>,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line: line_of(text, span),
        key: key.into(),
        message: message.into(),
    }
}

/// A TOML syntax error (the document did not parse).
pub(super) fn syntax(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim().replace('\n', "; ");
    if message == "duplicate key" {
        // toml points at the second occurrence; name it and say why it is wrong.
        let key = text.get(span.clone()).unwrap_or("").trim();
        return invalid(
            path,
            text,
            &span,
            key,
            "set twice; each key, and each [table], may appear only once (use [[name]] for a \
             repeated table like [[list]])",
        );
    }
    invalid(path, text, &span, "TOML syntax", message)
}

/// An error from deserialising the model: its span locates the key path in the document. The
/// value types write their own messages; serde's "unknown field" gets the did-you-mean hint and
/// the valid keys of the table it is in.
pub(super) fn from_serde(
    path: &Path,
    text: &str,
    doc: &DeTable<'_>,
    e: &toml::de::Error,
) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim();
    let found = locate(doc, &span);
    let Some(valid) = unknown_field(message) else {
        return invalid(path, text, &span, found.path, message);
    };
    if message.contains(super::leaves::TOML_DATETIME) {
        // A date-time where a table belongs: toml passes it to serde as a one-key table.
        return invalid(
            path,
            text,
            &span,
            found.path,
            "expected a table, found a date-time",
        );
    }
    // serde reports the first unknown key in its (alphabetical) order; report the first one
    // in the file.
    let first = found
        .siblings
        .iter()
        .filter(|(k, _)| !valid.contains(k))
        .min_by_key(|(_, s)| s.start);
    let (name, span) = match first {
        Some((k, s)) => (k.clone(), s.clone()),
        None => (
            found.path.rsplit('.').next().unwrap_or("").to_string(),
            span,
        ),
    };
    let key = match found.table.as_str() {
        "" => name.clone(),
        t => format!("{t}.{name}"),
    };
    let place = if found.header.is_empty() {
        "valid top-level keys".to_string()
    } else {
        format!("valid keys in {}", found.header)
    };
    let valid: Vec<&str> = valid.iter().map(String::as_str).collect();
    invalid(
        path,
        text,
        &span,
        key,
        format!(
            "unknown key; {}{place}: {}",
            hint(&name, &valid),
            valid.join(", ")
        ),
    )
}

/// The valid fields of serde's "unknown field `x`, expected one of `a`, `b`" (its wording is
/// fixed by `serde::de::Error::unknown_field`).
fn unknown_field(message: &str) -> Option<Vec<String>> {
    let rest = message.strip_prefix("unknown field `")?;
    let (_, expected) = rest.split_once('`')?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Where a span is in the document, as messages name it.
#[derive(Debug, Default)]
struct Located {
    /// Key path of the innermost key or value holding the span: `server.listen[1]`,
    /// `list "xiaomi".source`.
    path: String,
    /// Key path of the table that holds it (`""` at the top level).
    table: String,
    /// That table as written: `[server]`, `[[list]]`, `""` at the top level.
    header: String,
    /// That table's keys, with their spans.
    siblings: Vec<(String, Range<usize>)>,
}

fn locate(doc: &DeTable<'_>, span: &Range<usize>) -> Located {
    let mut best = Located {
        siblings: keys_of(doc),
        ..Located::default()
    };
    walk_table(doc, "", "", span, &mut best);
    best
}

fn keys_of(t: &DeTable<'_>) -> Vec<(String, Range<usize>)> {
    t.iter()
        .map(|(k, _)| (k.get_ref().to_string(), k.span()))
        .collect()
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

/// Depth first: the innermost match wins, so the last one written into `best` is kept.
fn walk_table(t: &DeTable<'_>, table: &str, header: &str, span: &Range<usize>, best: &mut Located) {
    for (k, v) in t.iter() {
        let key = join(table, k.get_ref());
        let here = |best: &mut Located, path: String| {
            *best = Located {
                path,
                table: table.to_string(),
                header: header.to_string(),
                siblings: keys_of(t),
            };
        };
        if k.span() == *span {
            here(best, key);
            return;
        }
        // A table made by dotted keys may not span all of its keys: look inside anyway.
        let inside = contains(&v.span(), span);
        if inside {
            here(best, key.clone());
        }
        match v.get_ref() {
            DeValue::Table(sub) => {
                walk_table(sub, &key, &format!("[{key}]"), span, best);
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item.get_ref() {
                        DeValue::Table(sub) => {
                            let path = match sub.get("name").map(|n| n.get_ref()) {
                                Some(DeValue::String(n)) if !n.is_empty() => format!("{key} {n:?}"),
                                _ => format!("{key}[{i}]"),
                            };
                            // `[[server]]` where `[server]` belongs: toml gives the array
                            // its first table's span; the key is at fault, not the table.
                            if contains(&item.span(), span) && item.span() != v.span() {
                                here(best, path.clone());
                            }
                            walk_table(sub, &path, &format!("[[{key}]]"), span, best);
                        }
                        _ if contains(&item.span(), span) => here(best, format!("{key}[{i}]")),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// The candidate closest to `got`, if close enough to be a typo of it: an edit distance that
/// counts a swap of neighbours as one edit ("nmae" → "name"), or a long shared start
/// ("timeout" → "timeout_ms", "matching" → "matched").
pub(super) fn did_you_mean<'c>(
    got: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let got = got.to_ascii_lowercase();
    let limit = (got.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|c| {
            let lower = c.to_ascii_lowercase();
            let distance = strsim::osa_distance(&got, &lower);
            let shared = got
                .bytes()
                .zip(lower.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            let min_len = got.len().min(lower.len());
            let close = distance <= limit || (shared >= 4 && shared * 3 >= min_len * 2);
            close.then_some((distance, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `did you mean "x"? ` or nothing.
pub(super) fn hint(got: &str, candidates: &[&str]) -> String {
    match did_you_mean(got, candidates.iter().copied()) {
        Some(c) => format!("did you mean {c:?}? "),
        None => String::new(),
    }
}

/// "a, b, c" with at most `MAX_LISTED` names, so that a town-sized config stays readable.
pub(super) fn name_list<'n>(names: impl IntoIterator<Item = &'n str>) -> String {
    const MAX_LISTED: usize = 20;
    let names: Vec<&str> = names.into_iter().collect();
    let mut out = names
        .iter()
        .take(MAX_LISTED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED {
        out.push_str(&format!(" and {} more", names.len() - MAX_LISTED));
    }
    out
}
