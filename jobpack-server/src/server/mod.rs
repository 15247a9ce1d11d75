//! `jobpack serve`: the HTTP service, in floors; each imports only the floors below it.
//!
//! - [`store`], the ground floor: SQLite rows of jobs, batches, workflows, users, tokens, quotas,
//!   the audit log; typed rows and a typed `StoreError`; nothing else of the server.
//! - [`scheduler`]: the runner (slots, one job's way through pack -> unpack -> run, every state
//!   change recorded) and workflow advancement, on the store and `jobpack-core`.
//! - [`service`]: the rules every door shares: callers and the permission table, default and
//!   maximum limits, the one submission flow, and `ServiceError`.
//! - [`http`]: the poem-openapi front door (`/v1`), the dashboard and the raw-path downloads; one
//!   `From<ServiceError>` to HTTP statuses.
//! - here: `config` (flags and the config file), `conn` and `tls` (below HTTP), and
//!   [`build`]/[`serve`], which put the floors together.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{EndpointExt, Route};
use poem_openapi::OpenApiService;

mod bootstrap;
mod config;
mod conn;
pub mod grpc;
pub mod http;
mod listen;
pub mod logging;
pub mod metrics;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod tls;
pub mod worker;

use http::documents::{Document, Documents, Made, Methods, Which};
use http::{edge, pages, schema};
use scheduler::queue;
use scheduler::usage::UsageOptions;
use service::{auth, limits};

use jobpack_core::exec::{
    Executor, IsolationMode, LocalExecutor, LocalExecutorConfig, SlurmConfig, SlurmExecutor,
};
use jobpack_core::{Packager, PackagerConfig};

pub use config::{ExecutorKind, RetentionArgs, ServeArgs, apply_config_file, apply_env_aliases};
pub fn run(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    limit_arenas();
    let spawner = start_spawner(&args);
    logging::init(args.log_format, args.otlp_endpoint.as_deref())?;
    report_spawner(spawner);
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let served = rt.block_on(serve(args));
    logging::shutdown();
    served?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Forks the sandbox's spawner for a server that runs jobs here, while this process has one
/// thread: each job's pid 1 is cloned from that small process instead of from the server (see
/// `jobpack_core::exec::start_spawner`). Its error, if any, is logged once logging is up.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
pub(crate) fn start_spawner(args: &ServeArgs) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    if matches!(args.executor, config::ExecutorKind::Local) {
        return jobpack_core::exec::start_spawner().map_err(|e| e.to_string());
    }
    Ok(())
}

/// Logs a spawner that could not be started (jobs still run: pid 1 is cloned from the server).
pub(crate) fn report_spawner(started: Result<(), String>) {
    if let Err(e) = started {
        tracing::warn!(error = %e, "no sandbox spawner; each job's pid 1 is cloned from the server");
    }
}

