//! `telesink_list_age_seconds{list}` and `telesink_list_refresh_seconds{list}`: how old the
//! cached copy of each URL list is, computed at each scrape from what is on disk (the copy and
//! its `.meta`), so that a refresher that silently stopped, or a mirror that keeps failing,
//! shows up as a growing age. A list is stale past three refresh periods
//! ([`STALE_AFTER_REFRESHES`](crate::lists::sources::STALE_AFTER_REFRESHES)); the dashboard
//! shows age / refresh.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};

use crate::lists::sources::CacheState;

/// One URL list of the policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedList {
    pub list: String,
    pub url: String,
    pub refresh: Duration,
}

#[derive(Default)]
struct Lists {
    base_dir: PathBuf,
    lists: Vec<WatchedList>,
}

/// The collector; [`ListAges::set`] after each (re)load replaces the lists it reports.
#[derive(Clone)]
pub struct ListAges {
    lists: Arc<ArcSwap<Lists>>,
    descs: Vec<Desc>,
}

fn age_vec() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            "telesink_list_age_seconds",
            "Seconds since the URL list's cached copy was last downloaded or confirmed (304); +Inf while there is no copy.",
        ),
        &["list"],
    )
    .unwrap()
}

fn refresh_vec() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            "telesink_list_refresh_seconds",
            "The URL list's refresh period; stale past three of them.",
        ),
        &["list"],
    )
    .unwrap()
}

impl Default for ListAges {
    fn default() -> Self {
        Self::new()
    }
}

impl ListAges {
    pub fn new() -> ListAges {
        let mut descs = Vec::new();
        descs.extend(age_vec().desc().into_iter().cloned());
        descs.extend(refresh_vec().desc().into_iter().cloned());
        ListAges {
            lists: Arc::new(ArcSwap::from_pointee(Lists::default())),
            descs,
        }
    }

    /// The URL lists now in force and the state directory holding their cache.
    pub fn set(&self, base_dir: PathBuf, lists: Vec<WatchedList>) {
        self.lists.store(Arc::new(Lists { base_dir, lists }));
    }

    fn families(&self, now: SystemTime) -> Vec<MetricFamily> {
        let (age, refresh) = (age_vec(), refresh_vec());
        let state = self.lists.load();
        for l in &state.lists {
            let cache = CacheState::read(&state.base_dir, &l.url);
            let secs = cache
                .age(now)
                .map_or(f64::INFINITY, |a| a.as_secs_f64().round());
            age.with_label_values(&[l.list.as_str()]).set(secs);
            refresh
                .with_label_values(&[l.list.as_str()])
                .set(l.refresh.as_secs_f64());
        }
        let mut out = age.collect();
        out.extend(refresh.collect());
        out
    }
}

impl Collector for ListAges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families(SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_come_from_the_meta_file_and_missing_copies_are_infinite() {
        let dir = tempfile::tempdir().unwrap();
        let url = "https://lists.example/a.txt";
        let cache = crate::lists::sources::cache_path(dir.path(), url);
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        std::fs::write(&cache, "a.example\n").unwrap();
        let checked = 1_800_000_000u64;
        std::fs::write(
            crate::lists::sources::meta_path(&cache),
            format!("url {url}\nchecked {checked}\n"),
        )
        .unwrap();
        let ages = ListAges::new();
        ages.set(
            dir.path().to_path_buf(),
            vec![
                WatchedList {
                    list: "a".into(),
                    url: url.into(),
                    refresh: Duration::from_secs(3600),
                },
                WatchedList {
                    list: "b".into(),
                    url: "https://lists.example/b.txt".into(),
                    refresh: Duration::from_secs(60),
                },
            ],
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(checked + 90);
        let fams = ages.families(now);
        let value = |name: &str, list: &str| {
            fams.iter()
                .find(|f| f.name() == name)
                .unwrap()
                .get_metric()
                .iter()
                .find(|m| m.get_label()[0].value() == list)
                .map(|m| m.get_gauge().value())
        };
        assert_eq!(value("telesink_list_age_seconds", "a"), Some(90.0));
        assert_eq!(value("telesink_list_age_seconds", "b"), Some(f64::INFINITY));
        assert_eq!(value("telesink_list_refresh_seconds", "b"), Some(60.0));
    }
}
