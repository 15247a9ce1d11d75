//! Source stage: fetch exactly one commit with libgit2 and write its tree out.
//!
//! Only that commit is fetched (depth 1) when the remote allows it; otherwise every branch and
//! tag is fetched and the commit looked up among them. The tree is written blob by blob from the
//! object database: modes and symlinks exactly as git records them, no `.git` anywhere, and no
//! hooks, filters, attributes or checkout logic involved. Submodules are fetched at the commit
//! their gitlink pins, from the URL `.gitmodules` gives, or the stage fails saying why.
//!
//! It refuses: trees with unsafe names (`..`, `.git`, `/`), non-UTF-8 names (the manifest is JSON),
//! `file://` URLs when the policy forbids them, and SHA-256 repositories (this libgit2 build has no
//! SHA-256 object format).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use git2::{
    AutotagOption, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, ObjectType, Oid,
    RemoteCallbacks, Repository,
};
use sha2::{Digest, Sha256};

use crate::io_error::{IoError, io_err as io};
use crate::progress::{Progress, ProgressFn};
use crate::spec::{CommitRef, GitSource};

mod tree;
use tree::{TreeWriter, resolve_submodule_url, submodule_urls};

/// How the source stage fetches.
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// Keep one bare repository per URL here, so a second pack of the same repository fetches
    /// nothing it already has. `None`: a throw-away repository in `scratch_dir`.
    pub cache_dir: Option<PathBuf>,
    /// Where throw-away repositories go (removed when the fetch ends).
    pub scratch_dir: PathBuf,
    /// Whether `file://` URLs (the local file system) may be fetched. A service should say no.
    pub allow_file_urls: bool,
    /// Connect and read time-out for the remote.
    pub timeout: Duration,
    /// How deep submodules may nest.
    pub max_submodule_depth: usize,
    /// Set to `true` to stop a fetch or checkout in progress (it then fails with `Cancelled`).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Where fetches may connect: every remote's host (submodules too) is checked before the
    /// fetch, and http(s) goes through `proxy`, which checks each connection.
    pub destinations: Arc<crate::egress::Destinations>,
    /// An HTTP proxy for http(s) remotes (the packager's [`crate::egress::EgressProxy`]).
    pub proxy: Option<String>,
}

/// What the source stage produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkout {
    /// The full id of the commit written out.
    pub commit: String,
    /// The committer time of that commit (seconds since the epoch).
    pub commit_time: i64,
    /// Whether the commit came with a depth-1 fetch (`false`: fetched all refs, or from cache).
    pub shallow: bool,
    /// Submodules written, with the commit each is pinned at.
    pub submodules: Vec<SubmoduleInfo>,
}

/// A submodule materialised at its pinned commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubmoduleInfo {
    pub path: String,
    pub url: String,
    pub commit: String,
}

