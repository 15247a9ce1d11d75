//! Downloads of a job's working directory: one file, or the whole directory as a `.tar.gz`
//! streamed as it is made. The job may be changing its tree meanwhile; everything is read through
//! [`jobpack_core::tree::Tree`] (directory handles, no link followed), never by a path string.

use poem::Body;
use poem_openapi::ApiResponse;
use poem_openapi::payload::Attachment;

use crate::server::http::problem::{ApiError, ApiResult, internal, problem};
use crate::server::scheduler::queue::Runner;
use crate::server::service::Service;
use crate::server::service::auth::Caller;
use crate::server::service::jobs::files_row;
use crate::server::store::documents::Doc;

#[derive(ApiResponse)]
pub enum Download {
    /// The file.
    #[oai(status = 200)]
    Ok(Attachment<Body>, #[oai(header = "ETag")] Option<String>),
}

/// A file of a job's working directory (shared by the OpenAPI operation and the wildcard route).
///
/// The job may be running and changing its tree while this reads it: the file is opened through
/// [`jobpack_core::tree::Tree`] (relative to a handle of the working directory, no symlink
/// followed anywhere on the way, never a FIFO or device), so whatever the job swaps in, only a
/// regular file inside its own tree is ever served.
pub async fn file_download(
    runner: &Runner,
    caller: &Caller,
    id: &str,
    path: &str,
) -> ApiResult<Download> {
    use jobpack_core::tree::{Tree, TreeError};
    files_row(runner, caller, id)?;
    let work = runner.work_dir(id);
    let rel = path.to_owned();
    let opened = tokio::task::spawn_blocking(move || Tree::open(&work)?.open_file(&rel))
        .await
        .map_err(internal)?;
    let f = match opened {
        Ok(f) => f,
        Err(e @ TreeError::Io { .. }) => return Err(internal(e)),
        Err(e) => {
            return Err(ApiError::NotFound(problem(
                404,
                "not_found",
                format!("job {id} has no file {path:?}: {e}"),
            )));
        }
    };
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    // Exactly the size the open file had: a file that grows while it is sent is cut there.
    let body = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(f.file), f.size);
    Ok(Download::Ok(
        Attachment::new(Body::from_async_read(body)).filename(name),
        None,
    ))
}

/// The working directory as a `.tar.gz`, streamed as it is made (nothing is staged on disk):
/// read through [`jobpack_core::tree::Tree`] like single files, at most
/// `tarball_max_bytes` of file contents, stopped when the client goes away or the server
/// shuts down.
pub(crate) async fn tarball(svc: &Service, caller: &Caller, id: &str) -> ApiResult<Download> {
    let runner = &svc.runner;
    use jobpack_core::tree::Tree;
    let r = files_row(runner, caller, id)?;
    let work = runner.work_dir(id);
    let tree = match tokio::task::spawn_blocking(move || Tree::open(&work))
        .await
        .map_err(internal)?
    {
        Ok(t) => t,
        Err(_) => {
            return Err(ApiError::Conflict(problem(
                409,
                "no_workdir",
                format!("job {} has not run ({})", r.id, r.status),
            )));
        }
    };
    let max = svc.limits.tarball_max_bytes;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let runner = runner.clone();
    tokio::task::spawn_blocking(move || {
        let closed = tx.clone();
        let stop = move || closed.is_closed() || runner.is_closing();
        let mut out = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            first: Some(first_tx),
        };
        let r = jobpack_core::archive::tar_gz_tree(&tree, &mut out, max, &stop);
        match r {
            Ok(_) => {
                if let Err(e) = std::io::Write::flush(&mut out) {
                    out.fail(e.to_string());
                }
            }
            Err(e) => out.fail(e.to_string()),
        }
    });
    // The first chunk (or the error that came before any byte) decides the status.
    if let Ok(Err(message)) = first_rx.await {
        return Err(ApiError::Conflict(problem(409, "cannot_archive", message)));
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    Ok(Download::Ok(
        Attachment::new(Body::from_bytes_stream(stream)).filename(format!("{}-work.tar.gz", r.id)),
        None,
    ))
}

const CHUNK: usize = 256 * 1024;

/// The blocking side of a streamed download: buffers writes into chunks for a bounded channel
/// (so a slow client holds at most 8 chunks in memory) and reports, once, whether the stream
/// started or failed before its first byte.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    first: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(f) = self.first.take() {
            // The receiver may be gone (the request was dropped); the send below then fails.
            f.send(Ok(())).ok();
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }

    /// Ends the stream with an error: a status if nothing was sent yet, else a cut body.
    fn fail(&mut self, message: String) {
        match self.first.take() {
            Some(f) => {
                f.send(Err(message)).ok();
            }
            None => tracing::warn!("a streamed download stopped: {message}"),
        }
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// What [`packed_json`] serves: written when the job was packed.
pub(crate) enum Packed {
    /// Its manifest (a file beside the artifact).
    Manifest,
    /// Its signed provenance (in the store).
    Provenance,
}

/// JSON written when job `id` was packed (its manifest, its provenance), as the job's reader
/// `caller` may see it: 409 until it is packed, 410 once its files are gone.
pub(crate) async fn packed_json(
    runner: &Runner,
    caller: &Caller,
    id: &str,
    what: Packed,
) -> ApiResult<poem_openapi::payload::Json<serde_json::Value>> {
    let r = files_row(runner, caller, id)?;
    if r.artifact_sha256.is_none() {
        return Err(ApiError::Conflict(problem(
            409,
            "not_packed",
            format!("job {} is not packed yet ({})", r.id, r.status),
        )));
    }
    let read = match what {
        Packed::Manifest => tokio::fs::read(runner.manifest_path(&r.id)).await,
        Packed::Provenance => runner.document(&r.id, Doc::Provenance),
    };
    let bytes = read.map_err(|e| crate::server::service::jobs::file_error(&r.id, e))?;
    serde_json::from_slice(&bytes)
        .map(poem_openapi::payload::Json)
        .map_err(internal)
}
