//! `jobpack submit`: a spec, a directory or an archive of code (packed and uploaded), or a bare
//! command after `--`; with `--follow`, the log until the job ends and its exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use super::cmds::bytes_bar;
use super::{Api, Conn, Failure, Result, exit, job_exit_code};

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// A spec (.json/.yaml); a directory of code (its spec from DIR/jobpack.yaml, .yml or .json,
    /// or --spec); or an archive of code (.tar, .tar.gz, .tgz, .zip; with --spec or --command).
    /// Not needed with a bare command after `--`.
    #[arg(required_unless_present = "argv")]
    input: Option<PathBuf>,
    /// A bare command and its arguments, run as they are (no spec, no code):
    /// `jobpack submit -- python3 -c 'print(1)'`.
    #[arg(last = true)]
    argv: Vec<String>,
    /// The spec to use with a directory or an archive.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// The command (instead of, or over, the spec's).
    #[arg(long)]
    command: Option<String>,
    /// The job's name (over the spec's).
    #[arg(long)]
    name: Option<String>,
    /// Follow the log until the job ends, and exit with the job's exit code.
    #[arg(long, short)]
    follow: bool,
    /// Pack only; do not run.
    #[arg(long)]
    no_run: bool,
    #[command(flatten)]
    limits: super::LimitFlags,
    /// Give the job the host's network (default: none).
    #[arg(long)]
    network_host: bool,
    /// Secret environment variables (NAME=VALUE), masked in logs and answers; repeatable.
    #[arg(long = "secret-env", value_name = "NAME=VALUE")]
    secret_env: Vec<String>,
    /// A file given to the command as its standard input (any bytes; `-`: this one's stdin).
    #[arg(long, value_name = "FILE")]
    stdin: Option<PathBuf>,
    /// Run up to this many times in all while it ends failed, timed_out or oom_killed.
    #[arg(long, value_name = "N")]
    retry: Option<u32>,
    /// Seconds before the second run (each next waits twice as long).
    #[arg(long, value_name = "SECS", requires = "retry")]
    retry_backoff: Option<f64>,
    /// The statuses retried (comma-separated: failed, timed_out, oom_killed, limit_exceeded).
    #[arg(long, value_name = "STATUS", requires = "retry", value_delimiter = ',')]
    retry_on: Vec<String>,
    /// A URL notified (signed, Standard Webhooks) when the job ends.
    #[arg(long, value_name = "URL")]
    callback_url: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

fn parse_pairs(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    Failure::new(
                        exit::BAD_INPUT,
                        format!("{flag} wants NAME=VALUE, got {kv:?}"),
                    )
                })
        })
        .collect()
}

fn read_spec(path: &Path) -> Result<Value> {
    let spec = jobpack_core::JobSpec::from_path(path)
        .map_err(|e| Failure::new(exit::BAD_INPUT, format!("{}: {e}", path.display())))?;
    serde_json::to_value(&spec).map_err(|e| Failure::new(exit::FAILURE, e.to_string()))
}

fn is_archive(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| jobpack_core::archive::is_archive_name(&n.to_string_lossy()))
}

/// A progress bar for `len` bytes on a terminal; hidden otherwise.
async fn file_part(path: &Path, name: &str) -> Result<reqwest::multipart::Part> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Failure::new(exit::BAD_INPUT, format!("{}: {e}", path.display())))?;
    let len = f.metadata().await?.len();
    let bar = bytes_bar(Some(len), "upload");
    let stream = futures_util::stream::unfold((f, bar), |(mut f, bar)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => {
                bar.finish_and_clear();
                None
            }
            Ok(n) => {
                buf.truncate(n);
                bar.inc(n as u64);
                Some((Ok::<_, std::io::Error>(buf), (f, bar)))
            }
            Err(e) => Some((Err(e), (f, bar))),
        }
    });
    Ok(
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
            .file_name(name.to_owned()),
    )
}

pub async fn run_submit(a: SubmitArgs) -> Result<ExitCode> {
    let api = Api::new(&a.conn)?;
    let Some(input) = &a.input else {
        return submit_body(&api, &a, json!({"command": a.argv}), None).await;
    };
    if !a.argv.is_empty() {
        return Err(Failure::new(
            exit::BAD_INPUT,
            "give a spec, a directory or an archive, or a command after --, not both",
        ));
    }
    let meta = std::fs::metadata(input)
        .map_err(|e| Failure::new(exit::BAD_INPUT, format!("{}: {e}", input.display())))?;
    // The spec, and the code to upload (a directory is packed into a .tar.gz first).
    let tmp = tempfile::tempdir()?;
    let (spec_path, upload): (Option<PathBuf>, Option<PathBuf>) = if meta.is_dir() {
        let found = ["jobpack.yaml", "jobpack.yml", "jobpack.json"]
            .iter()
            .map(|n| input.join(n))
            .find(|p| p.is_file());
        let archive = tmp.path().join("code.tar.gz");
        let (dir, out) = (input.clone(), archive.clone());
        tokio::task::spawn_blocking(move || jobpack_core::archive::tar_gz_dir(&dir, &out))
            .await
            .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?
            .map_err(|e| Failure::new(exit::BAD_INPUT, format!("{}: {e}", input.display())))?;
        (a.spec.clone().or(found), Some(archive))
    } else if is_archive(input) {
        (a.spec.clone(), Some(input.clone()))
    } else {
        (Some(input.clone()), None)
    };
    let body = match &spec_path {
        Some(p) => read_spec(p)?,
        None if a.command.is_some() => json!({}),
        None => {
            return Err(Failure::new(
                exit::BAD_INPUT,
                format!(
                    "{} needs a spec: --spec FILE, --command CMD, or a jobpack.yaml in the directory",
                    input.display()
                ),
            ));
        }
    };
    submit_body(&api, &a, body, upload).await
}

