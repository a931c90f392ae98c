//! A town's query log, made up, for the benchmark of issue 22 (`bench/townlog.sh`,
//! `examples/filllog.rs`): many devices over many days with a home network's mix.
//!
//! Two halves, so that another back end can take the same rows: [`Town`] makes the queries,
//! batch by batch, as the [`QueryEvent`]s the DNS path hands to the log; [`fill_sqlite`]
//! writes them through the writer's own insert code ([`super::writer::write_batch`]), so what
//! is measured is the schema the server writes.
//!
//! The mix: a per-device day (phones and laptops sleep at night, TVs and speakers do not),
//! queries in bursts of a few within seconds, names drawn from a few hundred thousand with a
//! Zipf-like popularity, about 55% cached, 41% forwarded, a little local, refused and failed,
//! and a few percent telemetry of the device's vendor (blocked mostly, some observed), across
//! the shipped categories.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rusqlite::params;

use super::activity::Pending;
use super::error::QueryLogError;
use super::postgres::{PgStore, PgUrl, RowBatch};
use super::schema::open_rw;
use super::settings::LogMode;
use super::sink::Row;
use super::writer::{write_batch, TextIds};
use crate::devices::NamedBy;
use crate::observe::events::{ClientInfo, QueryEvent, QueryResult};
use crate::policy::category::{Action, Category, CategorySet, CategoryTable};

const HOUR_MS: i64 = 3_600_000;

/// How big a town.
#[derive(Clone, Debug)]
pub struct TownSpec {
    /// Queries in all.
    pub rows: u64,
    pub devices: u32,
    pub days: u32,
    /// The newest query is just before this (ms since the epoch).
    pub end_ms: i64,
    /// Distinct ordinary names.
    pub names: u32,
    pub seed: u64,
}

impl TownSpec {
    /// 100 million queries, 10,000 devices, 30 days up to `end_ms`.
    pub fn town(end_ms: i64) -> TownSpec {
        TownSpec {
            rows: 100_000_000,
            devices: 10_000,
            days: 30,
            end_ms,
            names: 300_000,
            seed: 22,
        }
    }

    pub fn start_ms(&self) -> i64 {
        self.end_ms - self.days as i64 * 24 * HOUR_MS
    }
}

/// splitmix64: small, fast and good enough to make up traffic (not for anything secret).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A vendor's telemetry: its category, the list that names it, its hosts.
struct Vendor {
    category: Category,
    list: Arc<str>,
    names: Vec<Arc<str>>,
}

/// The shipped categories' vendors (see config.toml), with made-up telemetry hosts under
/// their real domains.
const VENDORS: &[(&str, &[&str])] = &[
    ("xiaomi", &["xiaomi.com", "miui.com", "mi.com"]),
    ("huawei", &["huawei.com", "hicloud.com", "dbankcloud.com"]),
    (
        "samsung",
        &["samsung.com", "samsungcloud.com", "samsungads.com"],
    ),
    ("oppo", &["oppomobile.com", "heytapmobi.com"]),
    ("vivo", &["vivo.com.cn", "vivoglobal.com"]),
    (
        "google",
        &["google.com", "googleapis.com", "app-measurement.com"],
    ),
    ("apple", &["apple.com", "icloud.com", "mzstatic.com"]),
    ("microsoft", &["microsoft.com", "live.com", "windows.com"]),
    ("amazon", &["amazon.com", "amazonvideo.com", "a2z.com"]),
    ("lg", &["lgtvsdp.com", "lgsmartad.com", "lge.com"]),
    ("roku", &["roku.com", "ravm.tv"]),
    ("tiktok", &["tiktokv.com", "byteoversea.com"]),
];

const TELEMETRY_HOSTS: &[&str] = &[
    "metrics",
    "telemetry",
    "tracking",
    "data",
    "log",
    "analytics",
    "events",
    "stats",
    "report",
    "diag",
    "crash",
    "beacon",
    "ads",
    "adx",
    "collect",
    "sdk",
];

/// One device of the town.
struct Device {
    client: ClientInfo,
    vendor: usize,
    /// Sleeps from 23:00 to 07:00 (phones, laptops); otherwise busy all day (TVs, speakers).
    sleeps: bool,
    /// Share of its queries that are its vendor's telemetry.
    telemetry: f64,
    /// Its group blocks its telemetry (else observes it).
    blocks: bool,
}

