//! The tracing subscriber used by every binary.
//!
//! Level filtering follows `RUST_LOG` (default `info`). `TICKETNEST_LOG_FORMAT=json`
//! switches to one JSON object per line for log shippers. Log lines carry structured
//! fields only; request bodies, passwords and tokens are never recorded.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

/// Installs the global subscriber writing to stdout. Safe to call more than once
/// (later calls are ignored), so tests and binaries share it.
pub fn init(default_filter: &str) {
    let requested = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_owned());
    let mut filter =
        EnvFilter::try_new(&requested).unwrap_or_else(|_| EnvFilter::new(default_filter));
    // tokio-postgres logs every statement's parameters at debug level: password hashes,
    // emails. Keep it at info unless someone asks for it by name.
    if !requested.contains("tokio_postgres") {
        if let Ok(directive) = "tokio_postgres=info".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let json = std::env::var("TICKETNEST_LOG_FORMAT").is_ok_and(|v| v == "json");
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(fmt::layer().json().with_current_span(true))
            .try_init()
    } else {
        // Colours only for a terminal: log files and collectors get plain text.
        let ansi = std::io::stdout().is_terminal();
        registry
            .with(fmt::layer().with_target(false).with_ansi(ansi))
            .try_init()
    };
    // Err only means a subscriber is already installed.
    let _ = result;
}

/// For tests: logs to stdout only when `TEST_LOG` is set, otherwise nowhere.
pub fn init_for_tests() {
    if std::env::var("TEST_LOG").is_ok() {
        init("debug");
    }
}
