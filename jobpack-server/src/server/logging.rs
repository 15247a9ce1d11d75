//! The server's log: `tracing` events on stderr, as text or as JSON lines (`--log-format`),
//! filtered by `JOBPACK_LOG` (or `RUST_LOG`; default `info`) in `tracing`'s filter syntax
//! (`info,jobpack_server=debug`). Request lines carry their request id, job lines their job id.

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use super::config::LogFormat;

/// Installs the subscriber for this process (once; a second call changes nothing).
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let (var, spec) = match std::env::var("JOBPACK_LOG") {
        Ok(v) => ("JOBPACK_LOG", v),
        Err(_) => ("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_default()),
    };
    let spec = if spec.trim().is_empty() {
        "info".to_owned()
    } else {
        spec
    };
    let filter = EnvFilter::try_new(&spec).with_context(|| format!("{var}={spec:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second subscriber (an embedding program's, or a test's) is left in place.
    let _installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    Ok(())
}
