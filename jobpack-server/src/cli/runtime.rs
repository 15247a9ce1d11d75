//! `jobpack runtime build|import|list|info|rm|test`: the local runtime store (root file
//! systems pinned by digest, [`jobpack_core::rootfs`]), and what `pack`, `run` and `build` need
//! of it: where it is, the tree of an artifact's runtime, its image loaded into a builder.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use jobpack_core::container::{Builder, BuilderKind};
use jobpack_core::exec::{Executor, LocalExecutor, LocalExecutorConfig};
use jobpack_core::manifest::{MANIFEST_NAME, Manifest, RootFsRecord};
use jobpack_core::rootfs::{Debootstrap, ImportLimits, RuntimeFs, Store};

/// Where the runtime store is.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreFlag {
    /// The runtime store (default: /var/lib/jobpack/runtimes as root, else
    /// $XDG_DATA_HOME/jobpack/runtimes or ~/.local/share/jobpack/runtimes).
    #[arg(long = "runtimes", env = "JOBPACK_RUNTIMES", global = true)]
    pub runtimes: Option<PathBuf>,
}

impl StoreFlag {
    pub fn dir(&self) -> PathBuf {
        self.runtimes.clone().unwrap_or_else(default_store)
    }

    pub fn open(&self) -> anyhow::Result<Store> {
        let dir = self.dir();
        Store::open(&dir)
            .with_context(|| format!("cannot open the runtime store {}", dir.display()))
    }
}

fn default_store() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/jobpack/runtimes");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("jobpack/runtimes")
}

