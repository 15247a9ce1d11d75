//! `jobpack serve`'s options: the flags (`ServeArgs`, each with its `JOBPACK_*` variable) and the
//! optional TOML config file, whose keys become the variables that are not set yet.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use super::auth;

/// Options of `jobpack serve`. Each flag can also come from its `JOBPACK_*` variable or from the
/// config file (`--config`); flags win over variables, variables over the file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of: listen, data_dir, max_concurrent, max_queued, max_body_mb, grace,
    /// permissive, allow_file_urls, runtimes, auth, insecure_public, tls_cert, tls_key, tls_client_ca,
    /// tls_require_client_cert, executor, shared_dir, partition, account, slurm_sandbox,
    /// allowed_workdirs, default_working_dir, command_timeout, queues, retain, max_data_gb,
    /// gc_interval, allow_webhooks_to, webhook_timeout, webhook_retry_for, webhook_backoff (and
    /// the limits, ...).
    #[arg(long, env = "JOBPACK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, env = "JOBPACK_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Where the database, artifacts and job directories live (created if missing).
    #[arg(long, env = "JOBPACK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Jobs packing or running at once.
    #[arg(long, env = "JOBPACK_MAX_CONCURRENT", default_value_t = 4)]
    pub max_concurrent: usize,
    /// Jobs waiting for a slot before new submissions get 503.
    #[arg(long, env = "JOBPACK_MAX_QUEUED", default_value_t = 10_000)]
    pub max_queued: usize,
    /// Largest request body (JSON or uploads), in MiB.
    #[arg(long, env = "JOBPACK_MAX_BODY_MB", default_value_t = 256)]
    pub max_body_mb: usize,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled.
    #[arg(long, env = "JOBPACK_GRACE", default_value_t = 5.0)]
    pub grace: f64,
    /// The log on stderr: `text`, or `json` (one object per line). Which events: JOBPACK_LOG or
    /// RUST_LOG (default `info`).
    #[arg(long, env = "JOBPACK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Also export the spans (requests, jobs, and the library's pack, unpack and sandbox start
    /// under them) to this OpenTelemetry collector over OTLP/HTTP: `http://HOST:4318` (spans
    /// go to its `/v1/traces`).
    #[arg(long, env = "JOBPACK_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Run jobs without full isolation where the machine cannot provide it (reported per job).
    #[arg(long, env = "JOBPACK_PERMISSIVE")]
    pub permissive: bool,
    /// Allow file:// git URLs (the server's own file system). Off by default.
    #[arg(long, env = "JOBPACK_ALLOW_FILE_URLS")]
    pub allow_file_urls: bool,
    /// The runtime store (root file systems a spec's `runtime_fs` names; `jobpack runtime`
    /// manages it). Default: DATA_DIR/runtimes.
    #[arg(long, env = "JOBPACK_RUNTIMES")]
    pub runtimes: Option<PathBuf>,
    /// `token`: API tokens and client certificates; `none`: no authentication (a single-user
    /// laptop; refused on a non-loopback address without --insecure-public).
    #[arg(long, env = "JOBPACK_AUTH", value_enum, default_value = "token")]
    pub auth: auth::AuthMode,
    /// Allow `--auth none` on an address other than loopback: anyone who reaches it runs code.
    #[arg(long, env = "JOBPACK_INSECURE_PUBLIC")]
    pub insecure_public: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "JOBPACK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "JOBPACK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept client certificates signed by this PEM CA: the certificate's CN is the user, its
    /// OU the role (admin, submitter, viewer). Tokens keep working beside them.
    #[arg(long, env = "JOBPACK_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse TLS connections that present no client certificate.
    #[arg(
        long,
        env = "JOBPACK_TLS_REQUIRE_CLIENT_CERT",
        requires = "tls_client_ca"
    )]
    pub tls_require_client_cert: bool,
    /// Where jobs run: `local` (this machine's sandbox) or `slurm` (a Slurm cluster: sbatch,
    /// squeue, scancel; needs --shared-dir).
    #[arg(long, env = "JOBPACK_EXECUTOR", value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// With --executor slurm: a directory every node sees at the same path; job working
    /// directories and Slurm's run files go there.
    #[arg(long, env = "JOBPACK_SHARED_DIR")]
    pub shared_dir: Option<PathBuf>,
    /// With --executor slurm: the partition to submit to (default: the cluster's).
    #[arg(long, env = "JOBPACK_PARTITION")]
    pub partition: Option<String>,
    /// With --executor slurm: the account to charge.
    #[arg(long, env = "JOBPACK_ACCOUNT")]
    pub account: Option<String>,
    /// With --executor slurm: run each job inside jobpack's local sandbox on its node, with this
    /// `jobpack` binary (it must exist at this path on the nodes).
    #[arg(long, env = "JOBPACK_SLURM_SANDBOX")]
    pub slurm_sandbox: Option<PathBuf>,
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
    pub default_limits: Vec<String>,
    /// The most a job may ask for: NAME=VALUE as for --default-limit. Built-in: timeout=7d,
    /// pids=32768, nofile=65536, file_size_bytes=64G, log_bytes=4G, disk_bytes=64G.
    #[arg(long = "max-limit", env = "JOBPACK_MAX_LIMITS", value_delimiter = ',')]
    pub max_limits: Vec<String>,
    /// Most bytes of files one working-directory tarball may hold.
    #[arg(long, env = "JOBPACK_TARBALL_MAX_MB", default_value_t = 8192)]
    pub tarball_max_mb: u64,
    /// `GET /v1/ready` says not ready when the data directory's file system has this many MiB
    /// free or fewer.
    #[arg(long, env = "JOBPACK_READY_MIN_FREE_MB", default_value_t = 1024)]
    pub ready_min_free_mb: u64,
    /// Milliseconds between two samples of a running job's cgroup (CPU, memory, processes, IO)
    /// kept for `GET /v1/jobs/{id}/usage` (at least 100; 0: no sampling).
    #[arg(long, env = "JOBPACK_USAGE_INTERVAL_MS", default_value_t = 1000)]
    pub usage_interval_ms: u64,
    /// Most samples kept per job: at the limit every second one is dropped and the interval
    /// doubles, so a long job keeps its whole run at a coarser step.
    #[arg(long, env = "JOBPACK_USAGE_MAX_SAMPLES", default_value_t = 3600,
          value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub usage_max_samples: u32,
    /// Let the server fetch data and git repositories from these destinations, which it refuses
    /// by default (loopback, private, link-local, ...): a CIDR (`10.0.0.0/8`, `127.0.0.1/32`) or
    /// a host name. Repeatable.
    #[arg(
        long = "allow-fetch-from",
        env = "JOBPACK_ALLOW_FETCH_FROM",
        value_delimiter = ','
    )]
    pub allow_fetch_from: Vec<String>,
    /// Multipart uploads received at once (each is spooled to disk); more wait, then get 503.
    #[arg(long, env = "JOBPACK_MAX_UPLOADS", default_value_t = 4)]
    pub max_uploads: usize,
    /// Connections at once; one more is closed at accept.
    #[arg(long, env = "JOBPACK_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Seconds a new connection has to send its first request head.
    #[arg(long, env = "JOBPACK_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a connection may stay idle before it is closed.
    #[arg(long, env = "JOBPACK_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Host directories a job may name as its `working_dir` (it runs there, the directory bound
    /// read-write at the same path in the sandbox; it must be writable by the job's host uid).
    /// Comma-separated; also `ALLOWED_WORKDIRS`. None by default: `working_dir` is refused.
    #[arg(
        long = "allowed-workdir",
        env = "JOBPACK_ALLOWED_WORKDIRS",
        value_delimiter = ','
    )]
    pub allowed_workdirs: Vec<PathBuf>,
    /// The `working_dir` of `/api/v1` jobs that name none (one of --allowed-workdir); also
    /// `DEFAULT_WORKING_DIR`. Without it such jobs run in their own job directory.
    #[arg(long, env = "JOBPACK_DEFAULT_WORKING_DIR")]
    pub default_working_dir: Option<PathBuf>,
    /// The time limit, in seconds, of `/api/v1` command jobs that ask for none; also
    /// `COMMAND_TIMEOUT_SECONDS`. Default: the server's default timeout.
    #[arg(long, env = "JOBPACK_COMMAND_TIMEOUT")]
    pub command_timeout: Option<f64>,
    /// A named queue and how many of its jobs run at once: NAME=CONCURRENCY (repeatable or
    /// comma-separated). A job names one with `"queue"`; jobs without wait in `default`, whose
    /// concurrency is --max-concurrent. Every job also needs one of the --max-concurrent slots.
    #[arg(long = "queue", env = "JOBPACK_QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Run jobs in this process (`true`, the default), or only accept them and leave running
    /// to `jobpack worker` processes on the same data directory (`false`, or `INLINE_WORKER=0`).
    #[arg(
        long,
        env = "JOBPACK_INLINE_WORKER",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub inline_worker: bool,
    /// Serve the gRPC door (seed 004's `joblet.JobletService`) on this address too: TLS 1.3
    /// with client certificates, so it needs --tls-cert, --tls-key and --tls-client-ca.
    #[arg(long, env = "JOBPACK_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// Serve the metrics (`/metrics`, without authentication) on this address too, for a
    /// scraper on a private network; `/metrics` on the main address stays admins-only.
    #[arg(long, env = "JOBPACK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The largest gRPC message the server receives, in bytes (the seed's 512 KB).
    #[arg(long, env = "JOBPACK_GRPC_MAX_RECV_BYTES", default_value_t = 512 * 1024)]
    pub grpc_max_recv_bytes: usize,
    /// The largest gRPC message the server sends, in bytes (the seed's 4 MB).
    #[arg(long, env = "JOBPACK_GRPC_MAX_SEND_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub grpc_max_send_bytes: usize,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Let webhooks go to these destinations, which are refused by default (loopback, private,
    /// link-local, ...): a CIDR (`10.0.0.0/8`, `127.0.0.1/32`) or a host name. Repeatable.
    #[arg(
        long = "allow-webhooks-to",
        env = "JOBPACK_ALLOW_WEBHOOKS_TO",
        value_delimiter = ','
    )]
    pub allow_webhooks_to: Vec<String>,
    /// One webhook delivery attempt's time limit.
    #[arg(long, env = "JOBPACK_WEBHOOK_TIMEOUT", value_parser = humantime::parse_duration,
          default_value = "10s")]
    pub webhook_timeout: std::time::Duration,
    /// How long a failing delivery is retried (timeouts, connection errors, 5xx, 429).
    #[arg(long, env = "JOBPACK_WEBHOOK_RETRY_FOR", value_parser = humantime::parse_duration,
          default_value = "24h")]
    pub webhook_retry_for: std::time::Duration,
    /// The first retry's delay; each next one doubles (with jitter), up to an hour.
    #[arg(long, env = "JOBPACK_WEBHOOK_BACKOFF", value_parser = humantime::parse_duration,
          default_value = "1s")]
    pub webhook_backoff: std::time::Duration,
    /// How often the collector runs when --retain or --max-data-gb is set.
    #[arg(long, env = "JOBPACK_GC_INTERVAL", value_parser = humantime::parse_duration,
          default_value = "10m")]
    pub gc_interval: std::time::Duration,
}