/// Two malloc arenas instead of glibc's eight per core: the runtime's many short-lived blocking
/// threads otherwise each grow an arena of their own, and the server's memory with them.
pub(crate) fn limit_arenas() {
    // glibc's own MALLOC_ARENA_MAX, when given, wins.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before any other thread exists; mallopt only sets a tunable.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// The service, built and ready to serve: every route with its middleware, over a runner that has
/// resumed the previous run's jobs. `serve` puts it behind a listener; a test can call the
/// endpoint in-process.
pub struct App {
    pub endpoint: poem::endpoint::BoxEndpoint<'static>,
    pub runner: Arc<queue::Runner>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The gRPC door, with its TLS configuration, when --grpc-listen is given.
    grpc: Option<(grpc::Services, Arc<rustls::ServerConfig>)>,
    /// Where webhooks may go and how they are retried (for the delivery task).
    webhooks: service::webhooks::WebhookSettings,
}

/// Builds the service from its options: data directory, store, packager, executor, runner (its
/// jobs resumed), the OpenAPI service and every other route.
pub async fn build(args: &ServeArgs) -> anyhow::Result<App> {
    build_as(args, None).await
}

/// [`build`] for `jobpack serve` (`worker: None`) or for the worker process `worker` (it packs
/// in a staging directory of its own and recovers nothing at start: the claim loop does).
pub(crate) async fn build_as(args: &ServeArgs, worker: Option<&str>) -> anyhow::Result<App> {
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
    // Staging directories of packs a previous process did not finish are all stale now (a
    // worker's own are under work/<worker id>; the claim loop removes those of lost workers).
    let staging = match worker {
        Some(w) => data.join("work").join(w),
        None => data.join("work"),
    };
    std::fs::create_dir_all(&staging)?;
    if worker.is_none() && args.inline_worker {
        for e in std::fs::read_dir(&staging)?.flatten() {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                eprintln!(
                    "jobpack: cannot remove the stale staging directory {}: {err}",
                    e.path().display()
                );
            }
        }
    }
    let store = store::Store::open(&data.join("jobpack.db"))
        .with_context(|| format!("cannot open the database in {}", data.display()))?;
    let destinations = Arc::new(
        jobpack_core::egress::Destinations::public(&args.allow_fetch_from)
            .map_err(|e| anyhow::anyhow!("--allow-fetch-from: {e}"))?,
    );
    let packager = Packager::new(PackagerConfig {
        work_dir: staging.clone(),
        out_dir: data.join("jobs"),
        cache_dir: Some(data.join("cache")),
        allow_file_urls: args.allow_file_urls,
        runtimes: Some(
            args.runtimes
                .clone()
                .unwrap_or_else(|| data.join("runtimes")),
        ),
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
    let queues = config::parse_queues(&args.queues)?;
    if args.auth == auth::AuthMode::None && !args.listen.ip().is_loopback() && !args.insecure_public
    {
        anyhow::bail!(
            "--auth none lets anyone who reaches {} run code; listen on a loopback address, use \
             tokens, or add --insecure-public",
            args.listen
        );
    }
    if args.auth == auth::AuthMode::Token {
        bootstrap::bootstrap_admin(&store)?;
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
            queues: queues.clone(),
            inline: args.inline_worker && worker.is_none(),
            grace: Duration::from_secs_f64(args.grace),
            usage: UsageOptions {
                interval: (args.usage_interval_ms > 0)
                    .then(|| Duration::from_millis(args.usage_interval_ms.max(100))),
                max_samples: args.usage_max_samples,
            },
            signing_key: Arc::new(
                jobpack_core::attest::Key::load_or_create(&data.join("signing-key.pem"))
                    .context("cannot load or make the server's signing key")?,
            ),
        },
    );
    if args.inline_worker && worker.is_none() {
        runner
            .recover()
            .await
            .context("cannot resume the jobs of the previous run")?;
    }

    let svc = Arc::new(service::Service {
        runner: runner.clone(),
        limits: server_limits,
        max_queued: args.max_queued,
        allow_file_urls: args.allow_file_urls,
        workdirs: service::workdirs::Workdirs::new(
            &args.allowed_workdirs,
            args.default_working_dir.clone(),
        )?,
        queues,
        command_timeout: match args.command_timeout {
            Some(t) if !(t.is_finite() && t > 0.0) => {
                anyhow::bail!("--command-timeout must be a positive number of seconds")
            }
            t => t,
        },
        sign_in: service::sign_in::SignInLimiter::default(),
        webhooks: service::webhooks::WebhookSettings {
            destinations: Arc::new(
                jobpack_core::egress::Destinations::public(&args.allow_webhooks_to)
                    .map_err(|e| anyhow::anyhow!("--allow-webhooks-to: {e}"))?,
            ),
            timeout: args.webhook_timeout.max(Duration::from_millis(100)),
            retry_for: args.webhook_retry_for,
            backoff: args.webhook_backoff.max(Duration::from_millis(10)),
        },
        ready_min_free_bytes: args.ready_min_free_mb.saturating_mul(1 << 20),
    });
    let grpc = match args.grpc_listen {
        None => None,
        Some(_) => {
            let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
                anyhow::bail!("--grpc-listen needs --tls-cert, --tls-key and --tls-client-ca");
            };
            let cfg = tls::grpc_server_config(&tls::TlsOptions {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
                require_client_cert: true,
            })?;
            let limits = grpc::Limits {
                max_recv_bytes: args.grpc_max_recv_bytes,
                max_send_bytes: args.grpc_max_send_bytes,
            };
            Some((
                grpc::service(svc.clone(), authenticator.clone(), &limits),
                cfg,
            ))
        }
    };
    // The main API's operations; made for its routes, and again for its document and the docs
    // page when they are first asked for (http::documents, http::docs).
    let new_api = {
        let (svc, store) = (svc.clone(), runner.store.clone());
        move || {
            OpenApiService::new(
                (
                    http::jobs::JobsApi { svc: svc.clone() },
                    http::accounts::AccountsApi {
                        store: store.clone(),
                    },
                    http::batches::BatchesApi { svc: svc.clone() },
                    http::workflows::WorkflowsApi { svc: svc.clone() },
                    http::webhooks::WebhooksApi { svc: svc.clone() },
                    http::attempts::AttemptsApi { svc: svc.clone() },
                    http::attest::AttestApi { svc: svc.clone() },
                    http::runtimes::RuntimesApi { svc: svc.clone() },
                    http::usage::UsageApi { svc: svc.clone() },
                    http::activity::ActivityApi { svc: svc.clone() },
                ),
                "jobpack",
                env!("CARGO_PKG_VERSION"),
            )
            .server("/v1")
        }
    };
    let (jobd_api, jobrunner_api) = {
        let (a, b) = (svc.clone(), svc.clone());
        (move || jobd_door(&a), move || jobrunner_door(&b))
    };
    let max_body = (args.max_body_mb as u64).saturating_mul(1 << 20);
    let uploads = Arc::new(tokio::sync::Semaphore::new(args.max_uploads.max(1)));
    // The documents and the method table are made at their first use (http::documents).
    let documents = {
        let (new_api, jobd_api, jobrunner_api) =
            (new_api.clone(), jobd_api.clone(), jobrunner_api.clone());
        Arc::new(Documents::new(move || {
            let api_doc = parsed(&new_api().spec())?;
            let jobd_doc = parsed(&jobd_api().spec())?;
            let jobrunner_doc = parsed(&jobrunner_api().spec())?;
            let mut methods = Methods::new(&api_doc, "/v1", OUTSIDE_THE_DOCUMENTS);
            methods.add(&jobd_doc, "");
            methods.add(&jobrunner_doc, "");
            let documents = [
                document(api_doc)?,
                document(jobd_doc)?,
                document(jobrunner_doc)?,
            ];
            Ok(Made::new(methods, documents))
        }))
    };
    let served = |which| Document {
        documents: documents.clone(),
        which,
    };
    let (spec, jobd_spec, jobrunner_spec) = (
        served(Which::Api),
        served(Which::Jobd),
        served(Which::JobRunner),
    );
    let (api, jobd, jobrunner) = (new_api(), jobd_api(), jobrunner_api());
    let docs = http::docs::swagger_ui(new_api);
    let app = Route::new()
        .at("/v1/jobs/:id/files/*path", poem::get(pages::file_wildcard))
        .nest("/v1", api)
        .nest_no_strip("/jobs", jobd)
        .nest_no_strip("/api/v1", jobrunner)
        .at("/openapi.json", spec)
        .at("/openapi/jobd.json", jobd_spec)
        .at("/openapi/jobrunner.json", jobrunner_spec)
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
        .at("/metrics", poem::get(pages::metrics))
        .at("/", poem::get(pages::ui))
        .at("/ui/app.js", poem::get(pages::ui))
        .at("/ui/app.css", poem::get(pages::ui))
        .at("/ui/charts.js", poem::get(pages::ui))
        .at("/ui/form.js", poem::get(pages::ui))
        .data(runner.clone())
        .around(move |ep, req| http::auth::authenticate(ep, req, authenticator.clone()))
        .around(move |ep, req| edge::edge(ep, req, max_body, uploads.clone(), documents.clone()))
        .around(http::trace::log_request)
        .boxed();
    Ok(App {
        endpoint: app,
        runner,
        tls,
        grpc,
        webhooks: svc.webhooks.clone(),
    })
}