/// Why the source stage failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "commit {commit} is not in {url}: check the hash, and that the commit is on a branch or \
         tag of that repository"
    )]
    UnknownCommit { url: String, commit: String },
    #[error(
        "commit abbreviation {prefix} is ambiguous in {url}: give more hex digits or the full hash"
    )]
    Ambiguous { url: String, prefix: String },
    #[error("{commit} in {url} is a {kind}, not a commit")]
    NotACommit {
        url: String,
        commit: String,
        kind: String,
    },
    #[error("cannot reach repository {url}: {message}")]
    Unreachable {
        url: String,
        message: String,
        #[source]
        source: git2::Error,
    },
    #[error(
        "repository {url} requires authentication: use a public URL, or for ssh load a key into \
         ssh-agent ({message})"
    )]
    AuthRequired { url: String, message: String },
    #[error(
        "commit {commit} is a SHA-256 id, but this build of libgit2 cannot read SHA-256 \
         repositories; pack it from a SHA-1 mirror"
    )]
    Sha256Unsupported { commit: String },
    #[error("file:// repositories are not allowed here: {url}")]
    LocalUrlForbidden { url: String },
    #[error("cannot fetch {url}: {source}")]
    Forbidden {
        url: String,
        #[source]
        source: crate::egress::Forbidden,
    },
    #[error("invalid submodule URL {url:?} for {path}: {message}")]
    BadSubmoduleUrl {
        path: String,
        url: String,
        message: String,
    },
    #[error(
        "submodule at {path} has no url in .gitmodules at commit {commit}: cannot tell where to \
         fetch it from"
    )]
    SubmoduleNotConfigured { path: String, commit: String },
    #[error("submodules nest deeper than {0} levels at {1}")]
    SubmoduleTooDeep(usize, String),
    #[error("the tree of commit {commit} has an unsafe entry {path:?}: {reason}")]
    UnsafeTree {
        commit: String,
        path: String,
        reason: &'static str,
    },
    #[error("the checkout was cancelled")]
    Cancelled,
    #[error("git failed on {url}: {source}")]
    Other {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Fetches `src` and writes its tree into `dest` (which must exist and be empty).
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn checkout(
    src: &GitSource,
    dest: &Path,
    opts: &GitOptions,
    progress: &ProgressFn,
) -> Result<Checkout, GitError> {
    set_timeouts(opts.timeout);
    let mut submodules = Vec::new();
    let (commit, commit_time, shallow) =
        checkout_at(src, dest, "", opts, progress, 0, &mut submodules).map_err(|e| {
            if is_cancelled(&opts.cancel) {
                GitError::Cancelled
            } else {
                e
            }
        })?;
    Ok(Checkout {
        commit,
        commit_time,
        shallow,
        submodules,
    })
}

fn set_timeouts(timeout: Duration) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: these set process-global libgit2 options; called once, before any fetch.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms);
            let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn checkout_at(
    src: &GitSource,
    dest: &Path,
    prefix: &str,
    opts: &GitOptions,
    progress: &ProgressFn,
    depth: usize,
    submodules: &mut Vec<SubmoduleInfo>,
) -> Result<(String, i64, bool), GitError> {
    if src.url.starts_with("file:") && !opts.allow_file_urls {
        return Err(GitError::LocalUrlForbidden {
            url: src.url.clone(),
        });
    }
    check_remote(&src.url, &opts.destinations)?;
    // Through the egress proxy: https by CONNECT (libgit2's proxy option), plain http by
    // pointing libgit2 at the proxy as the server (libgit2 does not proxy plain http).
    let (proxy, fetch_url) = match opts.proxy.as_deref() {
        Some(p) if src.url.starts_with("https://") => (Some(p), src.url.clone()),
        Some(p) if src.url.starts_with("http://") => match crate::egress::http_via(p, &src.url) {
            Some(u) => (None, u),
            None => {
                return Err(GitError::Forbidden {
                    url: src.url.clone(),
                    source: crate::egress::Forbidden {
                        host: src.url.clone(),
                        addr: "-".into(),
                        why: "plain http with credentials in the URL cannot be checked",
                    },
                });
            }
        },
        _ => (None, src.url.clone()),
    };
    let restricted = opts.destinations.is_restricted();
    if src.commit.as_str().len() == 64 {
        return Err(GitError::Sha256Unsupported {
            commit: src.commit.as_str().to_owned(),
        });
    }

    // The repository: a cached one (locked against other packers for the whole fetch+write) or a
    // throw-away one.
    let (repo_dir, _lock, _scratch) = match &opts.cache_dir {
        Some(cache) => {
            let key = hex::encode(&Sha256::digest(src.url.as_bytes())[..16]);
            let dir = cache.join("git");
            fs::create_dir_all(&dir).map_err(io("create cache directory", &dir))?;
            let lock_path = dir.join(format!("{key}.lock"));
            let lock = File::create(&lock_path).map_err(io("create lock file", &lock_path))?;
            lock.lock().map_err(io("lock", &lock_path))?;
            (dir.join(format!("{key}.git")), Some(lock), None)
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("jobpack-git-")
                .tempdir_in(&opts.scratch_dir)
                .map_err(io("create a temporary repository in", &opts.scratch_dir))?;
            (tmp.path().join("repo.git"), None, Some(tmp))
        }
    };
    let other = |source| GitError::Other {
        url: src.url.clone(),
        source,
    };
    let repo = match Repository::open_bare(&repo_dir) {
        Ok(r) => r,
        Err(_) => {
            // A half-initialised cache entry (a crash mid-init) is replaced, not trusted.
            match fs::remove_dir_all(&repo_dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", &repo_dir)(e).into());
                }
                _ => {}
            }
            Repository::init_bare(&repo_dir).map_err(other)?
        }
    };

    let mut shallow = false;
    let commit_oid = match &src.commit {
        CommitRef::Full(hex) => {
            let oid = Oid::from_str(hex).map_err(other)?;
            if repo.find_commit(oid).is_err() {
                shallow = fetch_commit(
                    &repo,
                    &fetch_url,
                    oid,
                    progress,
                    &opts.cancel,
                    proxy,
                    restricted,
                )?;
            }
            oid
        }
        CommitRef::Abbreviated(prefix) => {
            fetch_all(&repo, &fetch_url, progress, &opts.cancel, proxy, restricted)?;
            resolve_prefix(&repo, &src.url, prefix)?
        }
    };
    let commit = match repo.find_object(commit_oid, None) {
        Ok(obj) => match obj.peel_to_commit() {
            Ok(c) if obj.kind() == Some(ObjectType::Commit) => c,
            _ => {
                return Err(GitError::NotACommit {
                    url: src.url.clone(),
                    commit: commit_oid.to_string(),
                    kind: obj.kind().map_or("unknown object", |k| k.str()).to_owned(),
                });
            }
        },
        Err(_) => {
            return Err(GitError::UnknownCommit {
                url: src.url.clone(),
                commit: src.commit.as_str().to_owned(),
            });
        }
    };
    let tree = commit.tree().map_err(other)?;

    let mut w = TreeWriter {
        repo: &repo,
        commit: commit_oid.to_string(),
        files: 0,
        gitlinks: Vec::new(),
        progress,
        cancel: &opts.cancel,
    };
    w.write(&tree, dest, prefix)?;

    let gitlinks = std::mem::take(&mut w.gitlinks);
    if !gitlinks.is_empty() {
        if depth >= opts.max_submodule_depth {
            return Err(GitError::SubmoduleTooDeep(
                opts.max_submodule_depth,
                gitlinks[0].0.clone(),
            ));
        }
        let urls = submodule_urls(&repo, &tree, &src.url)?;
        for (path, oid) in gitlinks {
            let local = path
                .strip_prefix(prefix)
                .unwrap_or(&path)
                .trim_start_matches('/');
            let Some(url) = urls
                .iter()
                .find(|(p, _)| p == local)
                .map(|(_, u)| u.clone())
            else {
                return Err(GitError::SubmoduleNotConfigured {
                    path,
                    commit: commit_oid.to_string(),
                });
            };
            let url = resolve_submodule_url(&src.url, &url).map_err(|message| {
                GitError::BadSubmoduleUrl {
                    path: path.clone(),
                    url: url.clone(),
                    message,
                }
            })?;
            let sub = GitSource {
                url: url.clone(),
                commit: CommitRef::Full(oid.to_string()),
            };
            let sub_dest = dest.join(local);
            checkout_at(
                &sub,
                &sub_dest,
                &path,
                opts,
                progress,
                depth + 1,
                submodules,
            )?;
            submodules.push(SubmoduleInfo {
                path,
                url,
                commit: oid.to_string(),
            });
        }
    }
    Ok((commit_oid.to_string(), commit.time().seconds(), shallow))
}

