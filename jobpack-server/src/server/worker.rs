//! `jobpack worker`: a process that runs the jobs a `jobpack serve --inline-worker false`
//! (`INLINE_WORKER=0`) accepts, on the same data directory. Several may run. Each beats every
//! second; while it has a free slot it claims the next queued job (highest priority first; one
//! statement, so no two workers claim the same job); it acts on the cancels asked for over
//! HTTP; and it recovers the jobs of a worker that stopped beating: those not yet running go back
//! to the queue, a running one is killed (its cgroup) and marked `failed` ("worker lost"), so a
//! job never runs twice at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::server::config::ServeArgs;
use crate::server::scheduler::queue::Runner;
use crate::server::store::{Finish, JobStatus};

/// A worker that has not beaten for this long is lost.
const LOST_AFTER_SECS: f64 = 15.0;
const BEAT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(100);

pub fn run(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    crate::server::limit_arenas();
    let spawner = crate::server::start_spawner(&args);
    crate::server::logging::init(args.log_format, args.otlp_endpoint.as_deref())?;
    crate::server::report_spawner(spawner);
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let worked = rt.block_on(work(args));
    crate::server::logging::shutdown();
    worked?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn work(args: ServeArgs) -> anyhow::Result<()> {
    let id = format!("worker-{}", uuid::Uuid::new_v4().simple());
    let app = super::build_as(&args, Some(&id)).await?;
    let runner = app.runner;
    let store = runner.store.clone();
    store
        .worker_beat(&id, std::process::id())
        .context("cannot register the worker")?;
    println!(
        "jobpack worker {id} running jobs of {}",
        args.data_dir.display()
    );
    let beat = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(BEAT).await;
                if let Err(e) = store.worker_beat(&id, std::process::id()) {
                    tracing::warn!(worker_id = %id, "cannot beat: {e}");
                }
            }
        })
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    let mut last_recovery = tokio::time::Instant::now() - Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        if last_recovery.elapsed() >= BEAT {
            last_recovery = tokio::time::Instant::now();
            if let Err(e) = recover_lost(&runner, &id, &args).await {
                tracing::warn!(worker_id = %id, "recovering lost workers' jobs: {e:#}");
            }
        }
        match store.cancels_for(&id) {
            Ok(ids) => {
                for j in ids {
                    runner.cancel(&j);
                }
            }
            Err(e) => tracing::warn!(worker_id = %id, "reading cancels: {e}"),
        }
        while runner.task_count() < args.max_concurrent.max(1) {
            match store.claim_next(&id) {
                Ok(Some(job)) => runner.run_claimed(job),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(worker_id = %id, "claiming a job: {e}");
                    break;
                }
            }
        }
    }
    // Jobs still held go back to the queue unless they run (those are stopped).
    runner
        .shutdown(Duration::from_secs_f64(args.grace.max(0.0) + 5.0))
        .await;
    for j in store.jobs_of_worker(&id).unwrap_or_default() {
        if j.status != JobStatus::Running
            && let Err(e) = store.release_job(&j.id)
        {
            tracing::warn!(worker_id = %id, "cannot give job {} back: {e}", j.id);
        }
    }
    beat.abort();
    store
        .worker_gone(&id)
        .context("cannot unregister the worker")?;
    Ok(())
}

/// The jobs of workers that stopped beating: back to the queue if they had not started, killed
/// and failed if they were running.
async fn recover_lost(runner: &Arc<Runner>, me: &str, args: &ServeArgs) -> anyhow::Result<()> {
    let store = &runner.store;
    for w in store.stale_workers(LOST_AFTER_SECS)? {
        if w == me {
            continue;
        }
        for j in store.jobs_of_worker(&w)? {
            if j.status == JobStatus::Running {
                // Whatever it left running (its cgroup) is killed before the job is marked.
                if let Err(e) = runner.executor.reap(&j.id) {
                    tracing::warn!(job_id = %j.id, "cannot clean up after lost {w}: {e}");
                }
                store.finish(
                    &j.id,
                    &Finish::early(JobStatus::Failed, "worker lost", Some("worker_lost")),
                )?;
                if let Some(wf) = &j.workflow_id {
                    runner.advance(wf);
                }
            } else {
                store.release_job(&j.id)?;
            }
            tracing::info!(job_id = %j.id, "recovered from lost {w}");
        }
        let staging = args.data_dir.join("work").join(&w);
        if let Err(e) = std::fs::remove_dir_all(&staging)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", staging.display());
        }
        store.worker_gone(&w)?;
    }
    Ok(())
}
