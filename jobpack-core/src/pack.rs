//! The pipeline: spec -> validated job -> (code ‖ data) -> run.sh + Dockerfile -> manifest ->
//! deterministic `.tar.gz`.
//!
//! Everything happens in a private staging directory that is removed when the pack ends, whether
//! it succeeds or fails; the artifact is written to a temporary file and renamed into place, so a
//! failed pack leaves neither a partial artifact nor temporary directories behind. The git fetch
//! (blocking, on a worker thread) and the data downloads (async) run at the same time; when one
//! fails the other is stopped before the staging directory is removed.

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::archive::{self, Contents, EntryKind, FileEntry, UnpackLimits};
use crate::error::{Error, Result};
use crate::fetch::{self, DownloadOptions, Downloaded};
use crate::io_error::io_err;
use crate::manifest::{self, MANIFEST_FORMAT, MANIFEST_NAME, Manifest, SourceRecord};
use crate::progress::{self, Progress, ProgressFn, Stage};
use crate::render::{
    CommandContext, DataContext, EnvVar, RenderContext, RuntimeContext, Templates,
};
use crate::source::git::{self, Checkout, GitOptions};
use crate::spec::{Job, JobSpec};

/// How a [`Packager`] works. `Default` gives sensible values for a command-line user.
#[derive(Debug, Clone)]
pub struct PackagerConfig {
    /// Where staging directories and throw-away repositories go.
    pub work_dir: PathBuf,
    /// Where [`Packager::pack`] puts artifacts.
    pub out_dir: PathBuf,
    /// Keeps fetched repositories and pinned data here between packs (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// A directory of user templates (`run.sh.tera`, `Dockerfile.tera`); `None`: the embedded ones.
    pub templates_dir: Option<PathBuf>,
    /// Whether `file://` git URLs may be fetched. A network service should set this to `false`.
    pub allow_file_urls: bool,
    /// Connect/read time-out for git remotes.
    pub git_timeout: Duration,
    /// How deep submodules may nest.
    pub max_submodule_depth: usize,
    /// Data download limits.
    pub download: DownloadOptions,
    /// The mtime of every archive entry. `None`: the commit's time (0 without a commit).
    /// `Default` takes it from `SOURCE_DATE_EPOCH` when that is set.
    pub source_date_epoch: Option<u64>,
    /// Whether a spec whose inputs are all pinned is answered from `cache_dir/artifacts` when it
    /// was packed before (the same bytes, copied; [`crate::artifact_cache`]). The CLI turns it
    /// on; a service whose destination policy may change between packs leaves it off.
    pub artifact_cache: bool,
    /// The runtime store ([`crate::rootfs::Store`]) a spec's `runtime_fs` is resolved in.
    /// `None`: a spec naming one is refused.
    pub runtimes: Option<PathBuf>,
}

impl Default for PackagerConfig {
    fn default() -> Self {
        PackagerConfig {
            work_dir: std::env::temp_dir(),
            out_dir: PathBuf::from("."),
            cache_dir: None,
            templates_dir: None,
            allow_file_urls: true,
            git_timeout: Duration::from_secs(60),
            max_submodule_depth: 8,
            download: DownloadOptions::default(),
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
            artifact_cache: false,
            runtimes: None,
        }
    }
}

/// Local inputs of a pack besides the spec: uploaded code (instead of a git source) and uploaded
/// data files (beside the spec's downloads).
#[derive(Debug, Clone, Default)]
pub struct PackInputs {
    /// Copied into `code/`. A job with a git source cannot also have this.
    pub code_dir: Option<PathBuf>,
    /// Copied into `data/` before the downloads (a download may not overwrite one of these).
    pub data_dir: Option<PathBuf>,
    /// A file copied to the artifact's `stdin`: the command's standard input (`run.sh` redirects
    /// it, so the sandbox, Slurm and the container all read the same bytes), recorded in the
    /// manifest by sha256.
    pub stdin: Option<PathBuf>,
}

