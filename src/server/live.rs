//! Building what the query path reads ([`Live`]) from a configuration, at start and at each
//! reload, and publishing what it holds (list sizes) to the metrics and the log.

use std::sync::Arc;

use anyhow::Result;

use crate::config::Config;
use crate::policy::Policy;
use crate::resolve::access::Access;
use crate::resolve::forward::ForwardTable;
use crate::resolve::upstream::UpstreamObserver;
use crate::resolve::{Live, RebindProtection, UpstreamRules};

/// Builds what the query path reads from a config: the policy and the access rules, and the
/// rest as [`build_live_observed`] does, with no observer of the forward servers.
pub fn build_live(config: &Config, previous: Option<&Live>) -> Result<Live> {
    build_live_observed(config, previous, None)
}

/// Builds what the query path reads from a config: the policy, the access rules, the
/// `[[forward]]` zones (their servers' pools are new each time; `observer` gets their outcomes)
/// and the `[upstream]` rules a reload may change.
pub fn build_live_observed(
    config: &Config,
    previous: Option<&Live>,
    observer: Option<Arc<dyn UpstreamObserver>>,
) -> Result<Live> {
    let policy = Policy::build(&config.policy_spec())?;
    let access = Access::new(
        config.server.allow_networks.clone(),
        config.server.rate_limit_qps,
        config.server.rate_limit_burst,
        previous.map(|p| &p.access),
    );
    let forwards = ForwardTable::build(&config.forwards, config.upstream.timeout, observer)?;
    let upstream = UpstreamRules {
        strategy: config.upstream.strategy,
        rebind: if config.upstream.rebind_protection {
            RebindProtection::On
        } else {
            RebindProtection::Off
        },
    };
    Ok(Live {
        policy,
        access,
        forwards,
        upstream,
        ddr: ddr_of(config),
    })
}

/// DDR's answer (`server.ddr` with an encrypted listener), else `None` (the NODATA defence).
fn ddr_of(config: &Config) -> Option<Arc<crate::resolve::ddr::Ddr>> {
    let enc = &config.server.encrypted;
    if !enc.ddr {
        return None;
    }
    crate::resolve::ddr::Ddr::new(enc.tls_name.as_deref()?, &enc.tls_listen, &enc.https_listen)
        .map(Arc::new)
}

/// Gives the `[[forward]]` servers their `telesink_upstream_responses_total` series (at 0).
pub fn publish_forwards(metrics: &crate::observe::metrics::Metrics, live: &Live) {
    metrics.set_upstreams(live.forwards.labels());
}

/// Publishes each list's entry count as `telesink_list_entries`.
pub fn publish_lists(metrics: &crate::observe::metrics::Metrics, policy: &Policy) {
    metrics.set_list_entries(
        policy
            .lists
            .iter()
            .map(|l| (&*l.name, l.stats.rules as u64)),
    );
}

/// `telesink_list_age_seconds{list}` follows the URL lists of `config` (see `observe::list_age`).
pub fn publish_list_ages(
    metrics: &crate::observe::metrics::Metrics,
    config: &crate::config::Config,
) {
    let lists = config
        .list_specs()
        .into_iter()
        .filter_map(|l| match l.source {
            crate::lists::ListSource::Url(url) => Some(crate::observe::list_age::WatchedList {
                list: l.name,
                url,
                refresh: l.refresh,
            }),
            crate::lists::ListSource::File(_) => None,
        })
        .collect();
    metrics.set_url_lists(config.state_dir(), lists);
}

pub fn log_policy(policy: &Policy) {
    for l in &policy.lists {
        tracing::info!(
            list = %l.name,
            rules = l.stats.rules,
            skipped = l.stats.skipped,
            "list loaded"
        );
    }
    tracing::info!(
        names = policy.names(),
        bytes = policy.matcher_heap_bytes(),
        took_ms = policy.built_in.as_millis() as u64,
        "policy built"
    );
}
