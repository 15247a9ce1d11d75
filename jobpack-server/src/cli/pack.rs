//! `jobpack pack SPEC [-o OUT] [--json]`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use jobpack_core::{JobSpec, Packager, PackagerConfig, Progress, Stage};

#[derive(Debug, clap::Args)]
pub struct PackArgs {
    #[command(flatten)]
    store: crate::cli::runtime::StoreFlag,
    /// The job spec: a .json or .yaml file.
    spec: PathBuf,
    /// Take the code from this local directory instead of the spec's git_url (copied as is,
    /// without .git).
    #[arg(long)]
    code: Option<PathBuf>,
    /// A file to give the command as its standard input (packed as the artifact's `stdin`).
    #[arg(long)]
    stdin: Option<PathBuf>,
    /// Write the artifact's signed provenance here (an in-toto SLSA statement in a DSSE
    /// envelope, one JSON line), signed with --key.
    #[arg(long, value_name = "OUT.intoto.jsonl", requires = "key")]
    attest: Option<PathBuf>,
    /// The signing key (PKCS#8 PEM, `jobpack key generate`).
    #[arg(long, env = "JOBPACK_SIGNING_KEY")]
    key: Option<PathBuf>,
    /// Where to write the artifact [default: ./<name>-<spec digest>.tar.gz].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Print one JSON line {artifact, sha256, size, commit} instead of text, and no progress.
    #[arg(long)]
    json: bool,
    /// Keep fetched repositories and pinned data here between packs.
    #[arg(long, env = "JOBPACK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not use a cache at all.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// A directory with your own run.sh.tera and/or Dockerfile.tera.
    #[arg(long, env = "JOBPACK_TEMPLATES")]
    templates: Option<PathBuf>,
    /// Where staging directories go [default: the system temp dir].
    #[arg(long, env = "JOBPACK_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Largest data file accepted, in MiB.
    #[arg(long, default_value_t = 20 * 1024)]
    max_data_mb: u64,
    /// Seconds without progress before a download or git transfer is abandoned.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// `$XDG_CACHE_HOME/jobpack`, else `~/.cache/jobpack`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("jobpack"))
}

