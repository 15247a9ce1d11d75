//! Uploaded code and data (`POST /v1/jobs` as multipart): each part copied from poem's spool
//! file into the job's `upload/` directory (never whole in memory), an archive unpacked with the
//! upload rules and bounded by the job's disk quota; a refused upload leaves nothing behind.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use poem_openapi::Multipart;
use poem_openapi::types::multipart::Upload;

use crate::server::http::problem::{ApiError, ApiResult, internal, problem};
use crate::server::scheduler::queue::{Runner, Submission};

/// Uploads: `spec` (JSON), and `code_files`/`input_files` or one `archive`, and `stdin`.
#[derive(Debug, Multipart)]
#[oai(deny_unknown_fields)]
pub struct UploadJob {
    /// The job spec as JSON (the same fields as the JSON body; no git_url with uploaded code).
    pub spec: String,
    /// Files placed in `code/` (by their file names).
    code_files: Vec<Upload>,
    /// Files placed in `data/` (by their file names).
    input_files: Vec<Upload>,
    /// One `.tar`, `.tar.gz` or `.zip` holding the code (placed in `code/`).
    archive: Option<Upload>,
    /// The command's standard input (any bytes; instead of the spec's `stdin` text).
    stdin: Option<Upload>,
}

impl UploadJob {
    /// Uploads gathered by another door (its parts named its own way), without a spec part.
    pub(crate) fn new(
        code_files: Vec<Upload>,
        input_files: Vec<Upload>,
        archive: Option<Upload>,
    ) -> Self {
        UploadJob {
            spec: String::new(),
            code_files,
            input_files,
            archive,
            stdin: None,
        }
    }
}

fn safe_upload_name(name: Option<&str>) -> Result<String, String> {
    let name = name.ok_or("an uploaded file has no file name")?;
    let n = jobpack_core::spec::normalise_rel_path(name)?;
    if n.contains('/') {
        return Err(format!("uploaded file names may not contain '/': {name:?}"));
    }
    Ok(n)
}

pub(crate) async fn store_uploads(
    runner: &Runner,
    id: &str,
    sub: &Submission,
    up: UploadJob,
) -> ApiResult<()> {
    let bad = |m: String| ApiError::BadRequest(problem(400, "bad_upload", m));
    let has_code = !up.code_files.is_empty() || up.archive.is_some();
    if has_code && sub.spec.git_url.is_some() {
        return Err(bad(
            "give either git_url or uploaded code (code_files/archive), not both".into(),
        ));
    }
    if !up.code_files.is_empty() && up.archive.is_some() {
        return Err(bad("give either code_files or one archive, not both".into()));
    }
    if up.stdin.is_some() && sub.stdin.is_some() {
        return Err(bad(
            "give stdin either as text in the spec or as the part `stdin`, not both".into(),
        ));
    }
    let base = runner.job_dir(id).join("upload");
    // What one submission may unpack: the job's disk quota (its working directory will hold
    // the same files).
    let max_bytes = sub.limits.disk_bytes.unwrap_or(u64::MAX);
    let result = async {
        let mut total = 0u64;
        let stdin = up.stdin.map(|f| {
            let name = jobpack_core::manifest::STDIN_NAME.to_owned();
            ("stdin", vec![f], None::<&str>, Some(name))
        });
        let parts = [
            ("code_files", up.code_files, Some("code"), None),
            ("input_files", up.input_files, Some("data"), None),
        ];
        for (field, files, sub, fixed_name) in parts.into_iter().chain(stdin) {
            if files.is_empty() {
                continue;
            }
            let dir = match sub {
                Some(s) => base.join(s),
                None => base.clone(),
            };
            tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
            for f in files {
                let name = match &fixed_name {
                    Some(n) => n.clone(),
                    None => {
                        safe_upload_name(f.file_name()).map_err(|m| bad(format!("{field}: {m}")))?
                    }
                };
                let p = dir.join(&name);
                total = total.saturating_add(f.size() as u64);
                if total > max_bytes {
                    return Err(bad(format!(
                        "{field}: the uploads hold more than the job's disk quota \
                         (limits.disk_bytes = {max_bytes})"
                    )));
                }
                // Streamed from poem's spool file: never whole in memory.
                let mut out = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .await
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => {
                            bad(format!("{field}: {name:?} uploaded twice"))
                        }
                        _ => internal(e),
                    })?;
                let mut src = f.into_async_read();
                tokio::io::copy(&mut src, &mut out)
                    .await
                    .map_err(internal)?;
                out.sync_all().await.map_err(internal)?;
            }
        }
        if let Some(a) = up.archive {
            let name = a.file_name().unwrap_or("archive").to_owned();
            let dir = base.join("code");
            tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
            // poem keeps the part in an unnamed spool file; unpack straight from it.
            let raw = a.into_file().into_std().await;
            let dir2 = dir.clone();
            let r = tokio::task::spawn_blocking(move || {
                let path = PathBuf::from(format!("/proc/self/fd/{}", raw.as_raw_fd()));
                let r = jobpack_core::archive::unpack_upload(&path, &name, &dir2, max_bytes);
                drop(raw);
                r
            })
            .await
            .map_err(internal)?;
            r.map_err(|e| match e {
                jobpack_core::UnpackError::Io { ref source, .. }
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                    ) =>
                {
                    internal(e)
                }
                e => bad(format!("archive: {e}")),
            })?;
        }
        Ok(())
    }
    .await;
    if result.is_err()
        && let Err(e) = runner.remove_files(id)
    {
        tracing::warn!(job_id = %id, "cannot remove a refused upload: {e}");
    }
    result
}