fn callbacks<'a>(
    progress: &'a ProgressFn,
    cancel: &'a Option<Arc<AtomicBool>>,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    cb.transfer_progress(move |p| {
        if is_cancelled(cancel) {
            return false;
        }
        progress(Progress::GitTransfer {
            received_objects: p.received_objects(),
            total_objects: p.total_objects(),
            received_bytes: p.received_bytes(),
        });
        true
    });
    let mut tries = 0;
    cb.credentials(move |_url, username, allowed| {
        tries += 1;
        if tries == 1 && allowed.contains(CredentialType::SSH_KEY) {
            return Cred::ssh_key_from_agent(username.unwrap_or("git"));
        }
        if tries <= 2 && allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username.unwrap_or("git"));
        }
        Err(git2::Error::new(
            ErrorCode::Auth,
            ErrorClass::Callback,
            "the server asked for credentials and none are configured",
        ))
    });
    cb
}

/// Refuses a remote whose host resolves only to forbidden addresses (blocking resolution).
fn check_remote(url: &str, d: &crate::egress::Destinations) -> Result<(), GitError> {
    let Some((host, port)) = crate::egress::remote_host(url) else {
        return Ok(());
    };
    d.check_blocking(&host, port)
        .map_err(|source| GitError::Forbidden {
            url: url.to_owned(),
            source,
        })
}

fn is_cancelled(cancel: &Option<Arc<AtomicBool>>) -> bool {
    cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
}