/// The made-up town: devices, names, vendors, and the state of its clock.
pub struct Town {
    spec: TownSpec,
    table: Arc<CategoryTable>,
    telemetry: Category,
    vendors: Vec<Vendor>,
    devices: Vec<Device>,
    names: Vec<Arc<str>>,
    /// Cumulative Zipf weights of `names`.
    popularity: Vec<f64>,
    /// Devices awake at night.
    night_owls: Vec<u32>,
    rng: Rng,
    hour: i64,
    made: u64,
    /// The current hour's queries, in time order, taken from the back.
    pending: Vec<Pending1>,
}

/// One query made and not yet handed out.
struct Pending1 {
    ts_ms: i64,
    device: u32,
    kind: Kind,
}

enum Kind {
    Ordinary {
        name: u32,
        result: QueryResult,
        rcode: ResponseCode,
        qtype: RecordType,
    },
    Telemetry {
        name: u32,
        qtype: RecordType,
    },
}

/// A query of the town, borrowed from it: `event()` gives what the DNS path hands the log.
pub struct TownQuery<'a> {
    town: &'a Town,
    q: Pending1,
}

impl TownQuery<'_> {
    pub fn event(&self) -> QueryEvent<'_> {
        let town = self.town;
        let d = &town.devices[self.q.device as usize];
        let time = UNIX_EPOCH + Duration::from_millis(self.q.ts_ms as u64);
        let base = QueryEvent {
            time,
            client: &d.client,
            name: "",
            qtype: RecordType::A,
            result: QueryResult::Cached,
            categories: CategorySet::default(),
            category_table: &town.table,
            list: None,
            action: None,
            rcode: ResponseCode::NoError,
            upstream_time: None,
            elapsed: Duration::from_micros(40),
        };
        match &self.q.kind {
            Kind::Ordinary {
                name,
                result,
                rcode,
                qtype,
            } => QueryEvent {
                name: &town.names[*name as usize],
                qtype: *qtype,
                result: *result,
                rcode: *rcode,
                upstream_time: (*result == QueryResult::Forwarded)
                    .then(|| Duration::from_millis(5 + self.q.ts_ms as u64 % 60)),
                ..base
            },
            Kind::Telemetry { name, qtype } => {
                let v = &town.vendors[d.vendor];
                let mut categories = CategorySet::single(town.telemetry);
                categories.insert(v.category);
                let (result, action) = if d.blocks {
                    (QueryResult::Blocked, Action::Blocked)
                } else {
                    (QueryResult::Forwarded, Action::Observed)
                };
                QueryEvent {
                    name: &v.names[*name as usize],
                    qtype: *qtype,
                    result,
                    categories,
                    list: Some(&v.list),
                    action: Some(action),
                    upstream_time: (result == QueryResult::Forwarded)
                        .then(|| Duration::from_millis(20)),
                    ..base
                }
            }
        }
    }
}

impl Town {
    pub fn new(spec: TownSpec) -> Town {
        let mut rng = Rng(spec.seed);
        let mut table = CategoryTable::new();
        let telemetry = table.intern("telemetry").expect("room for categories");
        let vendors: Vec<Vendor> = VENDORS
            .iter()
            .map(|(v, domains)| {
                let category = table.intern(v).expect("room for categories");
                let mut names = Vec::new();
                for d in *domains {
                    for h in TELEMETRY_HOSTS {
                        names.push(Arc::from(format!("{h}.{d}")));
                        names.push(Arc::from(format!("{h}-{}.{d}", rng.below(90) + 10)));
                    }
                }
                Vendor {
                    category,
                    list: Arc::from(*v),
                    names,
                }
            })
            .collect();
        let mut devices = Vec::new();
        let mut night_owls = Vec::new();
        const KINDS: &[&str] = &["phone", "laptop", "tablet", "tv", "speaker", "watch", "pc"];
        for i in 0..spec.devices {
            let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
            let addr = IpAddr::V4(Ipv4Addr::new(10, 22, (i >> 8) as u8, (i & 0xff) as u8));
            // Most devices of a town have a lease name; some are known only by address.
            let (name, named_by) = if rng.unit() < 0.7 {
                (Some(Arc::from(format!("{kind}-{i}"))), NamedBy::Lease)
            } else {
                (None, NamedBy::Address)
            };
            let sleeps = matches!(kind, "phone" | "laptop" | "tablet" | "watch" | "pc");
            if !sleeps {
                night_owls.push(i);
            }
            devices.push(Device {
                client: ClientInfo {
                    addr,
                    name,
                    named_by,
                    mac: None,
                    group: None,
                },
                vendor: rng.below(vendors.len() as u64) as usize,
                sleeps,
                telemetry: 0.005 + rng.unit() * 0.07,
                blocks: rng.unit() < 0.85,
            });
        }
        let tlds = [
            "com", "net", "org", "io", "de", "co.uk", "fr", "tv", "app", "cloud",
        ];
        let prefixes = [
            "www", "api", "cdn", "img", "static", "edge", "m", "mail", "gateway",
        ];
        let names: Vec<Arc<str>> = (0..spec.names)
            .map(|i| {
                let site = i / 3;
                let tld = tlds[(site % tlds.len() as u32) as usize];
                let p = prefixes[(i as usize * 7 + site as usize) % prefixes.len()];
                Arc::from(format!("{p}.site{site}.{tld}"))
            })
            .collect();
        let mut popularity = Vec::with_capacity(names.len());
        let mut sum = 0.0;
        for r in 1..=names.len() {
            sum += 1.0 / (r as f64).powf(0.9);
            popularity.push(sum);
        }
        let hour = spec.start_ms().div_euclid(HOUR_MS);
        Town {
            spec,
            table: Arc::new(table),
            telemetry,
            vendors,
            devices,
            names,
            popularity,
            night_owls,
            rng,
            hour,
            made: 0,
            pending: Vec::new(),
        }
    }

