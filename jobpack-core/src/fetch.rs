//! Data stage: download every data URL into `data/`, streaming to disk.
//!
//! Each file is streamed to a temporary file beside its destination while its sha256 is computed;
//! only a complete download whose hash matches the pin (if any) is renamed into place. Never holds
//! a whole file in memory. Bounded: a size limit per file, a time-out for a stalled transfer and one
//! for a whole attempt, and a bounded number of retries (with backoff) on transient failures only
//! (connection errors, time-outs, 408/429/5xx). Files are downloaded concurrently.
//!
//! Optionally keeps pinned files in a cache keyed by their sha256, so a second pack of the same
//! data downloads nothing. Only http and https URLs reach this module (the spec checks that).

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, timeout};

use crate::io_error::{IoError, io_err as io};
use crate::progress::{Progress, ProgressFn};
use crate::spec::DataItem;

/// Limits and behaviour of the data stage.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Largest file accepted, in bytes.
    pub max_bytes: u64,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Longest wait for the response headers or for the next chunk of the body.
    pub idle_timeout: Duration,
    /// Longest a single attempt may take in all.
    pub attempt_timeout: Duration,
    /// Extra attempts after a transient failure.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Downloads running at once.
    pub concurrency: usize,
    /// Keep pinned files here by sha256 (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Where downloads may connect (checked after DNS resolution and on every redirect).
    pub destinations: std::sync::Arc<crate::egress::Destinations>,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            max_bytes: 20 * 1024 * 1024 * 1024,
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(6 * 3600),
            retries: 3,
            backoff: Duration::from_millis(500),
            concurrency: 4,
            cache_dir: None,
            destinations: std::sync::Arc::new(crate::egress::Destinations::any()),
        }
    }
}

/// One data file in place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Downloaded {
    pub url: String,
    /// Path under `data/`.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// Why the data stage failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("download of {url} failed: the server answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("download of {url} timed out: {what}")]
    Timeout { url: String, what: String },
    #[error("cannot download {url}")]
    Transfer {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "{url} is larger than the limit of {limit} bytes{}: raise the packager's download limit \
         if this is expected",
        size.map(|s| format!(" (the server says {s} bytes)")).unwrap_or_default()
    )]
    TooLarge {
        url: String,
        limit: u64,
        size: Option<u64>,
    },
    #[error(
        "sha256 of {url} is {actual}, but the spec pins {expected}: the file changed on the \
         server or the pin is wrong; nothing was kept"
    )]
    HashMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("gave up on {url} after {attempts} attempts")]
    GaveUp {
        url: String,
        attempts: u32,
        #[source]
        last: Box<FetchError>,
    },
    #[error("cannot download {url}: {source}")]
    Forbidden {
        url: String,
        #[source]
        source: crate::egress::Forbidden,
    },
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Io(#[from] IoError),
}

impl FetchError {
    /// Whether another attempt might succeed.
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            FetchError::Timeout { .. } | FetchError::Transfer { .. } => true,
            _ => false,
        }
    }
}

/// Builds the HTTP client the data stage uses.
pub fn client(opts: &DownloadOptions) -> Result<reqwest::Client, FetchError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .user_agent(concat!("jobpack/", env!("CARGO_PKG_VERSION")));
    if opts.destinations.is_restricted() {
        // Every connection resolves through the policy; a proxy from the environment would
        // make the proxy, not the destination, the thing checked.
        b = b
            .dns_resolver(opts.destinations.resolver())
            .redirect(opts.destinations.redirect_policy())
            .no_proxy();
    }
    b.build().map_err(FetchError::Client)
}

/// Downloads every item into `data_dir` (at `item.path`), concurrently; returns them in spec order.
/// On failure no partial file is left in `data_dir` for the failed item.
pub async fn download_all(
    client: &reqwest::Client,
    items: &[DataItem],
    data_dir: &Path,
    opts: &DownloadOptions,
    progress: &ProgressFn,
) -> Result<Vec<Downloaded>, FetchError> {
    // Each download owns what it uses (the client is a shared handle): futures that borrow
    // through closures trip rustc's "Send is not general enough" once spawned.
    let mut done: Vec<(usize, Downloaded)> =
        futures_util::stream::iter(items.iter().cloned().enumerate())
            .map(|(i, item)| {
                let (client, dir) = (client.clone(), data_dir.to_path_buf());
                let (opts, progress) = (opts.clone(), progress.clone());
                async move {
                    download_one(&client, i, &item, &dir, &opts, &progress)
                        .await
                        .map(|d| (i, d))
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .try_collect()
            .await?;
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, d)| d).collect())
}

