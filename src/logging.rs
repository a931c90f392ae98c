//! Log set-up: `tracing` to stderr, `RUST_LOG` to change the level (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    // hickory logs every request at info level; that is the query log's job, not the log's.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,hickory_server=warn,hickory_proto=warn,hickory_resolver=warn,hickory_net=warn",
        )
    });
    // Colours only on a terminal: journald and `docker logs` would show the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