pub fn run(args: PackArgs) -> anyhow::Result<ExitCode> {
    let job = JobSpec::from_path(&args.spec)?.validate()?;
    let mut config = PackagerConfig {
        cache_dir: if args.no_cache {
            None
        } else {
            args.cache_dir.clone().or_else(default_cache_dir)
        },
        templates_dir: args.templates.clone(),
        git_timeout: Duration::from_secs(args.timeout),
        runtimes: Some(args.store.dir()),
        artifact_cache: true,
        ..PackagerConfig::default()
    };
    if let Some(w) = &args.work_dir {
        config.work_dir = w.clone();
    }
    config.download.max_bytes = args.max_data_mb.saturating_mul(1024 * 1024);
    config.download.idle_timeout = Duration::from_secs(args.timeout);

    let bars = Bars::new(!args.json);
    let packager = Packager::new(config)?.with_progress(bars.sink());
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let inputs = jobpack_core::PackInputs {
        code_dir: args.code.clone(),
        data_dir: None,
        stdin: args.stdin.clone(),
    };
    let artifact = rt.block_on(packager.pack_job_with(&job, &inputs, args.output.as_deref()));
    bars.finish();
    let artifact = artifact.with_context(|| format!("cannot pack {}", args.spec.display()))?;
    if let (Some(out), Some(key)) = (&args.attest, &args.key) {
        let key = jobpack_core::attest::Key::load(key)?;
        let env = packager.provenance(&artifact, &key, None);
        let line = serde_json::to_string(&env)? + "\n";
        std::fs::write(out, line).with_context(|| format!("cannot write {}", out.display()))?;
    }

    if args.json {
        let line = serde_json::json!({
            "artifact": artifact.path,
            "sha256": artifact.sha256,
            "size": artifact.size,
            "commit": artifact.commit,
        });
        println!("{line}");
    } else {
        println!("{}", artifact.path.display());
        println!("  sha256  {}", artifact.sha256);
        println!("  size    {} bytes", artifact.size);
        if let Some(c) = &artifact.commit {
            println!("  commit  {c}");
        }
        println!(
            "  files   {} (+ {} data)",
            artifact.manifest.files.len(),
            artifact.manifest.data.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress bars on stderr, drawn only when stderr is a terminal.
struct Bars {
    multi: MultiProgress,
    inner: Arc<Mutex<BarState>>,
}

#[derive(Default)]
struct BarState {
    stage: Option<ProgressBar>,
    git: Option<ProgressBar>,
    downloads: HashMap<usize, ProgressBar>,
    archive: Option<ProgressBar>,
}

impl Bars {
    fn new(enabled: bool) -> Self {
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            inner: Arc::default(),
        }
    }

    fn sink(&self) -> jobpack_core::ProgressFn {
        let multi = self.multi.clone();
        let inner = self.inner.clone();
        let bytes = ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        let spinner =
            ProgressStyle::with_template("{prefix:>10} {spinner} {msg}").expect("valid template");
        Arc::new(move |event| {
            let Ok(mut s) = inner.lock() else { return };
            match event {
                Progress::Stage { stage } => {
                    let bar = s.stage.get_or_insert_with(|| {
                        let b = multi.add(ProgressBar::new_spinner());
                        b.set_style(spinner.clone());
                        b.set_prefix("pack");
                        b.enable_steady_tick(Duration::from_millis(120));
                        b
                    });
                    bar.set_message(match stage {
                        Stage::Fetching => "fetching code and data",
                        Stage::Rendering => "rendering run.sh and Dockerfile",
                        Stage::Archiving => "writing the archive",
                        Stage::Done => "done",
                    });
                }
                Progress::GitTransfer {
                    received_objects,
                    total_objects,
                    received_bytes,
                } => {
                    let bar = s.git.get_or_insert_with(|| {
                        let b = multi.add(ProgressBar::new_spinner());
                        b.set_style(spinner.clone());
                        b.set_prefix("git");
                        b
                    });
                    bar.set_message(format!(
                        "{received_objects}/{total_objects} objects, {}",
                        indicatif::HumanBytes(received_bytes as u64)
                    ));
                    bar.tick();
                }
                Progress::Checkout { files } => {
                    if let Some(bar) = &s.git {
                        bar.set_message(format!("writing files: {files}"));
                    }
                }
                Progress::Download {
                    index,
                    path,
                    downloaded,
                    total,
                } => {
                    let bar = s.downloads.entry(index).or_insert_with(|| {
                        let b = multi.add(ProgressBar::new(total.unwrap_or(0)));
                        b.set_style(bytes.clone());
                        b.set_prefix("data");
                        b.set_message(path.clone());
                        b
                    });
                    if total.is_none() {
                        bar.set_length(downloaded);
                    }
                    bar.set_position(downloaded);
                }
                Progress::Archive { written, total } => {
                    let bar = s.archive.get_or_insert_with(|| {
                        let b = multi.add(ProgressBar::new(total));
                        b.set_style(bytes.clone());
                        b.set_prefix("archive");
                        b
                    });
                    bar.set_position(written);
                }
                Progress::ArtifactCache { hit, note } => {
                    // Said whether or not bars are drawn (a cache that cannot keep is news).
                    if hit {
                        multi.suspend(|| {
                            eprintln!("jobpack: the same bytes as an earlier pack (artifact cache)")
                        });
                    }
                    if let Some(n) = note {
                        multi.suspend(|| eprintln!("jobpack: warning: {n}"));
                    }
                }
            }
        })
    }

    fn finish(&self) {
        if let Ok(s) = self.inner.lock() {
            for b in s
                .stage
                .iter()
                .chain(s.git.iter())
                .chain(s.downloads.values())
                .chain(s.archive.iter())
            {
                b.finish_and_clear();
            }
        }
    }
}