    pub fn spec(&self) -> &TownSpec {
        &self.spec
    }

    /// Queries made so far.
    pub fn made(&self) -> u64 {
        self.made
    }

    /// The next `max` queries (fewer at the end, none when all are made), in time order
    /// within an hour, as a writer would see them.
    pub fn batch(&mut self, max: usize) -> Vec<TownQuery<'_>> {
        let mut out = Vec::with_capacity(max);
        while out.len() < max && self.made < self.spec.rows {
            if self.pending.is_empty() {
                self.make_hour();
                continue;
            }
            if let Some(q) = self.pending.pop() {
                out.push(q);
                self.made += 1;
            }
        }
        let town: &Town = self;
        out.into_iter().map(|q| TownQuery { town, q }).collect()
    }

    /// Share of the day's queries in hour `h` of the day (UTC stands for local time).
    fn busy(h: i64) -> f64 {
        match h {
            0..=5 => 0.35,
            6..=8 => 0.9,
            9..=16 => 1.0,
            17..=22 => 1.4,
            _ => 0.6,
        }
    }

    fn make_hour(&mut self) {
        let start = self.spec.start_ms();
        let hours = self.spec.days as i64 * 24;
        let mean: f64 = (0..24).map(Town::busy).sum::<f64>() / 24.0;
        let h = self.hour;
        self.hour += 1;
        let hour_of_day = h.rem_euclid(24);
        let first = (start.div_euclid(HOUR_MS)) as f64;
        let idx = h as f64 - first;
        let per_hour = self.spec.rows as f64 / hours as f64;
        // Every hour gets its share; the last hour takes what is left.
        let n = if idx as i64 >= hours - 1 {
            self.spec.rows - self.made
        } else {
            ((per_hour * Town::busy(hour_of_day) / mean) as u64).min(self.spec.rows - self.made)
        };
        let night = !(7..23).contains(&hour_of_day);
        let mut qs = Vec::with_capacity(n as usize + 16);
        while (qs.len() as u64) < n {
            let device = if night && !self.night_owls.is_empty() && self.rng.unit() < 0.8 {
                self.night_owls[self.rng.below(self.night_owls.len() as u64) as usize]
            } else {
                self.rng.below(self.devices.len() as u64) as u32
            };
            let d = &self.devices[device as usize];
            let (sleeps, telemetry) = (d.sleeps, d.telemetry);
            if night && sleeps && self.rng.unit() < 0.9 {
                continue;
            }
            // A burst: a page, an app opening, a sync.
            let burst = 1 + (self.rng.unit().powi(3) * 12.0) as u64;
            let t0 = h * HOUR_MS + self.rng.below(HOUR_MS as u64) as i64;
            let mut t = t0;
            for _ in 0..burst.min(n - qs.len() as u64) {
                t += self.rng.below(1500) as i64;
                let qtype = match self.rng.below(100) {
                    0..=54 => RecordType::A,
                    55..=89 => RecordType::AAAA,
                    90..=97 => RecordType::HTTPS,
                    98 => RecordType::TXT,
                    _ => RecordType::PTR,
                };
                let kind = if self.rng.unit() < telemetry {
                    let v = &self.vendors[self.devices[device as usize].vendor];
                    Kind::Telemetry {
                        name: self.rng.below(v.names.len() as u64) as u32,
                        qtype,
                    }
                } else {
                    let name = self.zipf();
                    let (result, rcode) = match self.rng.below(1000) {
                        0..=549 => (QueryResult::Cached, ResponseCode::NoError),
                        550..=929 => (QueryResult::Forwarded, ResponseCode::NoError),
                        930..=969 => (QueryResult::Forwarded, ResponseCode::NXDomain),
                        970..=984 => (QueryResult::Local, ResponseCode::NoError),
                        985..=989 => (QueryResult::Refused, ResponseCode::Refused),
                        _ => (QueryResult::Failed, ResponseCode::ServFail),
                    };
                    Kind::Ordinary {
                        name,
                        result,
                        rcode,
                        qtype,
                    }
                };
                qs.push(Pending1 {
                    ts_ms: t.min(h * HOUR_MS + HOUR_MS - 1),
                    device,
                    kind,
                });
            }
        }
        // Newest first: `batch` pops from the back.
        qs.sort_unstable_by_key(|q| std::cmp::Reverse(q.ts_ms));
        self.pending = qs;
    }

    fn zipf(&mut self) -> u32 {
        let total = *self.popularity.last().unwrap_or(&1.0);
        let x = self.rng.unit() * total;
        self.popularity.partition_point(|&c| c < x) as u32
    }
}

