//! `telesink addresses CATEGORY [--json]`: the addresses learnt for a category. They live in
//! the running server's memory, so this asks the server, over the metrics listener's HTTP
//! (`GET /addresses/CATEGORY.txt`, or `.json`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AddressesError {
    #[error("{0} has no [addresses] table, so telesink learns no addresses; add one (see README, \"Beyond DNS: telemetry addresses\")")]
    NotConfigured(String),
    #[error("{file}: category {category:?} is not in [addresses] categories (learnt: {known})")]
    UnknownCategory {
        file: String,
        category: String,
        known: String,
    },
    #[error("{0}: [metrics] listen is off; the addresses are served by the running telesink on the metrics listener, so it must be on")]
    NoListener(String),
    #[error("cannot ask the running telesink at http://{addr}/ ({why}); the addresses live in its memory: is `telesink run` running with this configuration?")]
    Unreachable { addr: SocketAddr, why: String },
}

/// The body the server gives for `category`: text (one address a line) or JSON.
pub fn addresses(config: &Config, category: &str, json: bool) -> Result<String, AddressesError> {
    let file = config.path.display().to_string();
    let Some(a) = &config.addresses else {
        return Err(AddressesError::NotConfigured(file));
    };
    if !a.categories.iter().any(|c| c == category) {
        return Err(AddressesError::UnknownCategory {
            file,
            category: category.into(),
            known: a.categories.join(", "),
        });
    }
    let Some(mut addr) = config.metrics.listen else {
        return Err(AddressesError::NoListener(file));
    };
    // A listener on every address is reached on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!(
        "http://{addr}/addresses/{category}.{}",
        if json { "json" } else { "txt" }
    );
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(5)))
            .build(),
    );
    let unreachable = |why: String| AddressesError::Unreachable { addr, why };
    let mut resp = agent
        .get(&url)
        .call()
        .map_err(|e| unreachable(e.to_string()))?;
    resp.body_mut()
        .read_to_string()
        .map_err(|e| unreachable(e.to_string()))
}