/// A packed job.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Where the `.tar.gz` is.
    pub path: PathBuf,
    /// Its sha256 (hex).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The full commit id that was packed, if the job has a git source.
    pub commit: Option<String>,
    /// Whether the commit came with a depth-1 fetch.
    pub shallow_fetch: bool,
    /// What `jobpack.json` inside it says.
    pub manifest: Manifest,
    /// What packing it received over the network and how long it took (zeros for a cached
    /// artifact).
    pub stats: crate::progress::PackStats,
}

/// What [`Packager::prepare`] made: the artifact, and the job directory it was unpacked into
/// (`run.sh` at its top, ready for an executor).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub artifact: Artifact,
    pub job_dir: PathBuf,
}

/// Unpacks an artifact into `job_dir` for a run, off the async threads: the directory must be
/// empty or not exist (it is created), and the archive is read as hostile
/// ([`crate::archive::unpack`] with the default [`UnpackLimits`]: no `..`, no absolute paths, no
/// path through a link, no devices, bounded entries and bytes). Returns the bytes written.
#[tracing::instrument(level = "info", name = "unpack", skip_all)]
pub async fn unpack_job(artifact: &Path, job_dir: &Path) -> Result<u64> {
    let (artifact, job_dir) = (artifact.to_path_buf(), job_dir.to_path_buf());
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _in = span.enter();
        let io = |action| io_err(action, &job_dir);
        fs::create_dir_all(&job_dir).map_err(io("create the job directory"))?;
        let mut entries = fs::read_dir(&job_dir).map_err(io("read the job directory"))?;
        if entries.next().is_some() {
            return Err(io("unpack an artifact into the non-empty directory")(
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "it is not empty (an artifact is unpacked into an empty one)",
                ),
            )
            .into());
        }
        Ok(crate::archive::unpack(
            &artifact,
            &job_dir,
            UnpackLimits::default(),
        )?)
    })
    .await
    .map_err(|e| Error::Internal(format!("the unpack task failed: {e}")))?
}

/// Packs job specs into artifacts. Cheap to clone; one can serve many packs at once.
#[derive(Clone)]
pub struct Packager {
    config: Arc<PackagerConfig>,
    templates: Arc<Templates>,
    /// The HTTP client of the data stage, set up at the first download (loading the system's
    /// certificates is most of a warm pack's own time, and most packs download nothing).
    client: Arc<tokio::sync::OnceCell<reqwest::Client>>,
    progress: ProgressFn,
    /// The git proxy of a restricted destination policy, started at the first http(s) fetch.
    proxy: Arc<tokio::sync::OnceCell<crate::egress::EgressProxy>>,
}

impl std::fmt::Debug for Packager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Packager {
    /// The digest of the templates this packager renders (as provenance records it).
    pub fn templates_digest(&self) -> &str {
        self.templates.digest()
    }

    /// The signed statement of what `artifact` was packed from (SLSA provenance, in-toto, DSSE),
    /// with `invocation_id` (a job id) if any.
    pub fn provenance(
        &self,
        artifact: &Artifact,
        key: &crate::attest::Key,
        invocation_id: Option<&str>,
    ) -> crate::attest::Envelope {
        let st = crate::attest::provenance(artifact, self.templates.digest(), invocation_id);
        crate::attest::Envelope::sign_statement(key, &st)
    }