/// Submits `body` (with the flags' name, limits, network and secrets; `upload`: an archive of
/// code), then prints the id or follows the job.
async fn submit_body(
    api: &Api,
    a: &SubmitArgs,
    mut body: Value,
    upload: Option<PathBuf>,
) -> Result<ExitCode> {
    let obj = body
        .as_object_mut()
        .ok_or_else(|| Failure::new(exit::BAD_INPUT, "the spec is not an object"))?;
    if let Some(c) = &a.command {
        obj.insert("command".into(), json!(c));
    }
    if let Some(n) = &a.name {
        obj.insert("name".into(), json!(n));
    }
    if a.no_run {
        obj.insert("run".into(), json!(false));
    }
    let mut limits = serde_json::Map::new();
    let l = &a.limits;
    for (k, v) in [
        ("timeout", l.timeout.map(|t| json!(t))),
        ("memory_bytes", l.memory_bytes().map(|m| json!(m))),
        ("cpu_percent", l.cpu.map(|c| json!(c))),
        ("pids", l.pids.map(|p| json!(p))),
    ] {
        if let Some(v) = v {
            limits.insert(k.into(), v);
        }
    }
    if !limits.is_empty() {
        obj.insert("limits".into(), Value::Object(limits));
    }
    if a.network_host {
        obj.insert("network".into(), json!("host"));
    }
    let secrets = parse_pairs(&a.secret_env, "--secret-env")?;
    if !secrets.is_empty() {
        obj.insert("secret_env".into(), json!(secrets));
    }
    if let Some(n) = a.retry {
        let mut r = json!({"max_attempts": n});
        if let Some(b) = a.retry_backoff {
            r["backoff_secs"] = json!(b);
        }
        if !a.retry_on.is_empty() {
            r["on"] = json!(a.retry_on);
        }
        obj.insert("retry".into(), r);
    }
    if let Some(u) = &a.callback_url {
        obj.insert("callback_url".into(), json!(u));
    }
    // Standard input from a file (or ours), uploaded as the `stdin` part.
    let stdin_file = match &a.stdin {
        Some(p) if p.as_os_str() == "-" => {
            let f = tmp_stdin()?;
            Some((f.path().to_path_buf(), Some(f)))
        }
        Some(p) => Some((p.clone(), None)),
        None => None,
    };

    let req = api.request(Method::POST, "/v1/jobs");
    let req = if upload.is_none() && stdin_file.is_none() {
        req.json(&body)
    } else {
        let mut form = reqwest::multipart::Form::new().text("spec", body.to_string());
        if let Some(archive) = upload {
            let name = archive
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "code.tar.gz".into());
            form = form.part("archive", file_part(&archive, &name).await?);
        }
        if let Some((path, _keep)) = &stdin_file {
            form = form.part("stdin", file_part(path, "stdin").await?);
        }
        req.multipart(form)
    };
    let created: Value = api.send_json(req).await?;
    let id = created["job_id"].as_str().unwrap_or_default().to_owned();
    if !a.follow {
        if api.json {
            println!("{created}");
        } else {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("submitted {id}");
    let (status, code) = if api.json {
        api.follow(&id, &mut std::io::sink()).await?
    } else {
        api.follow(&id, &mut std::io::stdout().lock()).await?
    };
    let job = api.get_json(&format!("/v1/jobs/{id}")).await?;
    if api.json {
        println!("{job}");
    } else {
        let reason = job["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        eprintln!(
            "job {id} {status}{}{reason}",
            code.map(|c| format!(" (exit code {c})"))
                .unwrap_or_default()
        );
    }
    let signal = job["signal"].as_i64().map(|s| s as i32);
    Ok(ExitCode::from(job_exit_code(&status, code, signal)))
}

/// This process's standard input, spooled to a temporary file (for `--stdin -`).
fn tmp_stdin() -> Result<tempfile::NamedTempFile> {
    let mut f = tempfile::NamedTempFile::new()?;
    std::io::copy(&mut std::io::stdin().lock(), &mut f)?;
    Ok(f)
}
