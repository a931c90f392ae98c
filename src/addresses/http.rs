//! `GET /addresses/CATEGORY.txt` (one address a line, IPv4 then IPv6; `?family=ipv4` or
//! `ipv6`) and `GET /addresses/CATEGORY.json` (with the seconds each has left, and the shared
//! addresses left out), merged into the metrics listener's router.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{Addresses, Family};

pub fn router(addresses: Arc<Addresses>) -> Router {
    Router::new()
        .route("/addresses/{file}", get(addresses_handler))
        .with_state(addresses)
}

async fn addresses_handler(
    State(a): State<Arc<Addresses>>,
    Path(file): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (category, json) = match (file.strip_suffix(".txt"), file.strip_suffix(".json")) {
        (Some(c), _) => (c, false),
        (_, Some(c)) => (c, true),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "ask for /addresses/CATEGORY.txt or /addresses/CATEGORY.json\n",
            )
                .into_response()
        }
    };
    let family = match q.get("family").map(String::as_str) {
        None | Some("") => None,
        Some("ipv4") => Some(Family::Ipv4),
        Some("ipv6") => Some(Family::Ipv6),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("family={other:?}: expected ipv4 or ipv6\n"),
            )
                .into_response()
        }
    };
    let Some(export) = a.export(category) else {
        let known: Vec<String> = a.categories().iter().map(|c| c.to_string()).collect();
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no category {category:?} in [addresses] categories (learnt: {})\n",
                known.join(", ")
            ),
        )
            .into_response();
    };
    if json {
        let list = |v: Vec<(String, u64)>| {
            v.into_iter()
                .map(|(a, s)| serde_json::json!({"address": a, "expires_in_seconds": s}))
                .collect::<Vec<_>>()
        };
        let v4 = export
            .v4
            .iter()
            .map(|(a, d)| (a.to_string(), d.as_secs()))
            .collect();
        let v6 = export
            .v6
            .iter()
            .map(|(a, d)| (a.to_string(), d.as_secs()))
            .collect();
        let body = serde_json::json!({
            "category": category,
            "ipv4": if family == Some(Family::Ipv6) { vec![] } else { list(v4) },
            "ipv6": if family == Some(Family::Ipv4) { vec![] } else { list(v6) },
            "shared_left_out": export.shared.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            format!("{body:#}\n"),
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        export.text(family),
    )
        .into_response()
}
