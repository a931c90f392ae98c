//! Where list text comes from: local files, and the on-disk cache of URL lists.

use std::path::{Path, PathBuf};

/// The folder, next to the config, where downloaded URL lists are kept.
pub const CACHE_DIR: &str = ".telesink-cache";

/// The cached copy of a URL list: a file name derived from the URL, readable by a person.
pub fn cache_path(base_dir: &Path, url: &str) -> PathBuf {
    let mut name: String = url
        .trim_start_matches("https://")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    name.truncate(150);
    base_dir.join(CACHE_DIR).join(format!("{name}.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_are_flat_and_stable() {
        let p = cache_path(Path::new("/etc/telesink"), "https://example.org/lists/a b.txt?x=1");
        assert_eq!(
            p,
            Path::new("/etc/telesink/.telesink-cache/example.org_lists_a_b.txt_x_1.txt")
        );
    }
}
