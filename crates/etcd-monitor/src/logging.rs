//! Log output through `tracing`: text or JSON lines on stderr.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is a level or a tracing filter
/// (`info,etcd_monitor=debug`); `RUST_LOG`, when set, wins.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            EnvFilter::try_new(&env).map_err(|e| format!("RUST_LOG={env:?}: {e}"))?
        }
        _ => EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
