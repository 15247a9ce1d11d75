//! What a run leaves besides its status: an ended attempt kept for a retry, the signed receipt
//! of the last run, and the result cache's answer from an earlier identical job.

use crate::server::scheduler::queue::{Runner, Submission};
use crate::server::store::documents::Doc;
use crate::server::store::{Finish, JobStatus};

impl Runner {
    /// The result cache: if an earlier completed job ran the same artifact (so the same code,
    /// data, command and stdin) on the same runtime with the same limits and network, and
    /// neither had secrets, this job gets copies of its outputs, log and receipt and its
    /// outcome, marked `cached_from`. Whether it answered.
    pub(super) async fn answer_from_cache(
        &self,
        id: &str,
        sub: &Submission,
    ) -> anyhow::Result<bool> {
        if !sub.secret_env.is_empty() {
            return Ok(false);
        }
        let Some(me) = self.store.get(id)? else {
            return Ok(false);
        };
        let Some(sha) = &me.artifact_sha256 else {
            return Ok(false);
        };
        let source = self.store.cache_candidates(sha, id)?.into_iter().find(|r| {
            serde_json::from_str::<Submission>(&r.request_json).is_ok_and(|s| {
                s.limits == sub.limits && s.network == sub.network && s.secret_env.is_empty()
            }) && r.cached_from.is_none()
                && self.has_document(&r.id, Doc::Receipt)
        });
        let Some(src) = source else {
            return Ok(false);
        };
        let (from, to) = (self.work_dir(&src.id), self.work_dir(id));
        match std::fs::remove_dir_all(&to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let copied = tokio::task::spawn_blocking(move || {
            jobpack_core::tree::Tree::open(&from).and_then(|t| t.copy_to(&to))
        })
        .await?;
        if let Err(e) = copied {
            // The source went meanwhile (deleted, collected): a miss.
            let to = self.work_dir(id);
            if let Err(rm) = std::fs::remove_dir_all(&to)
                && rm.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(job_id = %id, "cannot remove a half-made cache copy: {rm}");
            }
            tracing::warn!(job_id = %id, "result cache: cannot copy {}: {e}", src.id);
            return Ok(false);
        }
        let log = self.log_path(id);
        for (from, to) in [
            (self.log_path(&src.id), log.clone()),
            (
                jobpack_core::exec::logs::streams::index_path(&self.log_path(&src.id)),
                jobpack_core::exec::logs::streams::index_path(&log),
            ),
        ] {
            match std::fs::copy(&from, &to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        let receipt = match self.document(&src.id, Doc::Receipt) {
            Ok(r) => Some(r),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        self.store.set_cached_from(id, &src.id)?;
        let reason = format!("answered from job {}'s results (cache)", src.id);
        let end = Finish {
            status: JobStatus::Completed,
            exit_code: src.exit_code,
            signal: src.signal,
            reason: Some(&reason),
            error_code: None,
            outcome_json: src.outcome_json.as_deref(),
            cpu_seconds: src.cpu_seconds,
            receipt: receipt.as_deref(),
        };
        self.record(id, JobStatus::Completed.as_str(), || {
            self.store.finish(id, &end)
        })
        .await;
        Ok(true)
    }

    /// Signs the receipt of a job's last run (the artifact's, log's and outputs' digests, how it
    /// ran and how it ended): the DSSE envelope's JSON, for [`Finish::receipt`].
    pub(super) async fn receipt(
        &self,
        id: &str,
        sub: &Submission,
        outcome_json: Option<&str>,
    ) -> anyhow::Result<Vec<u8>> {
        use jobpack_core::attest::{
            Envelope, OutputBudget, RunRecord, file_sha256, outputs, receipt,
        };
        let row = self
            .store
            .get(id)?
            .ok_or_else(|| anyhow::anyhow!("the job is gone"))?;
        let artifact = row.artifact_sha256.clone().unwrap_or_default();
        let (log, work) = (self.log_path(id), self.work_dir(id));
        let (log_sha, outputs) = tokio::task::spawn_blocking(move || {
            let log_sha = match file_sha256(&log) {
                Ok(d) => d,
                // No output at all: the empty log's digest.
                Err(_) => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"")),
            };
            (log_sha, outputs(&work, OutputBudget::default()).ok())
        })
        .await?;
        let outcome: serde_json::Value = outcome_json
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default();
        let st = receipt(&RunRecord {
            job_id: id,
            artifact_sha256: &artifact,
            log_sha256: &log_sha,
            outputs: outputs.as_ref(),
            backend: self.executor.backend(),
            runtime: self.root_fs(id).digest_or_host(),
            limits: serde_json::to_value(&sub.limits)?,
            network: serde_json::to_value(sub.network)?,
            outcome,
            started_at: row.started_at.map(crate::server::store::rfc3339),
            finished_at: crate::server::store::rfc3339(crate::server::store::now()),
        });
        let env = Envelope::sign_statement(&self.signing_key, &st);
        Ok(serde_json::to_vec(&env)?)
    }

    /// Keeps ended attempt number `n` of a job that runs again: its outcome in the store, its
    /// log (and the log's stream index) as `attempt-N.log` beside the job's.
    pub(super) fn keep_attempt(
        &self,
        id: &str,
        n: i64,
        outcome: &jobpack_core::exec::Outcome,
        outcome_json: Option<&str>,
    ) -> anyhow::Result<()> {
        // Followers of the log wait for the next attempt's (see `log_chunks`).
        if let Ok(mut live) = self.live.lock()
            && let Some(l) = live.get_mut(id)
        {
            l.log = None;
        }
        let log = self.log_path(id);
        let kept = self.attempt_log_path(id, n);
        for (from, to) in [
            (log.clone(), kept.clone()),
            (
                jobpack_core::exec::logs::streams::index_path(&log),
                jobpack_core::exec::logs::streams::index_path(&kept),
            ),
        ] {
            match std::fs::rename(&from, &to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        let started_at = self.store.get(id)?.and_then(|r| r.started_at);
        self.store
            .add_attempt(&crate::server::store::attempts::AttemptRow {
                job_id: id.to_owned(),
                attempt: n,
                status: JobStatus::from(outcome.status).as_str().to_owned(),
                exit_code: outcome.exit_code,
                signal: outcome.signal,
                reason: outcome.reason.clone(),
                started_at,
                finished_at: crate::server::store::now(),
                outcome_json: outcome_json.map(str::to_owned),
            })?;
        Ok(())
    }
}
