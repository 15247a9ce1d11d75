//! The client subcommands: what each sends and how it prints the answer.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Api, Conn, Failure, Result, exit};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A job id or any unique prefix of one.
    id: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only jobs in this status (queued, running, completed, failed, ...).
    #[arg(long)]
    status: Option<String>,
    /// Only jobs with this name.
    #[arg(long)]
    name: Option<String>,
    /// Only the jobs of this batch (its full id).
    #[arg(long)]
    batch: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// A job id or any unique prefix of one.
    id: String,
    /// Keep following the log until the job ends (resumes after a dropped connection).
    #[arg(long, short)]
    follow: bool,
    /// Only the last N bytes (without --follow).
    #[arg(long)]
    tail: Option<u64>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// A job id or any unique prefix of one.
    id: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// A job id or any unique prefix of one.
    id: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
#[group(id = "what", multiple = false)]
pub struct DownloadArgs {
    /// A job id or any unique prefix of one.
    id: String,
    /// The packed artifact (.tar.gz build context; the default), checked against its sha256.
    #[arg(long, group = "what")]
    artifact: bool,
    /// The working directory after the run, as .tar.gz.
    #[arg(long, group = "what")]
    tarball: bool,
    /// One file of the working directory (e.g. code/out.txt).
    #[arg(long, group = "what")]
    file: Option<String>,
    /// Where to write it (`-` for stdout); default: the server's file name, here.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

pub(super) fn bytes_bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// A multipart file part streamed from disk, counted on a progress bar.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Seconds between two RFC 3339 times, as "1m05s".
fn duration(from: &Value, to: Option<&Value>) -> String {
    let t = |v: &Value| v.as_str().and_then(|s| humantime::parse_rfc3339(s).ok());
    let Some(a) = t(from) else { return "-".into() };
    let b = to.and_then(t).unwrap_or_else(std::time::SystemTime::now);
    let secs = b.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", secs as u64 / 60, secs as u64 % 60)
    } else {
        format!("{}h{:02}m", secs as u64 / 3600, secs as u64 % 3600 / 60)
    }
}

