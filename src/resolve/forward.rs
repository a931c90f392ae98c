//! Conditional forwarding (`[[forward]]`): names at or under a zone go to that zone's servers
//! instead of the upstreams (the router's `fritz.box`, `lan`, its reverse zone). The most
//! specific zone wins. A forward zone also wins over the built-in local answer for special-use
//! and private reverse zones (`lan`, `home.arpa`, `168.192.in-addr.arpa`); a `[[record]]`
//! still wins over it.
//!
//! The match reads the question's suffix hashes, computed once per query for the lists: no
//! allocation, and nothing at all when no `[[forward]]` is configured.

use std::sync::Arc;
use std::time::Duration;

use super::upstream::{Upstream, UpstreamObserver, Upstreams};
use crate::policy::matcher::{name_hash, NameHashes};

/// One `[[forward]]`, as the configuration hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Normalised names, lower case, no trailing dot.
    pub domains: Vec<String>,
    pub servers: Vec<Upstream>,
}

/// Index of a zone's servers in a [`ForwardTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardId(u16);

/// Where a forwarded query goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `[upstream] servers`.
    Upstreams,
    /// A `[[forward]]`'s servers.
    Zone(ForwardId),
}

/// The `[[forward]]` zones of one configuration generation, with their servers.
#[derive(Default)]
pub struct ForwardTable {
    /// (hash of the zone name, its entry), sorted by hash.
    zones: Vec<(u64, ForwardId)>,
    servers: Vec<Upstreams>,
}

impl std::fmt::Debug for ForwardTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardTable")
            .field("zones", &self.zones.len())
            .finish()
    }
}

impl ForwardTable {
    /// Builds each entry's upstream pools. A domain named twice keeps the first entry (the
    /// configuration refuses that anyway).
    pub fn build(
        specs: &[ForwardSpec],
        timeout: Duration,
        observer: Option<Arc<dyn UpstreamObserver>>,
    ) -> anyhow::Result<ForwardTable> {
        let mut table = ForwardTable::default();
        for (i, spec) in specs.iter().enumerate() {
            let id =
                ForwardId(u16::try_from(i).map_err(|_| anyhow::anyhow!("too many [[forward]]s"))?);
            table
                .servers
                .push(Upstreams::new(&spec.servers, timeout, observer.clone())?);
            for d in &spec.domains {
                let hash = name_hash(d)
                    .ok_or_else(|| anyhow::anyhow!("[[forward]] domain {d:?} is empty"))?;
                if !table.zones.iter().any(|(h, _)| *h == hash) {
                    table.zones.push((hash, id));
                }
            }
        }
        table.zones.sort_unstable_by_key(|(h, _)| *h);
        Ok(table)
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// The zone `name` is at or under, the most specific one; `None` when it is not forwarded.
    #[inline]
    pub fn zone(&self, name: &NameHashes) -> Option<ForwardId> {
        if self.zones.is_empty() {
            return None;
        }
        // Longest suffix first: the first hit is the most specific zone.
        name.suffixes().iter().rev().find_map(|h| {
            self.zones
                .binary_search_by_key(h, |(k, _)| *k)
                .ok()
                .map(|i| self.zones[i].1)
        })
    }

    /// A zone's servers.
    pub fn servers(&self, id: ForwardId) -> &Upstreams {
        &self.servers[id.0 as usize]
    }

    /// Every zone's servers' labels (for the metrics).
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().flat_map(|s| s.labels())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::matcher::split_labels;

    fn spec(domains: &[&str], server: &str) -> ForwardSpec {
        ForwardSpec {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            servers: vec![Upstream::Plain(server.parse().unwrap())],
        }
    }

    fn zone(t: &ForwardTable, name: &str) -> Option<ForwardId> {
        t.zone(&NameHashes::new(split_labels(name)))
    }

    #[tokio::test]
    async fn the_most_specific_zone_wins() {
        let t = ForwardTable::build(
            &[
                spec(&["lan", "168.192.in-addr.arpa"], "192.168.1.1:53"),
                spec(&["iot.lan"], "192.168.1.2:53"),
            ],
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        let (router, iot) = (Some(ForwardId(0)), Some(ForwardId(1)));
        assert_eq!(zone(&t, "lan"), router);
        assert_eq!(zone(&t, "nas.lan"), router);
        assert_eq!(zone(&t, "iot.lan"), iot);
        assert_eq!(zone(&t, "cam.iot.lan"), iot);
        assert_eq!(zone(&t, "10.1.168.192.in-addr.arpa"), router);
        assert_eq!(zone(&t, "plan"), None);
        assert_eq!(zone(&t, "lan.example.com"), None);
        assert_eq!(zone(&t, "example.com"), None);
        assert!(ForwardTable::default()
            .zone(&NameHashes::new(split_labels("lan")))
            .is_none());
        assert_eq!(t.labels().count(), 2);
    }
}