/// The routes outside the OpenAPI documents, with their methods (for a 405's `Allow`).
const OUTSIDE_THE_DOCUMENTS: &[(&str, &str)] = &[
    ("/v1/jobs/{id}/files/*", "GET"),
    ("/openapi.json", "GET"),
    ("/openapi/jobd.json", "GET"),
    ("/openapi/jobrunner.json", "GET"),
    ("/metrics", "GET"),
    ("/", "GET"),
    ("/ui/app.js", "GET"),
    ("/ui/app.css", "GET"),
    ("/ui/charts.js", "GET"),
    ("/ui/form.js", "GET"),
];

/// The jobd and job runner door (`/jobs`).
fn jobd_door(svc: &Arc<service::Service>) -> OpenApiService<http::jobd::JobdApi, ()> {
    OpenApiService::new(
        http::jobd::JobdApi { svc: svc.clone() },
        "jobpack: the jobd and job runner door (/jobs)",
        env!("CARGO_PKG_VERSION"),
    )
}

/// The JobRunner door (`/api/v1`).
fn jobrunner_door(
    svc: &Arc<service::Service>,
) -> OpenApiService<http::jobrunner::JobRunnerApi, ()> {
    OpenApiService::new(
        http::jobrunner::JobRunnerApi { svc: svc.clone() },
        "jobpack: the JobRunner door (/api/v1)",
        env!("CARGO_PKG_VERSION"),
    )
}