pub(super) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub async fn run_status(a: StatusArgs) -> Result<ExitCode> {
    let api = Api::new(&a.conn)?;
    let id = api.resolve(&a.id).await?;
    let j = api.get_json(&format!("/v1/jobs/{id}")).await?;
    if api.json {
        println!("{j}");
        return Ok(ExitCode::SUCCESS);
    }
    let s = |k: &str| match &j[k] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut rows = vec![
        vec!["job".into(), s("job_id")],
        vec!["name".into(), s("name")],
        vec!["status".into(), s("status")],
        vec!["exit code".into(), s("exit_code")],
        vec!["reason".into(), s("reason")],
        vec!["owner".into(), s("owner")],
        vec!["created".into(), s("created_at")],
        vec!["started".into(), s("started_at")],
        vec!["finished".into(), s("finished_at")],
    ];
    if !j["started_at"].is_null() {
        rows.push(vec![
            "run time".into(),
            duration(
                &j["started_at"],
                Some(&j["finished_at"]).filter(|v| !v.is_null()),
            ),
        ]);
    }
    rows.extend([
        vec!["commit".into(), s("commit")],
        vec!["artifact".into(), s("artifact_sha256")],
        vec!["cpu seconds".into(), s("cpu_seconds")],
    ]);
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

pub async fn run_list(a: ListArgs) -> Result<ExitCode> {
    let api = Api::new(&a.conn)?;
    let mut q = vec![format!("limit={}", a.limit)];
    for (k, v) in [
        ("status", &a.status),
        ("name", &a.name),
        ("batch_id", &a.batch),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", urlencode(v)));
        }
    }
    let l = api.get_json(&format!("/v1/jobs?{}", q.join("&"))).await?;
    if api.json {
        println!("{l}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        [
            "ID", "NAME", "STATUS", "EXIT", "OWNER", "CREATED", "DURATION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for j in l["jobs"].as_array().into_iter().flatten() {
        let id = j["job_id"].as_str().unwrap_or("");
        let fin = Some(&j["finished_at"]).filter(|v| !v.is_null());
        rows.push(vec![
            short(id).to_owned(),
            j["name"].as_str().unwrap_or("-").to_owned(),
            j["status"].as_str().unwrap_or("").to_owned(),
            j["exit_code"]
                .as_i64()
                .map_or("-".into(), |c| c.to_string()),
            j["owner"].as_str().unwrap_or("").to_owned(),
            j["created_at"]
                .as_str()
                .unwrap_or("")
                .get(..19)
                .unwrap_or("")
                .replace('T', " "),
            duration(&j["created_at"], fin),
        ]);
    }
    print!("{}", table(&rows));
    let (shown, total) = (rows.len() - 1, l["total"].as_u64().unwrap_or(0));
    if total as usize > shown {
        eprintln!("({shown} of {total}; --limit shows more)");
    }
    Ok(ExitCode::SUCCESS)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn run_logs(a: LogsArgs) -> Result<ExitCode> {
    let api = Api::new(&a.conn)?;
    let id = api.resolve(&a.id).await?;
    if a.follow {
        api.follow(&id, &mut std::io::stdout().lock()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let q = a.tail.map(|t| format!("?tail={t}")).unwrap_or_default();
    let resp = api
        .send(api.request(Method::GET, &format!("/v1/jobs/{id}/logs{q}")))
        .await?;
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    std::io::stdout().write_all(&bytes)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn run_cancel(a: CancelArgs) -> Result<ExitCode> {
    let api = Api::new(&a.conn)?;
    let id = api.resolve(&a.id).await?;
    let v: Value = api
        .send_json(api.request(Method::POST, &format!("/v1/jobs/{id}/cancel")))
        .await?;
    if api.json {
        println!("{v}");
    } else {
        println!("stopping {id}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_rm(a: RmArgs) -> Result<ExitCode> {
    let api = Api::new(&a.conn)?;
    let id = api.resolve(&a.id).await?;
    api.send(api.request(Method::DELETE, &format!("/v1/jobs/{id}")))
        .await?;
    if api.json {
        println!("{}", json!({"job_id": id, "deleted": true}));
    } else {
        println!("deleted {id}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_download(a: DownloadArgs) -> Result<ExitCode> {
    let api = Api::new(&a.conn)?;
    let id = api.resolve(&a.id).await?;
    let (path, default_name) = match (&a.file, a.tarball) {
        (Some(f), _) => (
            format!("/v1/jobs/{id}/files/{}", f.trim_start_matches('/')),
            Path::new(f)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into()),
        ),
        (None, true) => (
            format!("/v1/jobs/{id}/tarball"),
            format!("{id}-work.tar.gz"),
        ),
        (None, false) => (format!("/v1/jobs/{id}/artifact"), format!("{id}.tar.gz")),
    };
    let resp = api.send(api.request(Method::GET, &path)).await?;
    // The artifact's ETag is its sha256: check what arrives against it.
    let want_sha = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_owned());
    let bar = bytes_bar(resp.content_length(), "download");
    let to_stdout = a.output.as_deref() == Some(Path::new("-"));
    let dest = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&default_name));
    let dest = if dest.is_dir() {
        dest.join(&default_name)
    } else {
        dest
    };
    // Written to a temporary file next to the destination and renamed when complete and checked.
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = if to_stdout {
        None
    } else {
        Some(tempfile::NamedTempFile::new_in(&parent).map_err(|e| {
            Failure::new(
                exit::FAILURE,
                format!("cannot write in {}: {e}", parent.display()),
            )
        })?)
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Failure::new(exit::UNREACHABLE, format!("download cut: {e}")))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
        match tmp.as_mut() {
            Some(t) => t.write_all(&chunk)?,
            None => std::io::stdout().write_all(&chunk)?,
        }
    }
    bar.finish_and_clear();
    let sha = hex::encode(hasher.finalize());
    if let Some(want) = want_sha
        && want != sha
    {
        return Err(Failure::new(
            exit::FAILURE,
            format!("the download's sha256 is {sha}, the server announced {want}; nothing written"),
        ));
    }
    if let Some(t) = tmp {
        // A temporary file is 0600; a download is an ordinary file (0644).
        t.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", t.path().display())))?;
        t.persist(&dest)
            .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", dest.display())))?;
        if api.json {
            println!(
                "{}",
                json!({"job_id": id, "path": dest, "bytes": size, "sha256": sha})
            );
        } else {
            eprintln!("{} ({size} bytes, sha256 {sha})", dest.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
