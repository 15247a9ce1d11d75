//! `jobpack build ARTIFACT [-t TAG] [--builder docker|podman|buildah]`: builds an artifact into
//! an OCI image with whichever builder is installed, streaming the builder's output to stderr and
//! printing the image id (its config digest) on stdout. `jobpack run --container` builds the same
//! way and runs the image instead of the local sandbox.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use jobpack_core::UnpackLimits;
use jobpack_core::container::{BuildContext, Builder, BuilderKind};
use jobpack_core::exec::{Limits, NetworkPolicy};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BuilderFlag {
    Docker,
    Podman,
    Buildah,
}

impl From<BuilderFlag> for BuilderKind {
    fn from(b: BuilderFlag) -> Self {
        match b {
            BuilderFlag::Docker => BuilderKind::Docker,
            BuilderFlag::Podman => BuilderKind::Podman,
            BuilderFlag::Buildah => BuilderKind::Buildah,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// An artifact (.tar.gz) from `jobpack pack`, or an unpacked one (a directory).
    artifact: PathBuf,
    /// The image's tag (default: localhost/jobpack/NAME:SPEC-DIGEST-PREFIX).
    #[arg(short, long)]
    tag: Option<String>,
    /// The builder (default: docker if its engine answers, else podman, else buildah).
    #[arg(long, value_enum, env = "JOBPACK_BUILDER")]
    builder: Option<BuilderFlag>,
    #[command(flatten)]
    store: crate::cli::runtime::StoreFlag,
}

/// An artifact ready to build: its unpacked directory (a temporary one for a .tar.gz).
pub struct Unpacked {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn unpacked(artifact: &Path) -> anyhow::Result<Unpacked> {
    if artifact.is_dir() {
        return Ok(Unpacked {
            dir: artifact.to_path_buf(),
            _tmp: None,
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix("jobpack-build-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    jobpack_core::archive::unpack(artifact, tmp.path(), UnpackLimits::default())
        .with_context(|| format!("cannot unpack {}", artifact.display()))?;
    Ok(Unpacked {
        dir: tmp.path().to_path_buf(),
        _tmp: Some(tmp),
    })
}

/// A command's stdout sent to our stderr: stdout stays for what `jobpack` itself prints.
fn to_stderr(c: &mut Command) -> anyhow::Result<&mut Command> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned()?;
    Ok(c.stdout(Stdio::from(fd)))
}

fn status_of(c: &mut Command, what: &str) -> anyhow::Result<std::process::ExitStatus> {
    c.status().with_context(|| {
        format!(
            "cannot start {what} ({})",
            c.get_program().to_string_lossy()
        )
    })
}

/// Builds the unpacked artifact in `dir`; returns the image id.
pub fn build_image(builder: &Builder, dir: &Path, tag: Option<&str>) -> anyhow::Result<String> {
    let ctx = BuildContext::of_artifact(dir)?;
    let tag = match tag {
        Some(t) => t.to_owned(),
        None => {
            let m = &ctx.manifest;
            let name = m.spec.name.as_deref().unwrap_or("job").to_ascii_lowercase();
            let digest = m.spec_digest.trim_start_matches("sha256:");
            format!(
                "localhost/jobpack/{name}:{}",
                &digest[..12.min(digest.len())]
            )
        }
    };
    let iid = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
    eprintln!(
        "jobpack: building {tag} with {} (SOURCE_DATE_EPOCH={})",
        builder.kind.program(),
        ctx.source_date_epoch()
    );
    let mut cmd = builder.build(&ctx, &tag, iid.path());
    let status = status_of(to_stderr(&mut cmd)?, "the builder")?;
    if !status.success() {
        bail!(
            "the build failed: {} exited with {status} (its output is above)",
            builder.kind.program()
        );
    }
    let id = std::fs::read_to_string(iid.path()).context("the builder wrote no image id")?;
    Ok(id.trim().to_owned())
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let builder = Builder::detect(args.builder.map(Into::into))?;
    let art = unpacked(&args.artifact)?;
    crate::cli::runtime::load_image(&builder, &art.dir, &args.store)?;
    let id = build_image(&builder, &art.dir, args.tag.as_deref())?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// `jobpack run --container`: builds the artifact and runs the image; the container's exit code.
pub fn run_container(
    builder: &Builder,
    artifact: &Path,
    limits: &Limits,
    network: NetworkPolicy,
    store: &crate::cli::runtime::StoreFlag,
    print_outputs: bool,
) -> anyhow::Result<u8> {
    let art = unpacked(artifact)?;
    crate::cli::runtime::load_image(builder, &art.dir, store)?;
    let image = build_image(builder, &art.dir, None)?;
    let code = |s: std::process::ExitStatus| {
        use std::os::unix::process::ExitStatusExt;
        s.code()
            .map(|c| c as u8)
            .or_else(|| s.signal().map(|sig| 128 + sig as u8))
            .unwrap_or(1)
    };
    if builder.kind != BuilderKind::Buildah {
        let status = status_of(&mut builder.run(&image, limits, network), "the container")?;
        return Ok(code(status));
    }
    // buildah: a working container, the image's command in it, then the container removed.
    if limits.memory_bytes.is_some() || limits.cpu_percent.is_some() || limits.pids.is_some() {
        eprintln!(
            "jobpack: buildah runs containers without resource limits (use podman or docker)"
        );
    }
    if network == NetworkPolicy::None {
        eprintln!("jobpack: buildah's chroot isolation shares the host's network");
    }
    let out = builder
        .run(&image, limits, network)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start buildah")?;
    if !out.status.success() {
        bail!("buildah from {image} failed with {}", out.status);
    }
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let argv = image_command(builder, &image).unwrap_or_else(|| vec!["./run.sh".into()]);
    let status = status_of(&mut builder.buildah_run(&name, &argv), "the container");
    // The container's /job, read as the sandbox's job directory is.
    if print_outputs {
        match Command::new(&builder.program)
            .args(["mount", &name])
            .output()
        {
            Ok(m) if m.status.success() => {
                let root = PathBuf::from(String::from_utf8_lossy(&m.stdout).trim());
                outputs_line(&root.join("job"), true);
                let umount = Command::new(&builder.program)
                    .args(["umount", &name])
                    .stdout(Stdio::null())
                    .status();
                if let Err(e) = umount {
                    eprintln!("jobpack: buildah umount {name}: {e}");
                }
            }
            _ => eprintln!("jobpack: cannot mount the container to read its outputs"),
        }
    }
    if let Err(e) = builder.buildah_rm(&name).stdout(Stdio::null()).status() {
        eprintln!("jobpack: buildah rm {name}: {e}");
    }
    Ok(code(status?))
}

/// The image's entrypoint + command, as buildah does not run them by itself.
fn image_command(builder: &Builder, image: &str) -> Option<Vec<String>> {
    let out = Command::new(&builder.program)
        .args([
            "inspect",
            "--type",
            "image",
            "--format",
            "{{json .OCIv1.Config}}",
            image,
        ])
        .output()
        .ok()?;
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let list = |k: &str| -> Vec<String> {
        cfg[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let argv: Vec<String> = list("Entrypoint").into_iter().chain(list("Cmd")).collect();
    (!argv.is_empty()).then_some(argv)
}

/// The digest of a job directory's outputs as a receipt records them (with `print`, also as
/// `jobpack: outputs sha256:<hex>` on stderr), so a sandbox run and a container run can be
/// compared.
pub fn outputs_line(job_dir: &Path, print: bool) -> Option<String> {
    use jobpack_core::attest::{OutputBudget, outputs};
    match outputs(job_dir, OutputBudget::default()) {
        Ok(o) => {
            let d = format!("sha256:{}", o.digest);
            let partial = if o.complete {
                ""
            } else {
                " (partial: over the budget)"
            };
            if print {
                eprintln!("jobpack: outputs {d}{partial}");
            }
            Some(d)
        }
        Err(e) => {
            eprintln!("jobpack: the outputs could not be read: {e}");
            None
        }
    }
}
