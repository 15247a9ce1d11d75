//! `jobpack serve`: the HTTP service. A thin layer: poem + poem-openapi for HTTP, SQLite for state,
//! a queue that calls `jobpack-core` to pack and run. No packing or sandbox logic of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::http::StatusCode;
use poem::listener::{Acceptor, AcceptorExt, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, IntoResponse, Response, Route, handler};
use poem_openapi::OpenApiService;

pub mod accounts;
mod admin_api;
mod api;
pub mod auth;
mod batch_api;
pub mod batches;
mod conn;
pub mod limits;
mod problem;
pub mod queue;
pub mod store;
mod submit;
pub mod tls;
mod workflow_api;
pub mod workflows;

use jobpack_core::exec::{
    Executor, IsolationMode, LocalExecutor, LocalExecutorConfig, SlurmConfig, SlurmExecutor,
};
use jobpack_core::{Packager, PackagerConfig};

/// Options of `jobpack serve`. Each flag can also come from its `JOBPACK_*` variable or from the
/// config file (`--config`); flags win over variables, variables over the file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of: listen, data_dir, max_concurrent, max_queued, max_body_mb, grace,
    /// permissive, allow_file_urls, auth, insecure_public, tls_cert, tls_key, tls_client_ca,
    /// tls_require_client_cert, executor, shared_dir, partition, account, slurm_sandbox.
    #[arg(long, env = "JOBPACK_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, env = "JOBPACK_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Where the database, artifacts and job directories live (created if missing).
    #[arg(long, env = "JOBPACK_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Jobs packing or running at once.
    #[arg(long, env = "JOBPACK_MAX_CONCURRENT", default_value_t = 4)]
    max_concurrent: usize,
    /// Jobs waiting for a slot before new submissions get 503.
    #[arg(long, env = "JOBPACK_MAX_QUEUED", default_value_t = 10_000)]
    max_queued: usize,
    /// Largest request body (JSON or uploads), in MiB.
    #[arg(long, env = "JOBPACK_MAX_BODY_MB", default_value_t = 256)]
    max_body_mb: usize,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled.
    #[arg(long, env = "JOBPACK_GRACE", default_value_t = 5.0)]
    grace: f64,
    /// Run jobs without full isolation where the machine cannot provide it (reported per job).
    #[arg(long, env = "JOBPACK_PERMISSIVE")]
    permissive: bool,
    /// Allow file:// git URLs (the server's own file system). Off by default.
    #[arg(long, env = "JOBPACK_ALLOW_FILE_URLS")]
    allow_file_urls: bool,
    /// `token`: API tokens and client certificates; `none`: no authentication (a single-user
    /// laptop; refused on a non-loopback address without --insecure-public).
    #[arg(long, env = "JOBPACK_AUTH", value_enum, default_value = "token")]
    auth: auth::AuthMode,
    /// Allow `--auth none` on an address other than loopback: anyone who reaches it runs code.
    #[arg(long, env = "JOBPACK_INSECURE_PUBLIC")]
    insecure_public: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "JOBPACK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "JOBPACK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accept client certificates signed by this PEM CA: the certificate's CN is the user, its
    /// OU the role (admin, submitter, viewer). Tokens keep working beside them.
    #[arg(long, env = "JOBPACK_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Refuse TLS connections that present no client certificate.
    #[arg(
        long,
        env = "JOBPACK_TLS_REQUIRE_CLIENT_CERT",
        requires = "tls_client_ca"
    )]
    tls_require_client_cert: bool,
    /// Where jobs run: `local` (this machine's sandbox) or `slurm` (a Slurm cluster: sbatch,
    /// squeue, scancel; needs --shared-dir).
    #[arg(long, env = "JOBPACK_EXECUTOR", value_enum, default_value = "local")]
    executor: ExecutorKind,
    /// With --executor slurm: a directory every node sees at the same path; job working
    /// directories and Slurm's run files go there.
    #[arg(long, env = "JOBPACK_SHARED_DIR")]
    shared_dir: Option<PathBuf>,
    /// With --executor slurm: the partition to submit to (default: the cluster's).
    #[arg(long, env = "JOBPACK_PARTITION")]
    partition: Option<String>,
    /// With --executor slurm: the account to charge.
    #[arg(long, env = "JOBPACK_ACCOUNT")]
    account: Option<String>,
    /// With --executor slurm: run each job inside jobpack's local sandbox on its node, with this
    /// `jobpack` binary (it must exist at this path on the nodes).
    #[arg(long, env = "JOBPACK_SLURM_SANDBOX")]
    slurm_sandbox: Option<PathBuf>,
    /// A limit every job gets unless it asks for another: NAME=VALUE (repeatable or
    /// comma-separated; `none` removes the default). Names: timeout, memory_bytes, cpu_percent,
    /// pids, io_bps, nofile, file_size_bytes, log_bytes, disk_bytes; sizes take K/M/G/T,
    /// timeout s/m/h/d. Built-in: timeout=1h, memory_bytes=2G, pids=512, nofile=4096,
    /// file_size_bytes=4G, log_bytes=256M, disk_bytes=8G.
    #[arg(
        long = "default-limit",
        env = "JOBPACK_DEFAULT_LIMITS",
        value_delimiter = ','
    )]
    default_limits: Vec<String>,
    /// The most a job may ask for: NAME=VALUE as for --default-limit. Built-in: timeout=7d,
    /// pids=32768, nofile=65536, file_size_bytes=64G, log_bytes=4G, disk_bytes=64G.
    #[arg(long = "max-limit", env = "JOBPACK_MAX_LIMITS", value_delimiter = ',')]
    max_limits: Vec<String>,
    /// Most bytes of files one working-directory tarball may hold.
    #[arg(long, env = "JOBPACK_TARBALL_MAX_MB", default_value_t = 8192)]
    tarball_max_mb: u64,
    /// Let the server fetch data and git repositories from these destinations, which it refuses
    /// by default (loopback, private, link-local, ...): a CIDR (`10.0.0.0/8`, `127.0.0.1/32`) or
    /// a host name. Repeatable.
    #[arg(
        long = "allow-fetch-from",
        env = "JOBPACK_ALLOW_FETCH_FROM",
        value_delimiter = ','
    )]
    allow_fetch_from: Vec<String>,
    /// Multipart uploads received at once (each is spooled to disk); more wait, then get 503.
    #[arg(long, env = "JOBPACK_MAX_UPLOADS", default_value_t = 4)]
    max_uploads: usize,
    /// Connections at once; one more is closed at accept.
    #[arg(long, env = "JOBPACK_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a new connection has to send its first request head.
    #[arg(long, env = "JOBPACK_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a connection may stay idle before it is closed.
    #[arg(long, env = "JOBPACK_IDLE_TIMEOUT", default_value_t = 60)]
    idle_timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    Local,
    Slurm,
}

