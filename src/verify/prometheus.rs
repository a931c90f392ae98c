//! The Prometheus HTTP API (instant queries) for `verify --prometheus`.
//!
//! Category attempts are `sum(increase(telesink_category_queries_total{client, category}[w]))`.
//! Ordinary queries are the client's queries minus its categorised ones:
//! `sum(increase(telesink_queries_total{client}[w])) - sum(increase(
//! telesink_category_queries_total{client}[w]))`. A query that matched several categories counts
//! once per category in the second series, so this can only undercount ordinary queries, which
//! makes STOPPED harder to reach, never easier. The last query is
//! `max(max_over_time(telesink_client_last_query_timestamp_seconds{client}[range]))`.

use std::time::Duration;

use crate::querylog::CommandError;

/// The Prometheus HTTP API, instant queries only.
pub(crate) struct Prometheus {
    pub(crate) base: String,
    agent: ureq::Agent,
}

impl Prometheus {
    pub(crate) fn new(url: &str) -> Prometheus {
        let mut base = url.trim().trim_end_matches('/').to_string();
        for suffix in ["/api/v1/query", "/graph"] {
            if let Some(b) = base.strip_suffix(suffix) {
                base = b.to_string();
            }
        }
        if !base.contains("://") {
            base = format!("http://{base}");
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into();
        Prometheus { base, agent }
    }

    fn err(&self, message: impl Into<String>) -> CommandError {
        CommandError::Prometheus {
            url: self.base.clone(),
            message: message.into(),
        }
    }

    /// `sum(increase(telesink_category_queries_total{client, category}[range]))` at `at_ms`.
    pub(crate) fn increase(
        &self,
        client: &str,
        category: &str,
        range_ms: i64,
        at_ms: i64,
    ) -> Result<f64, CommandError> {
        Ok(self
            .instant(&promql_increase(client, category, range_ms), at_ms)?
            .unwrap_or(0.0))
    }

    /// The client's packets to `category`'s addresses in the baseline and in the window
    /// (`telesink_category_packets_total`, every action); `None` when Prometheus has no such
    /// series for the client (telesink does not count packets).
    pub(crate) fn packets(
        &self,
        client: &str,
        category: &str,
        baseline_ms: i64,
        window_ms: i64,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Option<(f64, f64)>, CommandError> {
        let (c, cat) = (promql_label(client), promql_label(category));
        let q = |r: i64| {
            format!(
                "sum(increase(telesink_category_packets_total{{client=\"{c}\",category=\"{cat}\"}}[{}ms]))",
                r.max(1)
            )
        };
        let Some(after) = self.instant(&q(window_ms), until_ms)? else {
            return Ok(None);
        };
        let before = self.instant(&q(baseline_ms), since_ms)?.unwrap_or(0.0);
        Ok(Some((before, after)))
    }

    /// The client's ordinary (uncategorised) queries in the `range_ms` before `at_ms`; see the
    /// module doc for the formula. Never negative.
    pub(crate) fn ordinary(
        &self,
        client: &str,
        range_ms: i64,
        at_ms: i64,
    ) -> Result<f64, CommandError> {
        let c = promql_label(client);
        let r = range_ms.max(1);
        let all = self
            .instant(
                &format!("sum(increase(telesink_queries_total{{client=\"{c}\"}}[{r}ms]))"),
                at_ms,
            )?
            .unwrap_or(0.0);
        let categorised = self
            .instant(
                &format!("sum(increase(telesink_category_queries_total{{client=\"{c}\"}}[{r}ms]))"),
                at_ms,
            )?
            .unwrap_or(0.0);
        Ok((all - categorised).max(0.0))
    }

    /// The client's last query as of `at_ms` (looking back `range_ms`), in ms; `None` when
    /// Prometheus has no such series.
    pub(crate) fn last_query_ms(
        &self,
        client: &str,
        range_ms: i64,
        at_ms: i64,
    ) -> Result<Option<i64>, CommandError> {
        let query = format!(
            "max(max_over_time(telesink_client_last_query_timestamp_seconds{{client=\"{}\"}}[{}ms]))",
            promql_label(client),
            range_ms.max(1)
        );
        Ok(self
            .instant(&query, at_ms)?
            .filter(|v| *v > 0.0)
            .map(|v| (v * 1000.0) as i64))
    }

    /// One instant query at `at_ms`: the sum of the answer's series, `None` for an empty one.
    fn instant(&self, query: &str, at_ms: i64) -> Result<Option<f64>, CommandError> {
        let time = format!("{}.{:03}", at_ms.div_euclid(1000), at_ms.rem_euclid(1000));
        let mut resp = self
            .agent
            .get(format!("{}/api/v1/query", self.base))
            .query("query", query)
            .query("time", &time)
            .call()
            .map_err(|e| {
                self.err(format!(
                    "cannot query it ({e}); check the URL (e.g. http://prometheus:9090) and that it runs"
                ))
            })?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.err(format!("cannot read the answer: {e}")))?;
        parse_instant(&body).map_err(|m| self.err(format!("{m} (HTTP {status}, query {query})")))
    }
}

fn promql_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

pub(crate) fn promql_increase(client: &str, category: &str, range_ms: i64) -> String {
    format!(
        "sum(increase(telesink_category_queries_total{{client=\"{}\",category=\"{}\"}}[{}ms]))",
        promql_label(client),
        promql_label(category),
        range_ms.max(1)
    )
}

/// The sum of an instant-vector answer's series; `None` for an empty vector.
pub(crate) fn parse_instant(body: &str) -> Result<Option<f64>, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|_| {
        let start: String = body.chars().take(80).collect();
        format!("the answer is not Prometheus API JSON: {start:?}")
    })?;
    if v["status"] != "success" {
        return Err(format!(
            "query failed: {} {}",
            v["errorType"].as_str().unwrap_or(""),
            v["error"].as_str().unwrap_or("(no error message)")
        ));
    }
    let result = v["data"]["result"]
        .as_array()
        .ok_or("the answer has no data.result")?;
    if result.is_empty() {
        return Ok(None);
    }
    let mut total = 0.0;
    for series in result {
        let value = series["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or("a series has no numeric value")?;
        if value.is_finite() {
            total += value;
        }
    }
    Ok(Some(total))
}