/// What retention keeps (`jobpack serve`, and `jobpack admin gc`).
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Remove ended jobs' files (working directory, log, artifact) once they are this old
    /// (`7d`, `12h`); their records stay. Pinned jobs are kept.
    #[arg(long, env = "JOBPACK_RETAIN", value_parser = humantime::parse_duration)]
    pub retain: Option<std::time::Duration>,
    /// Keep the data directory under this many GB (10^9 bytes; fractions allowed), removing the
    /// longest-ended jobs' files first.
    #[arg(long, env = "JOBPACK_MAX_DATA_GB", value_parser = parse_gb)]
    pub max_data_gb: Option<f64>,
}

impl RetentionArgs {
    pub fn policy(&self) -> crate::server::service::retention::Retention {
        crate::server::service::retention::Retention {
            retain: self.retain,
            max_data_bytes: self.max_data_gb.map(|g| (g * 1e9) as u64),
        }
    }
}

fn parse_gb(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(g) if g.is_finite() && g > 0.0 && g <= 1e9 => Ok(g),
        _ => Err(format!("expected a number of GB above 0, got {s:?}")),
    }
}

/// The variable names of the services jobpack replaces, read as jobpack's own when those are not
/// set: their users' environments keep working.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("JOB_DATA_DIR", "JOBPACK_DATA_DIR"),
    ("ALLOWED_WORKDIRS", "JOBPACK_ALLOWED_WORKDIRS"),
    ("DEFAULT_WORKING_DIR", "JOBPACK_DEFAULT_WORKING_DIR"),
    ("COMMAND_TIMEOUT_SECONDS", "JOBPACK_COMMAND_TIMEOUT"),
    ("INLINE_WORKER", "JOBPACK_INLINE_WORKER"),
];

