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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            telesink::logging::init();
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
        Command::Check { config } => telesink::check::run(&config),
        Command::Explain {
            domain,
            client,
            config,
        } => telesink::explain::run(&config, &domain, client.as_deref()),
    }
}
