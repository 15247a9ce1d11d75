//! Runtime detection: from the files of the packed code, the install step the Dockerfile gets
//! (as repo2docker and nixpacks do), recorded in the manifest so a reader sees why.
//!
//! Precedence when several markers are present (the first wins; the others are listed as
//! ignored in the manifest):
//!
//! 1. `Dockerfile` — the repository's own, used as is (a warning says so).
//! 2. `environment.yml` / `environment.yaml` — conda (mamba when the base image has it).
//! 3. `requirements.txt` — pip.
//! 4. `pyproject.toml` — pip, installing the project itself.
//! 5. `package.json` — `npm ci` with a lockfile (`npm install` and a warning without one).
//! 6. `Cargo.toml` — `cargo build --release` (`--locked` with a `Cargo.lock`).
//!
//! `apt.txt` (Debian packages, one or more per line, `#` comments) is added to any of them but
//! the repository's own Dockerfile. The spec may choose the runtime (`runtime`) and replace the
//! install commands (`install`). Only regular files at the top of `code/` count as markers.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What kind of project the code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    Dockerfile,
    Conda,
    Python,
    Node,
    Rust,
    None,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 6] = [
        RuntimeKind::Dockerfile,
        RuntimeKind::Conda,
        RuntimeKind::Python,
        RuntimeKind::Node,
        RuntimeKind::Rust,
        RuntimeKind::None,
    ];

    /// Its name in specs, manifests and the Dockerfile's label.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Dockerfile => "dockerfile",
            RuntimeKind::Conda => "conda",
            RuntimeKind::Python => "python",
            RuntimeKind::Node => "node",
            RuntimeKind::Rust => "rust",
            RuntimeKind::None => "none",
        }
    }

    /// `auto` is `None` (detect); an unknown name is an error.
    pub fn parse(s: &str) -> Result<Option<RuntimeKind>, String> {
        if s == "auto" {
            return Ok(None);
        }
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .map(Some)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown runtime {s:?}: expected one of auto, {}",
                    names.join(", ")
                )
            })
    }
}

/// What was chosen, and why: written into the manifest and rendered into the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub kind: RuntimeKind,
    /// `detected` or `spec`.
    pub chosen_by: String,
    /// The files (in `code/`) that decided it.
    pub markers: Vec<String>,
    /// Markers that were present but not used (a lower precedence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// Debian packages from `apt.txt`, installed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apt_packages: Vec<String>,
    /// Files of `code/` copied into the image before the install step, so that its layer stays
    /// cached while they do not change. Empty with `install_before_code` false: the install needs
    /// the whole code and runs after it is copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_first: Vec<String>,
    pub install_before_code: bool,
    /// The install step's shell commands, run in `/job/code`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A marker file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct RuntimeError {
    pub file: String,
    pub message: String,
}

const CONDA: &[&str] = &["environment.yml", "environment.yaml"];
const NODE_LOCKS: &[&str] = &["package-lock.json", "npm-shrinkwrap.json"];

/// The markers in precedence order, each with the kind it means.
const MARKERS: &[(&str, RuntimeKind)] = &[
    ("Dockerfile", RuntimeKind::Dockerfile),
    ("environment.yml", RuntimeKind::Conda),
    ("environment.yaml", RuntimeKind::Conda),
    ("requirements.txt", RuntimeKind::Python),
    ("pyproject.toml", RuntimeKind::Python),
    ("package.json", RuntimeKind::Node),
    ("Cargo.toml", RuntimeKind::Rust),
];

fn is_file(code: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(code.join(name)).is_ok_and(|m| m.is_file())
}

/// Debian package names (optionally `=version`) from `apt.txt`.
fn apt_packages(code: &Path) -> Result<Vec<String>, RuntimeError> {
    if !is_file(code, "apt.txt") {
        return Ok(Vec::new());
    }
    let err = |message: String| RuntimeError {
        file: "apt.txt".into(),
        message,
    };
    let text = std::fs::read_to_string(code.join("apt.txt"))
        .map_err(|e| err(format!("cannot read it: {e}")))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for word in line.split_whitespace() {
            let (name, version) = word.split_once('=').unwrap_or((word, ""));
            let name_ok = name.len() >= 2
                && name.len() <= 128
                && name.as_bytes()[0].is_ascii_alphanumeric()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
            let version_ok = version.len() <= 128
                && version
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b));
            if !name_ok || !version_ok || (word.contains('=') && version.is_empty()) {
                return Err(err(format!(
                    "line {}: {word:?} is not a Debian package name (or name=version)",
                    n + 1
                )));
            }
            out.push(word.to_owned());
        }
    }
    Ok(out)
}