/// Copies the seeds' variables (`JOB_DATA_DIR`, `ALLOWED_WORKDIRS`, ...) to jobpack's names
/// where those are not set. Call before any thread starts.
pub fn apply_env_aliases() {
    for (theirs, ours) in ENV_ALIASES {
        if std::env::var_os(ours).is_none()
            && let Some(v) = std::env::var_os(theirs)
        {
            // SAFETY: called from main before any other thread exists.
            unsafe { std::env::set_var(ours, v) };
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    Local,
    Slurm,
}

/// How the server's log is written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (the fields flattened: `request_id`, `job_id`, ...).
    Json,
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
    runtimes: Option<PathBuf>,
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
    ready_min_free_mb: Option<u64>,
    usage_interval_ms: Option<u64>,
    usage_max_samples: Option<u64>,
    log_format: Option<String>,
    otlp_endpoint: Option<String>,
    metrics_listen: Option<String>,
    allow_fetch_from: Option<Vec<String>>,
    max_connections: Option<u64>,
    max_uploads: Option<u64>,
    header_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    allowed_workdirs: Option<Vec<PathBuf>>,
    default_working_dir: Option<PathBuf>,
    command_timeout: Option<f64>,
    /// `{gpu = 1, batch = 8}`
    queues: Option<toml::Table>,
    /// `"7d"`
    retain: Option<String>,
    max_data_gb: Option<f64>,
    /// `"10m"`
    gc_interval: Option<String>,
    allow_webhooks_to: Option<Vec<String>>,
    webhook_timeout: Option<String>,
    webhook_retry_for: Option<String>,
    webhook_backoff: Option<String>,
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
    if !matches!(args.get(1).map(String::as_str), Some("serve" | "worker")) {
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
    let pairs: [(&str, Option<String>); 45] = [
        (
            "JOBPACK_ALLOW_WEBHOOKS_TO",
            c.allow_webhooks_to.map(|v| v.join(",")),
        ),
        ("JOBPACK_WEBHOOK_TIMEOUT", c.webhook_timeout),
        ("JOBPACK_WEBHOOK_RETRY_FOR", c.webhook_retry_for),
        ("JOBPACK_WEBHOOK_BACKOFF", c.webhook_backoff),
        ("JOBPACK_RETAIN", c.retain),
        ("JOBPACK_MAX_DATA_GB", c.max_data_gb.map(|v| v.to_string())),
        ("JOBPACK_GC_INTERVAL", c.gc_interval),
        (
            "JOBPACK_ALLOWED_WORKDIRS",
            c.allowed_workdirs.map(|v| {
                v.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        ),
        (
            "JOBPACK_DEFAULT_WORKING_DIR",
            path_str(c.default_working_dir),
        ),
        (
            "JOBPACK_COMMAND_TIMEOUT",
            c.command_timeout.map(|v| v.to_string()),
        ),
        ("JOBPACK_QUEUES", limit_pairs(c.queues)),
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
            "JOBPACK_READY_MIN_FREE_MB",
            c.ready_min_free_mb.map(|v| v.to_string()),
        ),
        (
            "JOBPACK_USAGE_INTERVAL_MS",
            c.usage_interval_ms.map(|v| v.to_string()),
        ),
        (
            "JOBPACK_USAGE_MAX_SAMPLES",
            c.usage_max_samples.map(|v| v.to_string()),
        ),
        ("JOBPACK_LOG_FORMAT", c.log_format),
        ("JOBPACK_OTLP_ENDPOINT", c.otlp_endpoint),
        ("JOBPACK_METRICS_LISTEN", c.metrics_listen),
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
            "JOBPACK_RUNTIMES",
            c.runtimes.map(|d| d.display().to_string()),
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

/// `--queue NAME=CONCURRENCY,...`: each name a queue's, at least one slot, `default` not among
/// them (its concurrency is --max-concurrent).
pub(crate) fn parse_queues(
    items: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let mut out = std::collections::BTreeMap::new();
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        let (name, n) = item
            .split_once('=')
            .with_context(|| format!("--queue {item:?}: expected NAME=CONCURRENCY"))?;
        let name = name.trim();
        super::store::accounts::check_name(name, "queue name")
            .map_err(|e| anyhow::anyhow!("--queue {item:?}: {e}"))?;
        if name == super::service::submit::DEFAULT_QUEUE {
            anyhow::bail!("--queue {item:?}: the default queue's concurrency is --max-concurrent");
        }
        let n: usize = n.trim().parse().ok().filter(|n| *n >= 1).with_context(|| {
            format!("--queue {item:?}: CONCURRENCY must be a whole number >= 1")
        })?;
        if out.insert(name.to_owned(), n).is_some() {
            anyhow::bail!("--queue {name}: given twice");
        }
    }
    Ok(out)
}
