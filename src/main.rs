//! The `telesink` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A DNS sinkhole that stops phones, TVs and PCs from phoning home.
///
/// Set telesink as your network's DNS server. It blocks vendor telemetry by category and per
/// device, forwards everything else, and tells you whether a device's telemetry opt-out
/// really stopped the traffic.
#[derive(Parser)]
#[command(name = "telesink", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS, metrics and the query log until SIGTERM or Ctrl-C (SIGHUP reloads).
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Load the configuration and every list without serving, and report what was found.
    ///
    /// Prints each list with its entry count and categories, and the lines that were skipped
    /// (the first few, with file:line). Exits 0 when valid, 1 when not.
    Check {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Show which lists, lines and categories match a name or one of its parents, and what
    /// a client's group does with it.
    Explain {
        /// The name to look up, e.g. tracking.miui.com
        domain: String,
        /// The client's address (or its [[client]] name); without it, every group is shown.
        #[arg(long)]
        client: Option<String>,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Tell whether a device stopped trying to reach a category after an opt-out.
    ///
    /// Counts the device's queries in the category (blocked, observed and allowed alike) from
    /// --since to --until, and in a baseline of the same length just before (at most 7 days).
    /// STOPPED also needs proof that the device kept using telesink: its ordinary queries go
    /// on at a rate its baseline makes plausible. A device that went quiet on DNS, was
    /// DNS-silent or asked a `bypass` resolver gets INCONCLUSIVE, with what to check.
    /// Exits 0 STOPPED, 1 CONTINUING, 3 INCONCLUSIVE, 2 on error.
    Verify {
        /// The device: its name (a [[client]] of the config, or one the log has seen) or one of
        /// its IP addresses.
        #[arg(long)]
        client: String,
        /// The category, e.g. telemetry.
        #[arg(long)]
        category: String,
        /// When the opt-out was switched: 2026-11-25T15:00:00Z, an age (90m, 2h, 3d), mark:last
        /// or mark:ID.
        #[arg(long)]
        since: telesink::timespec::TimeSpec,
        /// End of the window [default: now].
        #[arg(long)]
        until: Option<telesink::timespec::TimeSpec>,
        /// Count from this Prometheus (summed over every telesink it scrapes) instead of the
        /// query log; no per-domain detail.
        #[arg(long, value_name = "URL")]
        prometheus: Option<String>,
        /// Print the report as a JSON object.
        #[arg(long)]
        json: bool,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Record the moment an opt-out was switched on a device (`verify --since mark:last`).
    Mark {
        /// The device: its name (a [[client]] of the config, or one the log has seen) or one of
        /// its IP addresses.
        #[arg(long)]
        client: String,
        /// What was switched, e.g. "MIUI analytics off".
        #[arg(long)]
        note: String,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Every device seen: name, how it was named, MAC, addresses, last query, on the LAN or
    /// not, DNS-silent or not.
    ///
    /// Reads the query log and, now, the kernel's neighbour table and the DHCP lease files.
    Devices {
        /// Print the devices as a JSON array.
        #[arg(long)]
        json: bool,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// An Apple configuration profile (.mobileconfig) that sets a device's DNS to telesink's
    /// DoH URL with its id: https://<tls_name>/dns-query/<NAME>.
    Profile {
        /// The device id (a [[client]] name, or a new name for the device).
        #[arg(long)]
        client: String,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Every list: source, entries and, for URL lists, the cached copy (last download, age,
    /// ETag, last error). `lists update` downloads the URL lists now.
    Lists {
        #[command(subcommand)]
        action: Option<ListsCommand>,
        /// Print the lists as a JSON array.
        #[arg(long)]
        json: bool,
        #[arg(short, long, default_value = "config.toml", global = true)]
        config: PathBuf,
    },
    /// Names in the query log that no list categorises but that look like telemetry, ranked,
    /// with the line to paste into a local list (needs `[querylog] log = "all"`).
    Suggest {
        /// Only this device: a [[client]] name or an address.
        #[arg(long)]
        client: Option<String>,
        /// From this time on [default: 7d]: 2026-11-25T15:00:00Z, an age (90m, 2h, 3d), mark:last.
        #[arg(long)]
        since: Option<telesink::timespec::TimeSpec>,
        /// How many names to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// The telemetry addresses learnt for a category, IPv4 then IPv6.
    ///
    /// They live in the running server's memory: this asks it over the metrics listener
    /// (`GET /addresses/CATEGORY.txt`), so `telesink run` must be running with this config.
    Addresses {
        /// A category of `[addresses] categories`, e.g. telemetry.
        category: String,
        /// Print JSON: each address with the seconds it has left, and the shared ones left out.
        #[arg(long)]
        json: bool,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Search the query log, newest first.
    Log {
        /// A [[client]] name from the config, or an IP address.
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        category: Option<String>,
        /// From this time on: 2026-11-25T15:00:00Z, an age (90m, 2h, 3d), mark:last or mark:ID.
        #[arg(long)]
        since: Option<telesink::timespec::TimeSpec>,
        /// blocked, cached, forwarded, local, refused or failed; or observed, allowed.
        #[arg(long)]
        result: Option<String>,
        #[arg(long, default_value_t = telesink::querylog::LogArgs::DEFAULT_LIMIT)]
        limit: usize,
        /// Print the entries as a JSON array.
        #[arg(long)]
        json: bool,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ListsCommand {
    /// Download every URL list now (conditionally, as SIGHUP does), with progress and a
    /// summary; a running telesink loads the new copies. Exits 1 if a download failed.
    Update,
    /// How many names of published lists (any format) the config blocks for devices in no
    /// group, and which an allow exception lets through.
    Coverage {
        /// List files to measure.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also print every name that no list blocks.
        #[arg(long)]
        missed: bool,
    },
}

/// The query log's path and the config's clients, for `verify`, `mark` and `log`.
fn querylog_context(
    config: &std::path::Path,
) -> Result<
    (
        telesink::querylog::LogLocation,
        telesink::querylog::OwnedClientList,
        std::time::Duration,
    ),
    ExitCode,
> {
    match telesink::config::Config::load(config) {
        Ok(c) => {
            let clients = c
                .clients
                .iter()
                .map(|c| (c.name.clone(), c.addresses.clone()))
                .collect();
            let at = match telesink::querylog::LogLocation::of(&c.querylog) {
                Ok(at) => at,
                Err(e) => {
                    eprintln!("telesink: {e}");
                    return Err(ExitCode::from(2));
                }
            };
            Ok((at, clients, c.client_discovery.silent_after))
        }
        Err(e) => {
            eprintln!("telesink: invalid configuration: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// Prints a command's report (text or JSON) or its error (exit 2).
fn report<R>(
    result: Result<R, telesink::querylog::CommandError>,
    render: impl FnOnce(&R) -> String,
    code: impl FnOnce(&R) -> u8,
) -> ExitCode {
    match result {
        Ok(r) => {
            print!("{}", render(&r));
            ExitCode::from(code(&r))
        }
        Err(e) => {
            eprintln!("telesink: {e}");
            ExitCode::from(2)
        }
    }
}

fn with_newline(s: String) -> String {
    if s.ends_with('\n') {
        s
    } else {
        s + "\n"
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            telesink::logging::init();
            telesink::alloc::tune();
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("telesink: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(telesink::server::run(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("telesink: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check { config } => telesink::cli::check::run(&config),
        Command::Profile { client, config } => telesink::cli::profile::run(&config, &client),
        Command::Explain {
            domain,
            client,
            config,
        } => telesink::cli::explain::run(&config, &domain, client.as_deref()),
        Command::Verify {
            client,
            category,
            since,
            until,
            prometheus,
            json,
            config,
        } => {
            let (db, clients, silent_after) = match querylog_context(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let args = telesink::verify::VerifyArgs {
                client,
                category,
                since,
                until,
                prometheus,
                silent_after,
            };
            report(
                telesink::verify::verify_in(&args, &db, &clients),
                |r| {
                    with_newline(if json {
                        r.render_json()
                    } else {
                        r.render_text()
                    })
                },
                |r| r.exit_code() as u8,
            )
        }
        Command::Mark {
            client,
            note,
            config,
        } => {
            let (db, clients, _) = match querylog_context(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let args = telesink::querylog::MarkArgs { client, note };
            report(
                telesink::querylog::mark_in(&args, &db, &clients),
                |r| r.render_text(),
                |_| 0,
            )
        }
        Command::Devices { json, config } => {
            let config = match telesink::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("telesink: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            match telesink::cli::devices::devices(&config) {
                Ok(r) => {
                    print!(
                        "{}",
                        if json {
                            r.render_json()
                        } else {
                            r.render_text()
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("telesink: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Lists {
            action,
            json,
            config,
        } => match action {
            None => telesink::cli::lists::run(&config, json),
            Some(ListsCommand::Update) => telesink::cli::lists::update(&config),
            Some(ListsCommand::Coverage { files, missed }) => {
                telesink::cli::lists::run_coverage(&config, &files, missed)
            }
        },
        Command::Suggest {
            client,
            since,
            limit,
            config,
        } => telesink::cli::suggest::run(&config, client.as_deref(), since, limit),
        Command::Addresses {
            category,
            json,
            config,
        } => {
            let config = match telesink::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("telesink: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            match telesink::cli::addresses::addresses(&config, &category, json) {
                Ok(body) => {
                    print!("{body}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("telesink: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Log {
            client,
            category,
            since,
            result,
            limit,
            json,
            config,
        } => {
            let (db, clients, _) = match querylog_context(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let args = telesink::querylog::LogArgs {
                client,
                category,
                result,
                since,
                limit: Some(limit),
            };
            report(
                telesink::querylog::log_in(&args, &db, &clients),
                |r| {
                    with_newline(if json {
                        r.render_json()
                    } else {
                        r.render_text()
                    })
                },
                |_| 0,
            )
        }
    }
}