async fn download_one(
    client: &reqwest::Client,
    index: usize,
    item: &DataItem,
    data_dir: &Path,
    opts: &DownloadOptions,
    progress: &ProgressFn,
) -> Result<Downloaded, FetchError> {
    let dest = data_dir.join(&item.path);
    let parent = dest.parent().unwrap_or(data_dir).to_path_buf();
    create_dirs(data_dir, &item.path)?;
    let url = item.url.to_string();

    if let (Some(cache), Some(sha)) = (&opts.cache_dir, &item.sha256) {
        let cached = cache.join("data").join(sha);
        if let Ok(meta) = std::fs::metadata(&cached) {
            // Copy, not link: the staging copy gets its own mode and lifetime.
            std::fs::copy(&cached, &dest).map_err(io("copy cached data to", &dest))?;
            std::fs::set_permissions(&dest, Permissions::from_mode(0o644))
                .map_err(io("set mode of", &dest))?;
            return Ok(Downloaded {
                url,
                path: item.path.clone(),
                sha256: sha.clone(),
                size: meta.len(),
            });
        }
    }

    let mut attempt = 0;
    let (sha256, size, tmp) = loop {
        attempt += 1;
        match attempt_once(client, index, item, &parent, opts, progress).await {
            Ok(ok) => break ok,
            Err(e) if e.is_transient() && attempt <= opts.retries => {
                let wait = opts.backoff * 2u32.saturating_pow(attempt - 1);
                tokio::time::sleep(wait).await;
            }
            Err(e) if attempt > 1 => {
                return Err(FetchError::GaveUp {
                    url,
                    attempts: attempt,
                    last: Box::new(e),
                });
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(expected) = &item.sha256
        && *expected != sha256
    {
        // `tmp` is dropped here: the file is removed.
        return Err(FetchError::HashMismatch {
            url,
            expected: expected.clone(),
            actual: sha256,
        });
    }
    std::fs::set_permissions(tmp.path(), Permissions::from_mode(0o644))
        .map_err(io("set mode of", tmp.path()))?;
    tmp.persist(&dest)
        .map_err(|e| io("move download into place at", &dest)(e.error))?;
    if let (Some(cache), Some(_)) = (&opts.cache_dir, &item.sha256) {
        store_in_cache(cache, &sha256, &dest);
    }
    Ok(Downloaded {
        url,
        path: item.path.clone(),
        sha256,
        size,
    })
}

/// Creates the directories of `rel` under `root` (a symlink planted there cannot redirect a
/// download).
fn create_dirs(root: &Path, rel: &str) -> Result<(), FetchError> {
    use crate::source::local::{ParentDirError, make_parent_dirs};
    make_parent_dirs(root, rel).map_err(|e| match e {
        ParentDirError::NotADirectory(dir) => FetchError::from(io(
            "create data directory (a non-directory is in the way)",
            dir,
        )(std::io::Error::from(
            std::io::ErrorKind::AlreadyExists,
        ))),
        ParentDirError::Io(e) => FetchError::from(e),
    })
}

/// Best effort: a failure to cache never fails the pack; it is logged, and the next pack
/// downloads the file again.
fn store_in_cache(cache: &Path, sha256: &str, src: &Path) {
    let dir = cache.join("data");
    let stored = std::fs::create_dir_all(&dir)
        .and_then(|()| tempfile::NamedTempFile::new_in(&dir))
        .and_then(|tmp| {
            std::fs::copy(src, tmp.path())?;
            tmp.persist(dir.join(sha256)).map_err(|e| e.error)?;
            Ok(())
        });
    if let Err(e) = stored {
        tracing::warn!("cannot cache {sha256} in {}: {e}", dir.display());
    }
}

async fn attempt_once(
    client: &reqwest::Client,
    index: usize,
    item: &DataItem,
    dir: &Path,
    opts: &DownloadOptions,
    progress: &ProgressFn,
) -> Result<(String, u64, tempfile::NamedTempFile), FetchError> {
    let url = item.url.as_str();
    let deadline = Instant::now() + opts.attempt_timeout;
    let timed_out = |what: String| FetchError::Timeout {
        url: url.to_owned(),
        what,
    };
    let transfer = |source: reqwest::Error| match crate::egress::forbidden_in(&source) {
        Some(f) => FetchError::Forbidden {
            url: url.to_owned(),
            source: f,
        },
        None => FetchError::Transfer {
            url: url.to_owned(),
            source,
        },
    };
    opts.destinations
        .check_url(&item.url)
        .await
        .map_err(|f| FetchError::Forbidden {
            url: url.to_owned(),
            source: f,
        })?;

    let resp = timeout(opts.idle_timeout, client.get(item.url.clone()).send())
        .await
        .map_err(|_| {
            timed_out(format!(
                "no response within {:.1}s",
                opts.idle_timeout.as_secs_f64()
            ))
        })?
        .map_err(|e| {
            if e.is_timeout() {
                timed_out(format!("{e}"))
            } else {
                transfer(e)
            }
        })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let total = resp.content_length();
    if let Some(len) = total
        && len > opts.max_bytes
    {
        return Err(FetchError::TooLarge {
            url: url.to_owned(),
            limit: opts.max_bytes,
            size: Some(len),
        });
    }

    let tmp = tempfile::Builder::new()
        .prefix(".jobpack-download-")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    let file = tmp.as_file().try_clone().map_err(io("open", tmp.path()))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut reported: u64 = 0;
    let mut body = resp.bytes_stream();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out(format!(
                "the transfer took longer than {:.0}s",
                opts.attempt_timeout.as_secs_f64()
            )));
        }
        let wait = opts.idle_timeout.min(deadline - now);
        let chunk = match timeout(wait, body.next()).await {
            Err(_) => {
                return Err(timed_out(format!(
                    "no data for {:.1}s after {size} bytes",
                    wait.as_secs_f64()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(transfer(e)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        size += chunk.len() as u64;
        if size > opts.max_bytes {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
                limit: opts.max_bytes,
                size: None,
            });
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(io("write", tmp.path()))?;
        if size - reported >= 1 << 20 {
            reported = size;
            progress(Progress::Download {
                index,
                path: item.path.clone(),
                downloaded: size,
                total,
            });
        }
    }
    out.flush().await.map_err(io("write", tmp.path()))?;
    progress(Progress::Download {
        index,
        path: item.path.clone(),
        downloaded: size,
        total,
    });
    Ok((hex::encode(hasher.finalize()), size, tmp))
}