/// The config file's keys (all optional; unknown keys are an error).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    max_concurrent: Option<u64>,
    max_queued: Option<u64>,
    max_body_mb: Option<u64>,
    grace: Option<f64>,
    permissive: Option<bool>,
    allow_file_urls: Option<bool>,
    auth: Option<auth::AuthMode>,
    insecure_public: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_require_client_cert: Option<bool>,
    executor: Option<ExecutorKind>,
    shared_dir: Option<PathBuf>,
    partition: Option<String>,
    account: Option<String>,
    slurm_sandbox: Option<PathBuf>,
    /// `{pids = 512, memory_bytes = "2G"}`
    default_limits: Option<toml::Table>,
    max_limits: Option<toml::Table>,
    tarball_max_mb: Option<u64>,
    allow_fetch_from: Option<Vec<String>>,
    max_connections: Option<u64>,
    max_uploads: Option<u64>,
    header_timeout: Option<u64>,
    idle_timeout: Option<u64>,
}

/// A config file's limits table as `NAME=VALUE,...`.
fn limit_pairs(t: Option<toml::Table>) -> Option<String> {
    t.map(|t| {
        t.iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => format!("{k}={s}"),
                toml::Value::Integer(i) => format!("{k}={i}"),
                toml::Value::Float(f) => format!("{k}={f}"),
                other => format!("{k}={other:?}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// If `jobpack serve` is given a config file (`--config FILE`, `--config=FILE` or
/// `JOBPACK_CONFIG`), turns its keys into the `JOBPACK_*` variables that are not set yet, so that
/// clap applies them below flags and real environment variables. Call before any thread starts.
pub fn apply_config_file(args: &[String]) -> anyhow::Result<()> {
    if args.get(1).map(String::as_str) != Some("serve") {
        return Ok(());
    }
    let from_flag = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_owned).or_else(|| {
            (a == "--config")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    });
    let Some(path) = from_flag.or_else(|| std::env::var("JOBPACK_CONFIG").ok()) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {path}"))?;
    let c: ConfigFile =
        toml::from_str(&text).with_context(|| format!("invalid config file {path}"))?;
    let path_str = |p: Option<PathBuf>| p.map(|p| p.display().to_string());
    let pairs: [(&str, Option<String>); 27] = [
        ("JOBPACK_MAX_UPLOADS", c.max_uploads.map(|v| v.to_string())),
        (
            "JOBPACK_MAX_CONNECTIONS",
            c.max_connections.map(|v| v.to_string()),
        ),
        (
            "JOBPACK_HEADER_TIMEOUT",
            c.header_timeout.map(|v| v.to_string()),
        ),
        (
            "JOBPACK_IDLE_TIMEOUT",
            c.idle_timeout.map(|v| v.to_string()),
        ),
        ("JOBPACK_DEFAULT_LIMITS", limit_pairs(c.default_limits)),
        ("JOBPACK_MAX_LIMITS", limit_pairs(c.max_limits)),
        (
            "JOBPACK_TARBALL_MAX_MB",
            c.tarball_max_mb.map(|v| v.to_string()),
        ),
        (
            "JOBPACK_ALLOW_FETCH_FROM",
            c.allow_fetch_from.map(|v| v.join(",")),
        ),
        ("JOBPACK_LISTEN", c.listen),
        (
            "JOBPACK_DATA_DIR",
            c.data_dir.map(|d| d.display().to_string()),
        ),
        (
            "JOBPACK_MAX_CONCURRENT",
            c.max_concurrent.map(|v| v.to_string()),
        ),
        ("JOBPACK_MAX_QUEUED", c.max_queued.map(|v| v.to_string())),
        ("JOBPACK_MAX_BODY_MB", c.max_body_mb.map(|v| v.to_string())),
        ("JOBPACK_GRACE", c.grace.map(|v| v.to_string())),
        ("JOBPACK_PERMISSIVE", c.permissive.map(|v| v.to_string())),
        (
            "JOBPACK_ALLOW_FILE_URLS",
            c.allow_file_urls.map(|v| v.to_string()),
        ),
        (
            "JOBPACK_AUTH",
            c.auth.map(|a| {
                match a {
                    auth::AuthMode::Token => "token",
                    auth::AuthMode::None => "none",
                }
                .to_owned()
            }),
        ),
        (
            "JOBPACK_INSECURE_PUBLIC",
            c.insecure_public.map(|v| v.to_string()),
        ),
        ("JOBPACK_TLS_CERT", path_str(c.tls_cert)),
        ("JOBPACK_TLS_KEY", path_str(c.tls_key)),
        ("JOBPACK_TLS_CLIENT_CA", path_str(c.tls_client_ca)),
        (
            "JOBPACK_TLS_REQUIRE_CLIENT_CERT",
            c.tls_require_client_cert.map(|v| v.to_string()),
        ),
        (
            "JOBPACK_EXECUTOR",
            c.executor.map(|e| {
                match e {
                    ExecutorKind::Local => "local",
                    ExecutorKind::Slurm => "slurm",
                }
                .to_owned()
            }),
        ),
        ("JOBPACK_SHARED_DIR", path_str(c.shared_dir)),
        ("JOBPACK_PARTITION", c.partition),
        ("JOBPACK_ACCOUNT", c.account),
        ("JOBPACK_SLURM_SANDBOX", path_str(c.slurm_sandbox)),
    ];
    for (k, v) in pairs {
        if let Some(v) = v
            && std::env::var_os(k).is_none()
        {
            // SAFETY: called from main before the runtime or any other thread exists.
            unsafe { std::env::set_var(k, v) };
        }
    }
    Ok(())
}

/// A request body reader that fails once more than `left` bytes have come (for bodies sent
/// without a Content-Length).
struct CappedBody<R> {
    inner: R,
    left: u64,
    max: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CappedBody<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > self.left {
            let max = self.max;
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the request body is larger than {max} bytes"
            ))));
        }
        self.left -= n;
        r
    }
}

