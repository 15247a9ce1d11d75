//! The server's log: `tracing` events on stderr, as text or as JSON lines (`--log-format`),
//! filtered by `JOBPACK_LOG` (or `RUST_LOG`; default `info`) in `tracing`'s filter syntax
//! (`info,jobpack_server=debug`). Request lines carry their request id, job lines their job id.
//!
//! With `--otlp-endpoint URL` the same spans (each request; each job, a child of the request
//! that submitted it; the library's pack, git checkout, downloads, archive, unpack and sandbox
//! start under it) also go to an OpenTelemetry collector over OTLP/HTTP, batched on a thread of
//! their own (the server's and the library's, at `info` and above, whatever the log's filter); [`shutdown`] sends what is left.

use std::sync::OnceLock;

use anyhow::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::config::LogFormat;

static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// The URL spans are posted to: `ENDPOINT/v1/traces`, unless it already names that path.
pub fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(endpoint)
        .with_context(|| format!("--otlp-endpoint {endpoint:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!("--otlp-endpoint {endpoint:?}: expected http://HOST:PORT or https://...");
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    })
}

/// Installs the subscriber for this process (once; a second call changes nothing).
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<()> {
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
    let lines = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let spans = match otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry::trace::TracerProvider as _;
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(traces_url(endpoint)?)
                .with_timeout(std::time::Duration::from_secs(10))
                .build()
                .context("cannot make the OTLP exporter")?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name("jobpack")
                .build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("jobpack");
            let _first = PROVIDER.set(provider);
            // The server's and the library's spans at info and above, whatever the log's own
            // filter lets through (not the HTTP and gRPC libraries' own).
            let ours = tracing_subscriber::filter::Targets::new()
                .with_target("jobpack_server", tracing::Level::INFO)
                .with_target("jobpack_core", tracing::Level::INFO);
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(ours),
            )
        }
        None => None,
    };
    // A second subscriber (an embedding program's, or a test's) is left in place.
    let _installed = tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(spans)
        .try_init();
    Ok(())
}

/// Sends the spans not yet exported (at the end of `serve` or `worker`).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.shutdown()
    {
        eprintln!("jobpack: the last spans were not exported: {e}");
    }
}