    /// Loads the templates (the HTTP client is set up at the first download).
    pub fn new(config: PackagerConfig) -> Result<Self> {
        let templates = match &config.templates_dir {
            Some(dir) => Templates::from_dir(dir)?,
            None => Templates::embedded(),
        };
        Ok(Packager {
            config: Arc::new(config),
            templates: Arc::new(templates),
            client: Arc::new(tokio::sync::OnceCell::new()),
            progress: progress::ignore(),
            proxy: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Sends progress events to `f`.
    pub fn with_progress(mut self, f: ProgressFn) -> Self {
        self.progress = f;
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &PackagerConfig {
        &self.config
    }

    /// Validates `spec` and packs it into `out_dir/<name>-<digest>.tar.gz`.
    pub async fn pack(&self, spec: &JobSpec) -> Result<Artifact> {
        let job = spec.validate()?;
        self.pack_job(&job, None).await
    }

    /// Validates `spec` and packs it into `out`.
    pub async fn pack_to(&self, spec: &JobSpec, out: &Path) -> Result<Artifact> {
        let job = spec.validate()?;
        self.pack_job(&job, Some(out)).await
    }

    /// Packs a validated job into `artifact` and unpacks it safely into `job_dir` (which must be
    /// empty or not exist): everything a run needs, in one call. Callers that record the
    /// artifact before they run it (a service with a `packed` state, pack-only jobs) call
    /// [`Packager::pack_job_with`] and then [`unpack_job`].
    pub async fn prepare(
        &self,
        job: &Job,
        inputs: &PackInputs,
        artifact: &Path,
        job_dir: &Path,
    ) -> Result<Prepared> {
        let artifact = self.pack_job_with(job, inputs, Some(artifact)).await?;
        unpack_job(&artifact.path, job_dir).await?;
        Ok(Prepared {
            artifact,
            job_dir: job_dir.to_path_buf(),
        })
    }

    /// Packs a validated job into `out` (or `out_dir/<name>-<digest>.tar.gz` when `None`).
    pub async fn pack_job(&self, job: &Job, out: Option<&Path>) -> Result<Artifact> {
        self.pack_job_with(job, &PackInputs::default(), out).await
    }

    /// `job` with its `runtime_fs` pinned and its base image the runtime's, and the manifest's
    /// record of the root file system.
    fn resolve_runtime(&self, job: &Job) -> Result<(Job, manifest::RootFsRecord)> {
        let Some(want) = &job.runtime_fs else {
            return Ok((job.clone(), manifest::RootFsRecord::Host));
        };
        let Some(dir) = &self.config.runtimes else {
            return Err(Error::Policy(format!(
                "runtime_fs {want}: this packager has no runtime store (give one with --runtimes)"
            )));
        };
        let rt = crate::rootfs::Store::open(dir)?.resolve(want)?;
        let mut job = job.clone();
        job.runtime_fs = Some(crate::rootfs::RuntimeRef {
            name: rt.name.clone(),
            digest: Some(rt.digest.clone()),
        });
        job.base_image = rt.image.clone();
        Ok((
            job,
            manifest::RootFsRecord::Runtime {
                name: rt.name,
                digest: rt.digest,
                image: rt.image,
            },
        ))
    }

    /// Like [`Packager::pack_job`], with uploaded code and/or data directories.
    #[tracing::instrument(level = "info", name = "pack", skip_all, fields(job = job.name.as_deref()))]
    pub async fn pack_job_with(
        &self,
        job: &Job,
        inputs: &PackInputs,
        out: Option<&Path>,
    ) -> Result<Artifact> {
        let cfg = &*self.config;
        let (job, runtime_fs) = self.resolve_runtime(job)?;
        // A spec whose inputs are all pinned: the artifact cache may already hold its bytes.
        let cached = match (&cfg.cache_dir, cfg.artifact_cache) {
            (Some(dir), true) => crate::artifact_cache::key(
                &job,
                inputs.code_dir.is_some() || inputs.data_dir.is_some(),
                inputs.stdin.as_deref(),
                self.templates.digest(),
                cfg.source_date_epoch,
            )
            .map_err(io_err(
                "read the standard input at",
                inputs.stdin.clone().unwrap_or_default(),
            ))?
            .map(|k| (dir.clone(), k)),
            _ => None,
        };
        if let Some((dir, key)) = &cached {
            let dest = match out {
                Some(p) => p.to_path_buf(),
                None => default_out(
                    cfg,
                    &job,
                    &manifest::spec_digest(&job.normalised_spec(None)),
                ),
            };
            let hit = crate::artifact_cache::take(dir, key, &dest)
                .map_err(io_err("read the artifact cache in", dir))?;
            if let Some(e) = hit {
                (self.progress)(Progress::ArtifactCache {
                    hit: true,
                    note: None,
                });
                (self.progress)(Progress::Stage { stage: Stage::Done });
                return Ok(Artifact {
                    path: dest,
                    sha256: e.sha256,
                    size: e.size,
                    commit: e.commit,
                    shallow_fetch: false,
                    manifest: e.manifest,
                    stats: Default::default(),
                });
            }
        }
        let artifact = self.pack_fresh(&job, &runtime_fs, inputs, out).await?;
        if let Some((dir, key)) = &cached {
            let kept = crate::artifact_cache::put(dir, key, &artifact);
            // The pack succeeded; a cache that cannot keep it is said, not fatal.
            let note = kept
                .err()
                .map(|e| format!("not kept in the artifact cache: {e}"));
            (self.progress)(Progress::ArtifactCache { hit: false, note });
        }
        Ok(artifact)
    }

    /// Packs `job` (its runtime resolved) from its sources.
    async fn pack_fresh(
        &self,
        job: &Job,
        runtime_fs: &manifest::RootFsRecord,
        inputs: &PackInputs,
        out: Option<&Path>,
    ) -> Result<Artifact> {
        let cfg = &*self.config;
        if inputs.code_dir.is_some() && job.source.is_some() {
            return Err(Error::Policy(
                "give either git_url/commit_hash or uploaded code, not both".into(),
            ));
        }
        // With nothing to fetch or copy, the archive is made from memory and no staging tree is
        // written (for a small job, creating and removing its files cost the file system more
        // than the rest of the pack). run.sh and the Dockerfile are never staged.
        let staged = job.source.is_some()
            || !job.data.is_empty()
            || inputs.code_dir.is_some()
            || inputs.data_dir.is_some()
            || inputs.stdin.is_some();
        let staging = if staged {
            fs::create_dir_all(&cfg.work_dir)
                .map_err(io_err("create work directory", &cfg.work_dir))?;
            let t = tempfile::Builder::new()
                .prefix("jobpack-pack-")
                .tempdir_in(&cfg.work_dir)
                .map_err(io_err("create a staging directory in", &cfg.work_dir))?;
            for d in ["code", "data"] {
                let p = t.path().join(d);
                fs::create_dir(&p).map_err(io_err("create", &p))?;
                fs::set_permissions(&p, Permissions::from_mode(0o755))
                    .map_err(io_err("set mode of", &p))?;
            }
            Some(t)
        } else {
            None
        };
        // Unstaged, nothing reads or writes under `root` (its code/ does not exist: no markers).
        let root = match &staging {
            Some(t) => t.path().to_path_buf(),
            None => cfg.work_dir.join("jobpack-pack-nothing-staged"),
        };

        let stdin = match &inputs.stdin {
            Some(src) => {
                let dst = root.join(manifest::STDIN_NAME);
                fs::copy(src, &dst).map_err(io_err("copy the standard input from", src))?;
                fs::set_permissions(&dst, Permissions::from_mode(0o644))
                    .map_err(io_err("set mode of", &dst))?;
                Some(manifest::StdinRecord::of(&dst).map_err(io_err("read", &dst))?)
            }
            None => None,
        };
        let copies = [(&inputs.code_dir, "code"), (&inputs.data_dir, "data")];
        for (src, sub) in copies {
            if let Some(src) = src {
                let (src, dst) = (src.clone(), root.join(sub));
                tokio::task::spawn_blocking(move || crate::source::local::copy_tree(&src, &dst))
                    .await
                    .map_err(|e| Error::Internal(format!("the copy task failed: {e}")))??;
            }
        }

        (self.progress)(Progress::Stage {
            stage: Stage::Fetching,
        });
        let (counted, fetched) = progress::counting(self.progress.clone());
        let began = std::time::Instant::now();
        let (checkout, downloads) = self.fetch(job, &root, &counted).await?;
        let fetch_secs = began.elapsed().as_secs_f64();

        (self.progress)(Progress::Stage {
            stage: Stage::Rendering,
        });
        let spec = job.normalised_spec(checkout.as_ref().map(|c| c.commit.as_str()));
        let spec_digest = manifest::spec_digest(&spec);
        let mtime = cfg
            .source_date_epoch
            .or_else(|| checkout.as_ref().map(|c| c.commit_time.max(0) as u64))
            .unwrap_or(0);
        let runtime =
            crate::runtime::detect(&root.join("code"), job.runtime, job.install.as_deref())?;
        let rendered = self.templates.render(&RenderContext {
            version: env!("CARGO_PKG_VERSION"),
            name: job.name.clone(),
            git_url: job.source.as_ref().map(|s| s.url.clone()),
            commit: checkout.as_ref().map(|c| c.commit.clone()),
            base_image: job.base_image.clone(),
            spec_digest: spec_digest.clone(),
            command: CommandContext::from(&job.command),
            env: job
                .env
                .iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            data: downloads
                .iter()
                .map(|d| DataContext {
                    url: d.url.clone(),
                    path: d.path.clone(),
                    sha256: d.sha256.clone(),
                })
                .collect(),
            source_date_epoch: mtime,
            runtime: RuntimeContext::from(&runtime),
            stdin: stdin.is_some(),
        })?;
        // The repository's own Dockerfile is used as is (its context is code/).
        let dockerfile = if runtime.kind == crate::runtime::RuntimeKind::Dockerfile {
            let p = root.join("code/Dockerfile");
            fs::read_to_string(&p).map_err(io_err("read", &p))?
        } else {
            rendered.dockerfile
        };
        let run_sh = rendered.run_sh;

        (self.progress)(Progress::Stage {
            stage: Stage::Archiving,
        });
        let out = match out {
            Some(p) => p.to_path_buf(),
            None => default_out(cfg, job, &spec_digest),
        };
        let source = match (&job.source, &checkout) {
            (Some(s), Some(c)) => Some(SourceRecord {
                git_url: s.url.clone(),
                commit: c.commit.clone(),
                commit_time: c.commit_time,
                submodules: c.submodules.clone(),
            }),
            _ => None,
        };
        let base_image = manifest::BaseImageRecord {
            pinned: crate::runtime::is_pinned(&job.base_image),
            reference: job.base_image.clone(),
        };
        let progress = self.progress.clone();
        let root_fs = runtime_fs.clone();
        let span = tracing::info_span!("archive");
        let began = std::time::Instant::now();
        let (manifest, written) = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            let mut files = if staged {
                archive::scan(&root)?
            } else {
                vec![FileEntry::dir("code"), FileEntry::dir("data")]
            };
            files.push(FileEntry::file("run.sh", run_sh.as_bytes(), true));
            files.push(FileEntry::file("Dockerfile", dockerfile.as_bytes(), false));
            files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
            let manifest = Manifest {
                format: MANIFEST_FORMAT,
                generator: concat!("jobpack ", env!("CARGO_PKG_VERSION")).to_owned(),
                spec,
                spec_digest,
                source,
                data: downloads,
                base_image: Some(base_image),
                runtime: Some(runtime),
                runtime_fs: root_fs,
                compressor: Some(archive::pgzip::COMPRESSOR.to_owned()),
                mtime,
                stdin,
                files,
            };
            let bytes = manifest.to_bytes();
            let mut entries: Vec<(FileEntry, Contents<'_>)> = manifest
                .files
                .iter()
                .cloned()
                .map(|e| {
                    let c = match e.path.as_str() {
                        "run.sh" => Contents::Bytes(run_sh.as_bytes()),
                        "Dockerfile" => Contents::Bytes(dockerfile.as_bytes()),
                        _ => Contents::Disk,
                    };
                    (e, c)
                })
                .collect();
            entries.push((
                FileEntry {
                    path: MANIFEST_NAME.to_owned(),
                    kind: EntryKind::File,
                    mode: "0644".into(),
                    size: bytes.len() as u64,
                    sha256: None,
                    target: None,
                },
                Contents::Bytes(&bytes),
            ));
            let written = archive::write_tar_gz(&root, &entries, mtime, &out, &progress)?;
            Ok::<_, Error>((manifest, (written, out)))
        })
        .await
        .map_err(|e| Error::Internal(format!("the archive task failed: {e}")))??;
        drop(staging);
        (self.progress)(Progress::Stage { stage: Stage::Done });
        let (written, path) = written;
        Ok(Artifact {
            path,
            sha256: written.sha256,
            size: written.size,
            commit: checkout.as_ref().map(|c| c.commit.clone()),
            shallow_fetch: checkout.as_ref().is_some_and(|c| c.shallow),
            manifest,
            stats: progress::PackStats {
                fetch_secs,
                archive_secs: began.elapsed().as_secs_f64(),
                ..fetched()
            },
        })
    }

    /// Runs the git checkout and the data downloads at the same time. If either fails, the other
    /// is stopped (and the git worker waited for) before returning, so nothing writes into the
    /// staging directory after it is removed.
    async fn fetch(
        &self,
        job: &Job,
        root: &Path,
        progress: &ProgressFn,
    ) -> Result<(Option<Checkout>, Vec<Downloaded>)> {
        let cfg = &*self.config;
        let cancel = Arc::new(AtomicBool::new(false));
        let dests = cfg.download.destinations.clone();
        let proxy = match &job.source {
            Some(src)
                if dests.is_restricted()
                    && (src.url.starts_with("http://") || src.url.starts_with("https://")) =>
            {
                let p = self
                    .proxy
                    .get_or_try_init(|| crate::egress::EgressProxy::start(dests.clone()))
                    .await
                    .map_err(io_err(
                        "start the git egress proxy on",
                        Path::new("127.0.0.1"),
                    ))?;
                Some(p.url().to_owned())
            }
            _ => None,
        };
        let git_task = job.source.clone().map(|src| {
            let opts = GitOptions {
                destinations: dests.clone(),
                proxy: proxy.clone(),
                cache_dir: cfg.cache_dir.clone(),
                scratch_dir: cfg.work_dir.clone(),
                allow_file_urls: cfg.allow_file_urls,
                timeout: cfg.git_timeout,
                max_submodule_depth: cfg.max_submodule_depth,
                cancel: Some(cancel.clone()),
            };
            let dest = root.join("code");
            let progress = progress.clone();
            let span = tracing::info_span!("git checkout", url = %src.url);
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| git::checkout(&src, &dest, &opts, &progress))
            })
        });
        let mut download_opts = cfg.download.clone();
        if download_opts.cache_dir.is_none() {
            download_opts.cache_dir = cfg.cache_dir.clone();
        }
        let data_dir = root.join("data");
        let downloads = tracing::Instrument::instrument(
            async {
                if job.data.is_empty() {
                    return Ok(Vec::new());
                }
                let client = self
                    .client
                    .get_or_try_init(|| async { fetch::client(&cfg.download) })
                    .await?;
                fetch::download_all(client, &job.data, &data_dir, &download_opts, progress).await
            },
            tracing::info_span!("downloads", files = job.data.len()),
        );
        let Some(git_task) = git_task else {
            return Ok((None, downloads.await?));
        };
        tokio::pin!(downloads);
        tokio::pin!(git_task);
        let join = |r: std::result::Result<_, tokio::task::JoinError>| {
            r.map_err(|e| Error::Internal(format!("the git task failed: {e}")))
        };
        tokio::select! {
            g = &mut git_task => {
                // On a git failure the downloads are dropped (cancelled) here.
                let checkout = join(g)??;
                Ok((Some(checkout), downloads.await?))
            }
            d = &mut downloads => match d {
                Ok(d) => Ok((Some(join(git_task.await)??), d)),
                Err(e) => {
                    cancel.store(true, Ordering::Relaxed);
                    let _ = git_task.await;
                    Err(e.into())
                }
            },
        }
    }
}

/// Where an artifact goes without an explicit path: `out_dir/<name>-<spec digest prefix>.tar.gz`.
fn default_out(cfg: &PackagerConfig, job: &Job, spec_digest: &str) -> PathBuf {
    let stem = job.name.as_deref().unwrap_or("job");
    let digest = spec_digest.trim_start_matches("sha256:");
    cfg.out_dir.join(format!("{stem}-{}.tar.gz", &digest[..12]))
}
