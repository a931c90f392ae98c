//! The edge where the configuration becomes the inputs of the modules it configures: the
//! policy, the lists and the local zone own their types and never import `config`.

use super::Config;
use crate::lists::ListSpec;
use crate::policy::{BlockSettings, ClientSpec, GroupSpec, PolicySpec};

impl Config {
    /// What [`crate::policy::Policy::build`] reads.
    pub fn policy_spec(&self) -> PolicySpec {
        PolicySpec {
            categories: self.categories(),
            lists: self.list_specs(),
            allow_lists: self.allow.lists.clone(),
            allow_domains: self.allow.domains.clone(),
            clients: self
                .clients
                .iter()
                .map(|c| ClientSpec {
                    name: c.name.clone(),
                    addresses: c.addresses.clone(),
                    macs: c.macs.clone(),
                })
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|g| GroupSpec {
                    name: g.name.clone(),
                    clients: g.clients.clone(),
                    block: g.block.clone(),
                    observe: g.observe.clone(),
                    schedules: g.schedules.clone(),
                })
                .collect(),
            default_block: self.default.block.clone(),
            default_observe: self.default.observe.clone(),
            blocking: BlockSettings {
                mode: self.blocking.mode,
                ttl: self.blocking.ttl,
            },
            records: self.records.clone(),
            state_dir: self.state_dir(),
        }
    }

    /// The `[[list]]`s, for the policy and the URL-list refresher.
    pub fn list_specs(&self) -> Vec<ListSpec> {
        self.lists
            .iter()
            .map(|l| ListSpec {
                name: l.name.clone(),
                source: l.source.clone(),
                categories: l.categories.clone(),
                format: l.format,
                subdomains: l.subdomains,
                refresh: l.refresh,
            })
            .collect()
    }
}