fn fetch_options<'a>(
    progress: &'a ProgressFn,
    cancel: &'a Option<Arc<AtomicBool>>,
    depth: i32,
    proxy: Option<&str>,
    restricted: bool,
) -> FetchOptions<'a> {
    let mut fo = FetchOptions::new();
    if let Some(p) = proxy {
        let mut po = git2::ProxyOptions::new();
        po.url(p);
        fo.proxy_options(po);
    }
    if restricted {
        // A redirect to another host would be followed by libgit2 itself, around the policy.
        fo.follow_redirects(git2::RemoteRedirect::None);
    }
    fo.remote_callbacks(callbacks(progress, cancel));
    fo.download_tags(AutotagOption::None);
    fo.depth(depth);
    fo
}

/// Fetches one commit: depth 1 by id first, all refs if the remote refuses. Returns whether the
/// shallow fetch worked.
fn fetch_commit(
    repo: &Repository,
    url: &str,
    oid: Oid,
    progress: &ProgressFn,
    cancel: &Option<Arc<AtomicBool>>,
    proxy: Option<&str>,
    restricted: bool,
) -> Result<bool, GitError> {
    // libgit2's local transport cannot fetch shallow; go straight to the full fetch.
    if !url.starts_with("file:") {
        let mut remote = repo.remote_anonymous(url).map_err(|e| classify(url, e))?;
        let refspec = format!("+{oid}:refs/jobpack/commits/{oid}");
        match remote.fetch(
            &[&refspec],
            Some(&mut fetch_options(progress, cancel, 1, proxy, restricted)),
            None,
        ) {
            Ok(()) if repo.find_commit(oid).is_ok() => return Ok(true),
            // A server that does not allow fetching unadvertised commits (or does not know this
            // one) answers with an error here; the full fetch below tells which it was.
            Ok(()) => {}
            Err(e) => {
                if is_cancelled(cancel) {
                    return Err(GitError::Cancelled);
                }
                let e = classify(url, e);
                if matches!(e, GitError::AuthRequired { .. }) {
                    return Err(e);
                }
            }
        }
    }
    fetch_all(repo, url, progress, cancel, proxy, restricted)?;
    Ok(false)
}

/// Fetches every branch and tag (what a plain clone gets).
fn fetch_all(
    repo: &Repository,
    url: &str,
    progress: &ProgressFn,
    cancel: &Option<Arc<AtomicBool>>,
    proxy: Option<&str>,
    restricted: bool,
) -> Result<(), GitError> {
    let mut remote = repo.remote_anonymous(url).map_err(|e| classify(url, e))?;
    let refspecs = [
        "+refs/heads/*:refs/jobpack/heads/*",
        "+refs/tags/*:refs/jobpack/tags/*",
    ];
    remote
        .fetch(
            &refspecs,
            Some(&mut fetch_options(progress, cancel, 0, proxy, restricted)),
            None,
        )
        .map_err(|e| classify(url, e))
}

fn resolve_prefix(repo: &Repository, url: &str, prefix: &str) -> Result<Oid, GitError> {
    match repo.revparse_single(prefix) {
        Ok(obj) => Ok(obj.id()),
        Err(e) if e.code() == ErrorCode::Ambiguous => Err(GitError::Ambiguous {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
        }),
        Err(_) => Err(GitError::UnknownCommit {
            url: url.to_owned(),
            commit: prefix.to_owned(),
        }),
    }
}

/// Turns a libgit2 error into what a user can act on.
fn classify(url: &str, e: git2::Error) -> GitError {
    let msg = e.message().to_owned();
    let lower = msg.to_ascii_lowercase();
    if e.code() == ErrorCode::Auth
        || lower.contains("status code: 401")
        || lower.contains("status code: 403")
        || lower.contains("authentication")
    {
        return GitError::AuthRequired {
            url: url.to_owned(),
            message: msg,
        };
    }
    match e.class() {
        ErrorClass::Net | ErrorClass::Os | ErrorClass::Http | ErrorClass::Ssh | ErrorClass::Ssl => {
            GitError::Unreachable {
                url: url.to_owned(),
                message: msg,
                source: e,
            }
        }
        _ if e.code() == ErrorCode::NotFound && lower.contains("could not find repository") => {
            GitError::Unreachable {
                url: url.to_owned(),
                message: msg,
                source: e,
            }
        }
        _ => GitError::Other {
            url: url.to_owned(),
            source: e,
        },
    }
}