/// Oversized bodies up to this size are read and dropped before the 413 is sent.
const DRAIN_LIMIT: u64 = 64 << 20;

fn problem_response(status: StatusCode, message: String) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "busy",
        StatusCode::INSUFFICIENT_STORAGE => "insufficient_storage",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let body = serde_json::json!({"code": code, "message": message, "status": status.as_u16()});
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// Enforces the body size limit (413 on a declared length over it; a capped reader otherwise) and
/// gives errors that never reached an operation (unknown route, unreadable body, ...) the same
/// JSON problem body the operations use.
async fn edge<E: poem::Endpoint>(
    ep: E,
    mut req: poem::Request,
    max_body: u64,
    uploads: Arc<tokio::sync::Semaphore>,
) -> poem::Result<Response> {
    // Uploads are spooled to disk part by part before a handler runs; only so many at once.
    let is_upload = req
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/"));
    let _upload_slot = if is_upload {
        match tokio::time::timeout(Duration::from_secs(30), uploads.acquire_owned()).await {
            Ok(Ok(p)) => Some(p),
            _ => {
                return Ok(problem_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many uploads are in progress; try again later".into(),
                ));
            }
        }
    } else {
        None
    };
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max_body => {
            // Read (and drop) a bounded amount of the body first: a client still sending would
            // otherwise see a broken pipe instead of this answer.
            if n <= DRAIN_LIMIT {
                let mut body = req.take_body().into_async_read();
                let _ = tokio::io::copy(&mut body, &mut tokio::io::sink()).await;
            }
            return Ok(problem_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is {n} bytes; this server takes at most {max_body}"),
            ));
        }
        Some(_) => {}
        None => {
            let body = req.take_body().into_async_read();
            req.set_body(poem::Body::from_async_read(CappedBody {
                inner: body,
                left: max_body,
                max: max_body,
            }));
        }
    }
    let resp = match ep.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.is_success() || status.is_redirection() || is_json {
        return Ok(resp);
    }
    let text = resp.into_body().into_string().await.unwrap_or_default();
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    Ok(problem_response(status, message))
}