/// Decides the runtime of the code in `code` (the `code/` directory of an artifact being
/// packed): `requested` (from the spec; `None`: detect) and `install` (the spec's commands,
/// replacing the detected ones).
pub fn detect(
    code: &Path,
    requested: Option<RuntimeKind>,
    install: Option<&[String]>,
) -> Result<Runtime, RuntimeError> {
    let present: Vec<(&str, RuntimeKind)> = MARKERS
        .iter()
        .copied()
        .filter(|(f, _)| is_file(code, f))
        .collect();
    let (kind, chosen_by) = match requested {
        Some(k) => (k, "spec"),
        None => (
            present.first().map_or(RuntimeKind::None, |(_, k)| *k),
            "detected",
        ),
    };
    let mut rt = Runtime {
        kind,
        chosen_by: chosen_by.into(),
        markers: Vec::new(),
        ignored: Vec::new(),
        apt_packages: Vec::new(),
        copy_first: Vec::new(),
        install_before_code: false,
        install: Vec::new(),
        warnings: Vec::new(),
    };
    let marker = |names: &[&str]| {
        names
            .iter()
            .find(|f| is_file(code, f))
            .map(|f| f.to_string())
    };
    let missing = |what: &str| RuntimeError {
        file: what.into(),
        message: format!("the spec asks for runtime {kind:?} but the code has no {what}"),
    };
    match kind {
        RuntimeKind::Dockerfile => {
            rt.markers
                .push(marker(&["Dockerfile"]).ok_or_else(|| missing("Dockerfile"))?);
            rt.warnings.push(
                "the repository's own Dockerfile is used as is (at the artifact's root); its \
                 paths are relative to code/, so build with `-f Dockerfile code` \
                 (`jobpack build` does), and it does not get run.sh, data/ or apt.txt"
                    .into(),
            );
        }
        RuntimeKind::Conda => {
            let f = marker(CONDA).ok_or_else(|| missing("environment.yml"))?;
            rt.install.push(format!(
                "if command -v mamba >/dev/null; then mamba env update -n base -f {f}; \
                 elif command -v conda >/dev/null; then conda env update -n base -f {f}; \
                 else echo '{f} needs a base image with conda or mamba (set base_image)' >&2; \
                 exit 1; fi"
            ));
            rt.copy_first.push(f.clone());
            rt.markers.push(f);
            rt.install_before_code = true;
        }
        RuntimeKind::Python => {
            if let Some(f) = marker(&["requirements.txt"]) {
                rt.install
                    .push("python3 -m pip install --no-cache-dir -r requirements.txt".into());
                rt.copy_first.push(f.clone());
                rt.markers.push(f);
                rt.install_before_code = true;
            } else if let Some(f) = marker(&["pyproject.toml"]) {
                // Installing the project itself needs all of it.
                rt.install
                    .push("python3 -m pip install --no-cache-dir .".into());
                rt.markers.push(f);
            } else {
                return Err(missing("requirements.txt or pyproject.toml"));
            }
        }
        RuntimeKind::Node => {
            let f = marker(&["package.json"]).ok_or_else(|| missing("package.json"))?;
            rt.copy_first.push(f.clone());
            rt.markers.push(f);
            if let Some(lock) = marker(NODE_LOCKS) {
                rt.install.push("npm ci --no-audit --no-fund".into());
                rt.copy_first.push(lock.clone());
                rt.markers.push(lock);
            } else {
                rt.install.push("npm install --no-audit --no-fund".into());
                rt.warnings.push(
                    "package.json without package-lock.json: npm picks the versions at build \
                     time, so the image is not reproducible"
                        .into(),
                );
            }
            rt.install_before_code = true;
        }
        RuntimeKind::Rust => {
            let f = marker(&["Cargo.toml"]).ok_or_else(|| missing("Cargo.toml"))?;
            rt.markers.push(f);
            if let Some(lock) = marker(&["Cargo.lock"]) {
                rt.install.push("cargo build --release --locked".into());
                rt.markers.push(lock);
            } else {
                rt.install.push("cargo build --release".into());
                rt.warnings.push(
                    "Cargo.toml without Cargo.lock: cargo picks the versions at build time".into(),
                );
            }
        }
        RuntimeKind::None => {}
    }
    rt.ignored = present
        .iter()
        .map(|(f, _)| f.to_string())
        .filter(|f| !rt.markers.contains(f))
        .collect();
    if kind == RuntimeKind::Dockerfile {
        if is_file(code, "apt.txt") {
            rt.ignored.push("apt.txt".into());
        }
    } else {
        rt.apt_packages = apt_packages(code)?;
        if !rt.apt_packages.is_empty() {
            rt.markers.insert(0, "apt.txt".into());
        }
    }
    if let Some(cmds) = install {
        if kind == RuntimeKind::Dockerfile {
            return Err(RuntimeError {
                file: "Dockerfile".into(),
                message: "`install` cannot be combined with the repository's own Dockerfile; \
                          set runtime to something else or leave install out"
                    .into(),
            });
        }
        // The spec's own commands may need any file: they run after the code is copied.
        rt.install = cmds.to_vec();
        rt.copy_first.clear();
        rt.install_before_code = false;
    }
    Ok(rt)
}