#[derive(Debug, clap::Args)]
pub struct RuntimeArgs {
    #[command(flatten)]
    store: StoreFlag,
    #[command(subcommand)]
    command: RuntimeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RuntimeCommand {
    /// Make a runtime from Debian's packages with debootstrap (root; minbase + --include).
    Build {
        name: String,
        /// The Debian suite.
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// Packages to add, comma-separated (e.g. python3,python3-pip).
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
        /// The Debian mirror (default: the one apt here uses).
        #[arg(long)]
        mirror: Option<String>,
        /// Seconds debootstrap may take.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// Import a root file system: a tarball (.tar or .tar.gz: debootstrap output, `podman
    /// export`, ...) or an OCI image layout as oci:DIR or oci:DIR:NAME.
    Import { name: String, source: String },
    /// The runtimes of the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One runtime, as JSON.
    Info { name: String },
    /// Remove a runtime (its tree and blobs go unless another name has the same digest).
    Rm { name: String },
    /// Run a probe in the sandbox on the runtime: its os-release name and python3's version.
    Test { name: String },
}

pub fn run(args: RuntimeArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    match args.command {
        RuntimeCommand::Build {
            name,
            suite,
            include,
            mirror,
            timeout,
        } => {
            if !rustix::process::geteuid().is_root() {
                bail!("debootstrap needs root");
            }
            eprintln!("jobpack: debootstrap {suite} into the runtime {name} (a minute or more)");
            let opts = Debootstrap {
                suite,
                include,
                mirror,
                timeout: Duration::from_secs(timeout),
            };
            print_made(&store.build_debootstrap(&name, &opts)?);
        }
        RuntimeCommand::Import { name, source } => {
            let rt = match source.strip_prefix("oci:") {
                Some(rest) => {
                    // oci:DIR[:NAME]: a NAME never holds '/', a directory may hold ':'.
                    let (dir, reference) = match rest.rsplit_once(':') {
                        Some((d, r)) if !r.contains('/') && Path::new(d).is_dir() => (d, Some(r)),
                        _ => (rest, None),
                    };
                    store.import_oci(&name, Path::new(dir), reference, ImportLimits::default())?
                }
                None => {
                    let f = std::fs::File::open(&source)
                        .with_context(|| format!("cannot open {source}"))?;
                    store.import_tar(
                        &name,
                        std::io::BufReader::new(f),
                        &format!("import {source}"),
                        ImportLimits::default(),
                    )?
                }
            };
            print_made(&rt);
        }
        RuntimeCommand::List { json } => {
            let all = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for rt in all {
                    println!(
                        "{}\t{}\t{} MB\t{}",
                        rt.reference(),
                        rt.os_release.as_deref().unwrap_or("-"),
                        rt.size >> 20,
                        rt.source
                    );
                }
            }
        }
        RuntimeCommand::Info { name } => {
            println!("{}", serde_json::to_string_pretty(&store.get(&name)?)?);
        }
        RuntimeCommand::Rm { name } => {
            let rt = store.remove(&name)?;
            eprintln!("jobpack: removed {}", rt.reference());
        }
        RuntimeCommand::Test { name } => {
            let rt = store.get(&name)?;
            let code = probe(&store, &rt)?;
            return Ok(ExitCode::from(code));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_made(rt: &RuntimeFs) {
    eprintln!(
        "jobpack: runtime {} ({}, {} entries, {} MB); pin it with runtime_fs: {}",
        rt.name,
        rt.os_release.as_deref().unwrap_or("no os-release"),
        rt.entries,
        rt.size >> 20,
        rt.reference()
    );
    println!("{}", rt.reference());
}

/// `jobpack runtime test`: the probe's output on stdout, its exit code.
fn probe(store: &Store, rt: &RuntimeFs) -> anyhow::Result<u8> {
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let req = store.probe_request(rt, tmp.path())?;
    let log = req.log_path.clone();
    let rt_ = tokio::runtime::Runtime::new()?;
    let outcome = rt_.block_on(async {
        let h = LocalExecutor::new(LocalExecutorConfig::default())
            .start(req)
            .await
            .context("cannot start the probe")?;
        anyhow::Ok(h.wait().await)
    })?;
    print!("{}", std::fs::read_to_string(&log).unwrap_or_default());
    Ok(crate::client::job_exit_code(
        outcome.status.as_str(),
        outcome.exit_code,
        outcome.signal,
    ))
}

/// The manifest of an unpacked artifact's directory.
fn manifest_of(dir: &Path) -> anyhow::Result<Manifest> {
    let p = dir.join(MANIFEST_NAME);
    let text = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is invalid", p.display()))
}

/// The runtime an unpacked artifact's runtime_fs names and its tree, from `store` (`None`:
/// the host's root).
pub fn tree_for(dir: &Path, store: &StoreFlag) -> anyhow::Result<Option<(RuntimeFs, PathBuf)>> {
    let RootFsRecord::Runtime { name, digest, .. } = manifest_of(dir)?.runtime_fs else {
        return Ok(None);
    };
    let s = store.open()?;
    let want = jobpack_core::rootfs::RuntimeRef {
        name,
        digest: Some(digest),
    };
    let rt = s.resolve(&want)?;
    let tree = s.tree(&rt);
    Ok(Some((rt, tree)))
}

/// Puts the image of the runtime an unpacked artifact names into the builder's store (podman,
/// buildah), tagged as its Dockerfile names it; nothing for an artifact without one.
pub fn load_image(builder: &Builder, dir: &Path, store: &StoreFlag) -> anyhow::Result<()> {
    let RootFsRecord::Runtime { name, digest, .. } = manifest_of(dir)?.runtime_fs else {
        return Ok(());
    };
    let s = store.open()?;
    let rt = s.resolve(&jobpack_core::rootfs::RuntimeRef {
        name: name.clone(),
        digest: Some(digest),
    })?;
    if builder.kind == BuilderKind::Docker {
        bail!(
            "the artifact runs on the runtime {name}: docker cannot read an OCI layout \
             directly; use podman or buildah (--builder), which jobpack loads it into"
        );
    }
    let prog = builder.kind.program();
    // Pulling from a layout names the image after the layout's path, which must be a valid
    // (lowercase) reference: pull through a link at such a path, then tag it as the Dockerfile
    // names it and drop the path's name.
    let tmp = std::env::temp_dir();
    let base = if tmp
        .to_str()
        .is_some_and(|t| !t.bytes().any(|b| b.is_ascii_uppercase()))
    {
        tmp
    } else {
        PathBuf::from("/tmp")
    };
    let link_dir = base.join(format!("jobpack-runtime-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&link_dir)
        .with_context(|| format!("cannot create {}", link_dir.display()))?;
    let _cleanup = RemoveOnDrop(link_dir.clone());
    let root = std::fs::canonicalize(s.root())?;
    std::os::unix::fs::symlink(&root, link_dir.join("layout"))?;
    let source = format!("oci:{}:{name}", link_dir.join("layout").display());
    let out = Command::new(&builder.program)
        .args(["pull", "--quiet"])
        .arg(&source)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {prog}"))?;
    if !out.status.success() {
        bail!("{prog} pull {source} failed with {}", out.status);
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let tag = format!("localhost/jobpack-runtime/{name}:latest");
    let status = Command::new(&builder.program)
        .args(["tag", &id, &tag])
        .status()
        .with_context(|| format!("cannot start {prog}"))?;
    if !status.success() {
        bail!("{prog} tag {id} {tag} failed with {status}");
    }
    let path_name = format!("localhost{}", link_dir.join("layout").display());
    let untag = Command::new(&builder.program)
        .args(["rmi", &path_name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !untag.is_ok_and(|s| s.success()) {
        eprintln!("jobpack: note: the image also keeps the name {path_name}");
    }
    eprintln!(
        "jobpack: loaded the runtime {} as {}",
        rt.reference(),
        rt.image
    );
    Ok(())
}

/// Removes a directory of this process's when dropped (on every return path).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("jobpack: cannot remove {}: {e}", self.0.display());
        }
    }
}
