//! Building an unpacked artifact into an OCI image, and running that image, with whichever
//! builder is installed: `docker` (when its engine answers), `podman` or `buildah`. This module
//! only decides what to run (builder, arguments, context); the caller runs the commands, so their
//! output streams wherever the caller wants it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::exec::{Limits, NetworkPolicy};
use crate::manifest::{MANIFEST_NAME, Manifest};
use crate::runtime::RuntimeKind;

/// Which program builds and runs images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuilderKind {
    Docker,
    Podman,
    Buildah,
}

impl BuilderKind {
    pub fn program(self) -> &'static str {
        match self {
            BuilderKind::Docker => "docker",
            BuilderKind::Podman => "podman",
            BuilderKind::Buildah => "buildah",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(
        "no image builder found: install docker (with a running engine), podman or buildah, or \
         name one with --builder"
    )]
    NoBuilder,
    #[error("{0} is not installed (not on PATH)")]
    Missing(&'static str),
    #[error("{} is not an unpacked artifact: {reason}", dir.display())]
    NotAnArtifact { dir: PathBuf, reason: String },
}

/// A builder that was found on this machine.
#[derive(Debug, Clone)]
pub struct Builder {
    pub kind: BuilderKind,
    pub program: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

impl Builder {
    /// `prefer` if given (it must be installed); else docker if its engine answers, then podman,
    /// then buildah. (A `docker` client without an engine is common and useless for building.)
    pub fn detect(prefer: Option<BuilderKind>) -> Result<Builder, ContainerError> {
        if let Some(kind) = prefer {
            let program = on_path(kind.program()).ok_or(ContainerError::Missing(kind.program()))?;
            return Ok(Builder { kind, program });
        }
        if let Some(program) = on_path("docker") {
            let engine = Command::new(&program)
                .args(["version", "--format", "{{.Server.Version}}"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if engine {
                return Ok(Builder {
                    kind: BuilderKind::Docker,
                    program,
                });
            }
        }
        for kind in [BuilderKind::Podman, BuilderKind::Buildah] {
            if let Some(program) = on_path(kind.program()) {
                return Ok(Builder { kind, program });
            }
        }
        Err(ContainerError::NoBuilder)
    }

    fn command(&self) -> Command {
        Command::new(&self.program)
    }

    /// The build: `tag` the image, write its id (the config digest) to `iidfile`. Never pulls
    /// when the builder can be told so (podman, buildah): the base image must be present.
    pub fn build(&self, ctx: &BuildContext, tag: &str, iidfile: &Path) -> Command {
        let mut c = self.command();
        match self.kind {
            BuilderKind::Docker => {
                c.arg("build");
            }
            BuilderKind::Podman => {
                c.args(["build", "--pull=never"]);
            }
            BuilderKind::Buildah => {
                c.args(["bud", "--pull=never", "--isolation", "chroot"]);
            }
        }
        if self.kind != BuilderKind::Docker {
            // Every timestamp in the image (config and layers) from the artifact, so the same
            // artifact can give the same image.
            c.arg("--timestamp")
                .arg(ctx.source_date_epoch().to_string());
        }
        c.arg("--build-arg")
            .arg(format!("SOURCE_DATE_EPOCH={}", ctx.source_date_epoch()))
            .env("SOURCE_DATE_EPOCH", ctx.source_date_epoch().to_string())
            .arg("--iidfile")
            .arg(iidfile)
            .arg("-t")
            .arg(tag)
            .arg("-f")
            .arg(&ctx.dockerfile)
            .arg(&ctx.context);
        c
    }

    /// The commands that run `image` once and remove what they made: one for docker and podman,
    /// three for buildah (`from`, `run`, `rm`; the caller feeds the first's output, the
    /// container name, to the others through [`Builder::buildah_run`]).
    pub fn run(&self, image: &str, limits: &Limits, network: NetworkPolicy) -> Command {
        let mut c = self.command();
        match self.kind {
            BuilderKind::Docker | BuilderKind::Podman => {
                c.args(["run", "--rm"]);
                if network == NetworkPolicy::None {
                    c.args(["--network", "none"]);
                }
                if let Some(m) = limits.memory_bytes {
                    c.arg("--memory").arg(m.to_string());
                }
                if let Some(p) = limits.cpu_percent {
                    c.arg("--cpus").arg(format!("{:.2}", p as f64 / 100.0));
                }
                if let Some(p) = limits.pids {
                    c.arg("--pids-limit").arg(p.to_string());
                }
                c.arg(image);
            }
            BuilderKind::Buildah => {
                c.args(["from", "--pull=never", image]);
            }
        }
        c
    }

    /// buildah only: runs `argv` in working container `name` (chroot isolation: the host's
    /// network, no resource limits).
    pub fn buildah_run(&self, name: &str, argv: &[String]) -> Command {
        let mut c = self.command();
        c.args(["run", "--isolation", "chroot", name, "--"])
            .args(argv);
        c
    }

    /// buildah only: removes working container `name`.
    pub fn buildah_rm(&self, name: &str) -> Command {
        let mut c = self.command();
        c.args(["rm", name]);
        c
    }
}

/// What to build: the context directory, its Dockerfile, and the artifact's manifest.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    /// The artifact's manifest (its runtime, name, spec digest, timestamp).
    pub manifest: Manifest,
}

impl BuildContext {
    /// The artifact's timestamp (every entry's mtime), the build's `SOURCE_DATE_EPOCH`.
    pub fn source_date_epoch(&self) -> u64 {
        self.manifest.mtime
    }

    /// The build of an unpacked artifact: its root, or `code/` for a repository's own Dockerfile.
    pub fn of_artifact(dir: &Path) -> Result<BuildContext, ContainerError> {
        let not = |reason: String| ContainerError::NotAnArtifact {
            dir: dir.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(dir.join(MANIFEST_NAME))
            .map_err(|e| not(format!("cannot read {MANIFEST_NAME}: {e}")))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| not(format!("{MANIFEST_NAME} is invalid: {e}")))?;
        let own_dockerfile = m
            .runtime
            .as_ref()
            .is_some_and(|r| r.kind == RuntimeKind::Dockerfile);
        let context = if own_dockerfile {
            dir.join("code")
        } else {
            dir.to_path_buf()
        };
        Ok(BuildContext {
            context,
            dockerfile: dir.join("Dockerfile"),
            manifest: m,
        })
    }
}