/// Whether an image reference is pinned to a content digest (`name[:tag]@sha256:<64 hex>`).
pub fn is_pinned(image: &str) -> bool {
    image.rsplit_once("@sha256:").is_some_and(|(name, d)| {
        !name.is_empty() && d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (f, text) in files {
            std::fs::write(d.path().join(f), text).unwrap();
        }
        d
    }

    fn auto(files: &[(&str, &str)]) -> Runtime {
        detect(code(files).path(), None, None).unwrap()
    }

    #[test]
    fn each_marker_gives_its_install_step() {
        let r = auto(&[("requirements.txt", "numpy\n")]);
        assert_eq!(r.kind, RuntimeKind::Python);
        assert_eq!(
            r.install,
            ["python3 -m pip install --no-cache-dir -r requirements.txt"]
        );
        assert_eq!(r.copy_first, ["requirements.txt"]);
        assert!(r.install_before_code && r.chosen_by == "detected");

        let r = auto(&[("pyproject.toml", "[project]\n")]);
        assert_eq!(r.kind, RuntimeKind::Python);
        assert_eq!(r.install, ["python3 -m pip install --no-cache-dir ."]);
        assert!(!r.install_before_code && r.copy_first.is_empty());

        let r = auto(&[("environment.yml", "name: x\n")]);
        assert_eq!(r.kind, RuntimeKind::Conda);
        assert!(r.install[0].contains("mamba env update -n base -f environment.yml"));
        assert!(r.install[0].contains("needs a base image with conda or mamba"));

        let r = auto(&[("package.json", "{}"), ("package-lock.json", "{}")]);
        assert_eq!(r.kind, RuntimeKind::Node);
        assert_eq!(r.install, ["npm ci --no-audit --no-fund"]);
        assert_eq!(r.copy_first, ["package.json", "package-lock.json"]);
        assert!(r.warnings.is_empty());
        let r = auto(&[("package.json", "{}")]);
        assert_eq!(r.install, ["npm install --no-audit --no-fund"]);
        assert!(r.warnings[0].contains("not reproducible"));

        let r = auto(&[("Cargo.toml", ""), ("Cargo.lock", "")]);
        assert_eq!(r.kind, RuntimeKind::Rust);
        assert_eq!(r.install, ["cargo build --release --locked"]);
        assert_eq!(r.markers, ["Cargo.toml", "Cargo.lock"]);

        let r = auto(&[("apt.txt", "# tools\ncurl jq\nlibfoo1=1.2-3\n")]);
        assert_eq!(r.kind, RuntimeKind::None);
        assert_eq!(r.apt_packages, ["curl", "jq", "libfoo1=1.2-3"]);
        assert_eq!(r.markers, ["apt.txt"]);

        let r = auto(&[("Dockerfile", "FROM scratch\n")]);
        assert_eq!(r.kind, RuntimeKind::Dockerfile);
        assert!(r.install.is_empty() && r.warnings[0].contains("used as is"));

        let r = auto(&[("README.md", "hi")]);
        assert_eq!(r.kind, RuntimeKind::None);
        assert!(r.markers.is_empty() && r.install.is_empty());
    }

    #[test]
    fn several_markers_follow_the_documented_precedence() {
        let all = [
            ("Cargo.toml", ""),
            ("package.json", "{}"),
            ("pyproject.toml", ""),
            ("requirements.txt", ""),
            ("environment.yml", ""),
            ("apt.txt", "git\n"),
        ];
        let r = auto(&all);
        assert_eq!(r.kind, RuntimeKind::Conda);
        assert_eq!(r.markers, ["apt.txt", "environment.yml"]);
        assert_eq!(
            r.ignored,
            [
                "requirements.txt",
                "pyproject.toml",
                "package.json",
                "Cargo.toml"
            ]
        );
        assert_eq!(auto(&all[..4]).kind, RuntimeKind::Python);
        assert_eq!(auto(&all[..4]).markers, ["requirements.txt"]);
        assert_eq!(auto(&all[..2]).kind, RuntimeKind::Node);
        let mut with_dockerfile = all.to_vec();
        with_dockerfile.push(("Dockerfile", "FROM x\n"));
        let r = auto(&with_dockerfile);
        assert_eq!(r.kind, RuntimeKind::Dockerfile);
        assert!(r.apt_packages.is_empty() && r.ignored.contains(&"apt.txt".to_owned()));
    }

    #[test]
    fn the_spec_overrides_and_bad_markers_are_refused() {
        let d = code(&[("requirements.txt", ""), ("Cargo.toml", "")]);
        let r = detect(d.path(), Some(RuntimeKind::Rust), None).unwrap();
        assert_eq!((r.kind, r.chosen_by.as_str()), (RuntimeKind::Rust, "spec"));
        assert_eq!(r.ignored, ["requirements.txt"]);
        let r = detect(d.path(), Some(RuntimeKind::None), None).unwrap();
        assert!(r.install.is_empty());
        let cmds = vec!["make install".to_owned()];
        let r = detect(d.path(), None, Some(&cmds)).unwrap();
        assert_eq!(r.kind, RuntimeKind::Python);
        assert_eq!(r.install, cmds);
        assert!(!r.install_before_code && r.copy_first.is_empty());
        let e = detect(d.path(), Some(RuntimeKind::Node), None).unwrap_err();
        assert!(e.to_string().contains("no package.json"), "{e}");

        let d = code(&[("apt.txt", "curl; rm -rf /\n")]);
        let e = detect(d.path(), None, None).unwrap_err();
        assert_eq!(e.file, "apt.txt");
        assert!(e.message.contains("line 1"), "{e}");
        // A symlink is not a marker.
        let d = code(&[]);
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("requirements.txt")).unwrap();
        assert_eq!(
            detect(d.path(), None, None).unwrap().kind,
            RuntimeKind::None
        );
        assert_eq!(RuntimeKind::parse("auto"), Ok(None));
        for k in RuntimeKind::ALL {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                k.as_str(),
                "serde and as_str agree"
            );
            assert_eq!(RuntimeKind::parse(k.as_str()), Ok(Some(k)));
        }
        assert!(RuntimeKind::parse("java").is_err());
    }

    #[test]
    fn pinned_images_are_recognised() {
        let d = "a".repeat(64);
        assert!(is_pinned(&format!("debian:bookworm@sha256:{d}")));
        assert!(is_pinned(&format!("localhost/base@sha256:{d}")));
        assert!(!is_pinned("debian:bookworm"));
        assert!(!is_pinned("debian@sha256:abc"));
        assert!(!is_pinned(&format!("@sha256:{d}")));
    }
}