/// An OpenAPI document as served: request objects closed (see `schema::close_request_objects`).
fn document(doc: serde_json::Value) -> anyhow::Result<String> {
    let doc = schema::close_request_objects(doc);
    serde_json::to_string_pretty(&doc).context("the OpenAPI document")
}

/// An OpenAPI document as poem-openapi writes it, parsed once for the method table and for
/// [`document`].
fn parsed(spec: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(spec).context("the OpenAPI document is not JSON")
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let App {
        endpoint: app,
        runner,
        tls,
        grpc,
        webhooks,
    } = build(&args).await?;
    let (acceptor, scheme) = match tls {
        Some(cfg) => (
            listen::Door::Tls(
                tls::TlsAcceptor::bind(args.listen, cfg)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.listen))?,
            ),
            "https",
        ),
        None => (
            listen::Door::Plain(
                TcpListener::bind(args.listen)
                    .into_acceptor()
                    .await
                    .with_context(|| format!("cannot listen on {}", args.listen))?,
            ),
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
    // What start-up freed (the OpenAPI documents, parsed and re-serialised while the routes are
    // made) goes back to the system before the first request, not at the first idle moment
    // after a job: about 2.5 MB an idle server would otherwise keep.
    queue::give_back_memory();
    // The first line on stdout, for scripts and tests that started us on port 0.
    println!("jobpack listening on {scheme}://{addr}");
    let policy = args.retention.policy();
    let _collector = policy
        .is_set()
        .then(|| service::retention::spawn_periodic(runner.clone(), policy, args.gc_interval))
        .map(AbortOnDrop);
    let _trim = AbortOnDrop(runner.spawn_memory_trim(std::time::Duration::from_secs(2)));
    // Webhook deliveries, from the store's outbox, whichever process ran the jobs.
    let renderers = service::webhooks::Renderers {
        job: Box::new(http::jobs::job_json),
        batch: Box::new(http::batches::batch_json),
        workflow: Box::new(http::workflows::workflow_json),
    };
    let _deliveries = AbortOnDrop(service::webhooks::spawn(
        runner.store.clone(),
        webhooks,
        renderers,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc_task = match (grpc, args.grpc_listen) {
        (Some((service, cfg)), Some(at)) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (--grpc-listen)"))?;
            let local = listener.local_addr()?;
            // The second line on stdout: where the gRPC door is (port 0: any free port). Not
            // println!: a reader that closed our stdout must not stop the server.
            {
                use std::io::Write;
                let mut out = std::io::stdout();
                if writeln!(out, "jobpack gRPC listening on {local}")
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    eprintln!("jobpack: gRPC listening on {local}");
                }
            }
            let mut rx = stop_rx.clone();
            let stop = async move {
                rx.wait_for(|s| *s).await.ok();
            };
            Some(tokio::spawn(grpc::serve(listener, cfg, service, stop)))
        }
        _ => None,
    };
    let metrics_task = match args.metrics_listen {
        Some(at) => Some(http::pages::serve_metrics(at, runner.clone(), stop_rx.clone()).await?),
        None => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    listen::serve(
        acceptor,
        app,
        listen::Options {
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            grace: Duration::from_secs(5),
        },
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        },
    )
    .await
    .context("the server failed")?;
    if stop_tx.send(true).is_err() {
        // No gRPC door or metrics port listens.
    }
    if let Some(t) = metrics_task
        && let Ok(Err(e)) = t.await
    {
        eprintln!("jobpack: the metrics port: {e}");
    }
    if let Some(t) = grpc_task {
        match t.await {
            Ok(Err(e)) => eprintln!("jobpack: {e:#}"),
            Err(e) => eprintln!("jobpack: the gRPC door stopped: {e}"),
            Ok(Ok(())) => {}
        }
    }
    runner
        .shutdown(Duration::from_secs_f64(args.grace) + Duration::from_secs(10))
        .await;
    Ok(())
}

/// Stops a background task when dropped (at the server's end).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