/// `/v1/jobs/:id/files/*path`: the same as the OpenAPI operation, with raw slashes in the path.
#[handler]
async fn file_wildcard(
    poem::web::Path((id, path)): poem::web::Path<(String, String)>,
    Data(runner): Data<&Arc<queue::Runner>>,
    caller: auth::Caller,
) -> Response {
    match api::file_download(runner, &caller, &id, &path).await {
        Ok(d) => d.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Prometheus metrics of the whole service (admins only: they count every user's jobs).
/// The dashboard: three files built into the binary (no build step, no CDN), under a strict
/// Content-Security-Policy. It talks to `/v1` like any client.
#[handler]
fn ui(req: &poem::Request) -> Response {
    let (body, ctype) = match req.uri().path() {
        "/ui/app.js" => (
            include_str!("../../ui/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/ui/app.css" => (include_str!("../../ui/app.css"), "text/css; charset=utf-8"),
        _ => (
            include_str!("../../ui/index.html"),
            "text/html; charset=utf-8",
        ),
    };
    Response::builder()
        .content_type(ctype)
        .header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'",
        )
        .header("X-Content-Type-Options", "nosniff")
        .header("Cache-Control", "no-cache")
        .body(body)
}

#[handler]
fn metrics(Data(runner): Data<&Arc<queue::Runner>>, caller: auth::Caller) -> Response {
    if !caller.may(auth::Action::Administer) {
        return problem_response(
            StatusCode::FORBIDDEN,
            format!("role {} may not read the metrics", caller.role),
        );
    }
    let mut out = String::new();
    out.push_str("# HELP jobpack_jobs Jobs by status.\n# TYPE jobpack_jobs gauge\n");
    for (status, n) in runner.store.counts(None).unwrap_or_default() {
        out.push_str(&format!("jobpack_jobs{{status=\"{status}\"}} {n}\n"));
    }
    out.push_str(
        "# HELP jobpack_queue_depth Jobs waiting for a slot.\n# TYPE jobpack_queue_depth gauge\n",
    );
    out.push_str(&format!("jobpack_queue_depth {}\n", runner.queue_depth()));
    out.push_str("# HELP jobpack_running Jobs running now.\n# TYPE jobpack_running gauge\n");
    out.push_str(&format!("jobpack_running {}\n", runner.running_count()));
    let (n, sum) = runner.store.durations().unwrap_or((0, 0.0));
    out.push_str("# HELP jobpack_job_duration_seconds Submission to end, finished jobs.\n");
    out.push_str("# TYPE jobpack_job_duration_seconds summary\n");
    out.push_str(&format!(
        "jobpack_job_duration_seconds_sum {sum}\njobpack_job_duration_seconds_count {n}\n"
    ));
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

pub fn run(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(serve(args))?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(args.data_dir.join("jobs")).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    // Absolute from here on: job directories are bind-mounted into sandboxes.
    let data = &args
        .data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.data_dir.display()))?;
    // Staging directories of packs a previous process did not finish are all stale now.
    std::fs::create_dir_all(data.join("work"))?;
    for e in std::fs::read_dir(data.join("work"))?.flatten() {
        let _ = std::fs::remove_dir_all(e.path());
    }
    let store = store::Store::open(&data.join("jobpack.db"))
        .with_context(|| format!("cannot open the database in {}", data.display()))?;
    let destinations = Arc::new(
        jobpack_core::egress::Destinations::public(&args.allow_fetch_from)
            .map_err(|e| anyhow::anyhow!("--allow-fetch-from: {e}"))?,
    );
    let packager = Packager::new(PackagerConfig {
        work_dir: data.join("work"),
        out_dir: data.join("jobs"),
        cache_dir: Some(data.join("cache")),
        allow_file_urls: args.allow_file_urls,
        download: jobpack_core::DownloadOptions {
            destinations: destinations.clone(),
            ..jobpack_core::DownloadOptions::default()
        },
        ..PackagerConfig::default()
    })?;
    let (executor, work_root): (Arc<dyn Executor>, Option<PathBuf>) = match args.executor {
        ExecutorKind::Local => (
            Arc::new(LocalExecutor::new(LocalExecutorConfig {
                mode: if args.permissive {
                    IsolationMode::Permissive
                } else {
                    IsolationMode::Strict
                },
                runtime_dir: data.join("run"),
                ..LocalExecutorConfig::default()
            })),
            None,
        ),
        ExecutorKind::Slurm => {
            let shared = args
                .shared_dir
                .clone()
                .context("--executor slurm needs --shared-dir (a directory all nodes see)")?;
            std::fs::create_dir_all(&shared)
                .with_context(|| format!("cannot create {}", shared.display()))?;
            let shared = shared
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", shared.display()))?;
            let mut cfg = SlurmConfig::new(&shared);
            cfg.partition = args.partition.clone();
            cfg.account = args.account.clone();
            cfg.sandbox = args.slurm_sandbox.clone();
            let slurm = SlurmExecutor::connect(cfg)
                .await
                .context("cannot use Slurm")?;
            eprintln!(
                "jobpack: running jobs on Slurm (shared directory {})",
                shared.display()
            );
            (Arc::new(slurm), Some(shared))
        }
    };
    let server_limits = {
        let base = limits::ServerLimits::default();
        let defaults = limits::parse_pairs(&base.defaults, &args.default_limits)
            .map_err(|e| anyhow::anyhow!("--default-limit: {e}"))?;
        let max = limits::parse_pairs(&base.max, &args.max_limits)
            .map_err(|e| anyhow::anyhow!("--max-limit: {e}"))?;
        limits::ServerLimits {
            defaults,
            max,
            tarball_max_bytes: args.tarball_max_mb.saturating_mul(1 << 20),
            destinations: destinations.clone(),
        }
    };
    if !(args.grace.is_finite() && args.grace >= 0.0) {
        anyhow::bail!("--grace must be a non-negative number of seconds");
    }
    if args.auth == auth::AuthMode::None && !args.listen.ip().is_loopback() && !args.insecure_public
    {
        anyhow::bail!(
            "--auth none lets anyone who reaches {} run code; listen on a loopback address, use \
             tokens, or add --insecure-public",
            args.listen
        );
    }
    if args.auth == auth::AuthMode::Token {
        bootstrap_admin(&store)?;
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(&tls::TlsOptions {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
            require_client_cert: args.tls_require_client_cert,
        })?),
        _ => None,
    };
    let authenticator = Arc::new(auth::Authenticator {
        mode: args.auth,
        store: store.clone(),
    });
    let runner = queue::Runner::new(
        store,
        packager,
        executor,
        data.clone(),
        work_root,
        queue::RunnerOptions {
            max_concurrent: args.max_concurrent,
            grace: Duration::from_secs_f64(args.grace),
            limits: server_limits,
        },
    );
    runner
        .recover()
        .await
        .context("cannot resume the jobs of the previous run")?;

    let api = OpenApiService::new(
        (
            api::JobsApi {
                runner: runner.clone(),
                max_queued: args.max_queued,
                allow_file_urls: args.allow_file_urls,
            },
            admin_api::AccountsApi {
                store: runner.store.clone(),
            },
            batch_api::BatchesApi {
                runner: runner.clone(),
                max_queued: args.max_queued,
                allow_file_urls: args.allow_file_urls,
            },
            workflow_api::WorkflowsApi {
                runner: runner.clone(),
                max_queued: args.max_queued,
                allow_file_urls: args.allow_file_urls,
            },
        ),
        "jobpack",
        env!("CARGO_PKG_VERSION"),
    )
    .server("/v1");
    let max_body = (args.max_body_mb as u64).saturating_mul(1 << 20);
    let uploads = Arc::new(tokio::sync::Semaphore::new(args.max_uploads.max(1)));
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let app = Route::new()
        .at("/v1/jobs/:id/files/*path", poem::get(file_wildcard))
        .nest("/v1", api)
        .at("/openapi.json", spec)
        .nest(
            "/docs",
            // Swagger UI is one page with its script, style and the spec inline: nothing else
            // may load, nothing may frame it.
            docs.with(
                poem::middleware::SetHeader::new()
                    .overriding(
                        "Content-Security-Policy",
                        "default-src 'none'; script-src 'unsafe-inline'; style-src \
                         'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
                         frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                    )
                    .overriding("X-Frame-Options", "DENY")
                    .overriding("X-Content-Type-Options", "nosniff"),
            ),
        )
        .at("/metrics", poem::get(metrics))
        .at("/", poem::get(ui))
        .at("/ui/app.js", poem::get(ui))
        .at("/ui/app.css", poem::get(ui))
        .data(runner.clone())
        .around(move |ep, req| auth::authenticate(ep, req, authenticator.clone()))
        .around(move |ep, req| edge(ep, req, max_body, uploads.clone()));

    let (acceptor, scheme) = match tls {
        Some(cfg) => (
            tls::TlsAcceptor::bind(args.listen, cfg)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?
                .boxed(),
            "https",
        ),
        None => (
            TcpListener::bind(args.listen)
                .into_acceptor()
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?
                .boxed(),
            "http",
        ),
    };
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .context("the listener has no address")?;
    let nofile = conn::raise_nofile();
    if (args.max_connections as u64).saturating_add(256) > nofile {
        eprintln!(
            "jobpack: warning: --max-connections {} is close to the open-file limit {nofile}",
            args.max_connections
        );
    }
    let acceptor = conn::Guarded::new(
        acceptor,
        args.max_connections,
        Duration::from_secs(args.header_timeout.max(1)),
    );
    // The first line on stdout, for scripts and tests that started us on port 0.
    println!("jobpack listening on {scheme}://{addr}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    poem::Server::new_with_acceptor(acceptor)
        .idle_timeout(Duration::from_secs(args.idle_timeout.max(1)))
        .run_with_graceful_shutdown(
            app,
            async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            },
            Some(Duration::from_secs(5)),
        )
        .await
        .context("the server failed")?;
    runner
        .shutdown(Duration::from_secs_f64(args.grace) + Duration::from_secs(10))
        .await;
    Ok(())
}

/// On the first start with token auth, creates the user `admin` and its first token: the value
/// of `JOBPACK_ADMIN_TOKEN` if set, else a new one printed (once) on stderr. On later starts a
/// `JOBPACK_ADMIN_TOKEN` the database does not know yet is added to `admin` (a revoked one is
/// not brought back).
fn bootstrap_admin(store: &store::Store) -> anyhow::Result<()> {
    use accounts::{Quota, Role, token_hash};
    let from_env = std::env::var("JOBPACK_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if let Some(t) = &from_env
        && (t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        anyhow::bail!(
            "JOBPACK_ADMIN_TOKEN must be at least 16 characters without spaces (new_token-like: \
             jp_ and 64 hex digits)"
        );
    }
    if store.user(ADMIN)?.is_none() {
        if store.user_count()? > 0 && from_env.is_none() {
            return Ok(());
        }
        store.add_user(ADMIN, Role::Admin, &Quota::default())?;
        store.audit(
            "jobpack",
            "user.add",
            Some(ADMIN),
            Some("role=admin (bootstrap)"),
        );
    }
    match from_env {
        Some(t) => match store.token_by_hash(&token_hash(&t))? {
            None => {
                let row =
                    store.add_token_hash(ADMIN, Some("JOBPACK_ADMIN_TOKEN"), &token_hash(&t))?;
                store.audit(
                    "jobpack",
                    "token.create",
                    Some(&row.id),
                    Some("user=admin (JOBPACK_ADMIN_TOKEN)"),
                );
                eprintln!("jobpack: the token in JOBPACK_ADMIN_TOKEN now authenticates user admin");
            }
            Some(row) if row.revoked_at.is_some() => eprintln!(
                "jobpack: warning: JOBPACK_ADMIN_TOKEN was revoked (token {}); it stays refused",
                row.id
            ),
            Some(_) => {}
        },
        None if store.tokens(Some(ADMIN))?.is_empty() => {
            let (row, t) = store.create_token(ADMIN, Some("bootstrap"))?;
            store.audit(
                "jobpack",
                "token.create",
                Some(&row.id),
                Some("user=admin (bootstrap)"),
            );
            eprintln!(
                "jobpack: created user admin; its API token, shown only this once:\n{t}\n\
                 (keep it; `jobpack admin token create admin` makes another)"
            );
        }
        None => {}
    }
    Ok(())
}

/// The user created at the first start.
const ADMIN: &str = "admin";