/// What [`fill_sqlite`] wrote.
#[derive(Clone, Copy, Debug)]
pub struct FillReport {
    pub rows: u64,
    pub seconds: f64,
}

/// Writes the town's queries into the SQLite log at `path` (created, or appended to), `batch`
/// rows and their device activity per transaction, as the server's writer does, and one run
/// covering the town's days (`log = "all"`) so that `verify` counts them as logged.
/// `progress` is called after each batch with the rows written so far.
pub fn fill_sqlite(
    town: &mut Town,
    path: &Path,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<FillReport, QueryLogError> {
    let started = std::time::Instant::now();
    let mut conn = open_rw(path)?;
    let e = |err: rusqlite::Error| QueryLogError::from_sqlite(path, &err);
    // A page cache big enough for the 10,000 clients' hot leaves: only the filler's speed
    // changes, not what it writes (the same inserts in the same order make the same file).
    conn.pragma_update(None, "cache_size", -1_048_576i64)
        .map_err(e)?;
    // Nor does skipping the fsyncs: a filler that crashes is simply run again.
    conn.pragma_update(None, "synchronous", "OFF").map_err(e)?;
    conn.execute(
        "INSERT INTO runs (start_ms, alive_ms, end_ms, mode, anonymize) \
         VALUES (?1, ?2, ?2, 'all', 0)",
        params![town.spec().start_ms(), town.spec().end_ms],
    )
    .map_err(e)?;
    let mut texts = TextIds::default();
    let written = each_batch(town, batch, &mut progress, |rows, activity| {
        write_batch(&mut conn, &mut texts, rows, activity, false).map_err(e)
    })?;
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    Ok(FillReport {
        rows: written,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the town's queries into the PostgreSQL log at `url`, `batch` rows and their device
/// activity per transaction through the PostgreSQL writer's own statements, and one run
/// covering the town's days (`log = "all"`), as [`fill_sqlite`] does for SQLite.
pub fn fill_postgres(
    town: &mut Town,
    url: &PgUrl,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<FillReport, QueryLogError> {
    let started = std::time::Instant::now();
    let mut store = PgStore::connect(url)?;
    let run = store.begin_run(LogMode::All, false, town.spec().start_ms())?;
    let written = each_batch(town, batch, &mut progress, |rows, activity| {
        store.write_batch(&RowBatch::from_rows(rows, false), activity)
    })?;
    store.end_run(run, town.spec().end_ms)?;
    Ok(FillReport {
        rows: written,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The fillers' common loop: the town's queries `batch` at a time, as the writer's rows with
/// their device activity, handed to `write`; `progress` after each. Returns the rows written.
fn each_batch(
    town: &mut Town,
    batch: usize,
    progress: &mut impl FnMut(u64),
    mut write: impl FnMut(&[Row], &Pending) -> Result<(), QueryLogError>,
) -> Result<u64, QueryLogError> {
    let mut rows: Vec<Row> = Vec::with_capacity(batch);
    let mut activity = Pending::default();
    let mut written = 0;
    loop {
        rows.clear();
        activity.clear();
        {
            let qs = town.batch(batch);
            if qs.is_empty() {
                return Ok(written);
            }
            for q in &qs {
                let row = Row::from_event(&q.event());
                activity.add(&row.seen, row.categories.is_empty(), false);
                rows.push(row);
            }
        }
        write(&rows, &activity)?;
        written += rows.len() as u64;
        progress(written);
    }
}
