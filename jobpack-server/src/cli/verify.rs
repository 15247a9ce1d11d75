//! `jobpack key generate` and `jobpack verify`: signing keys, and checking an artifact against
//! its signed provenance (the signature with the public key, then the artifact's bytes against
//! the statement's subject).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use jobpack_core::attest::{Envelope, Key, PublicKey, check_subject, file_sha256};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make an ed25519 signing key: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM);
    /// prints the key id.
    Generate {
        /// Where the two files go.
        #[arg(long, default_value = "jobpack-signing")]
        out: PathBuf,
    },
}

pub fn key(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Generate { out } => {
            let k = Key::generate()?;
            let (private, public) = (out.with_extension("key"), out.with_extension("pub"));
            k.save(&private)?;
            std::fs::write(&public, k.public().to_pem())
                .with_context(|| format!("cannot write {}", public.display()))?;
            println!("{}", k.public().keyid());
            eprintln!("wrote {} and {}", private.display(), public.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The artifact (.tar.gz).
    artifact: PathBuf,
    /// Its provenance: a DSSE envelope (JSON, or the first line of a .jsonl).
    #[arg(long, required_unless_present_any = ["receipt", "rerun"])]
    provenance: Option<PathBuf>,
    /// A run's receipt (`GET /v1/jobs/{id}/receipt`): its signature, and that it is about this
    /// artifact.
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// The public key (SPKI PEM; `GET /v1/keys` gives a server's).
    #[arg(long)]
    key: PathBuf,
    /// Also pack again from the materials the provenance records (its spec with the resolved
    /// commit, the data by URL and sha256, the same mtime; a fresh cache) and compare byte for
    /// byte: exit 0 only if identical, else the first path that differs.
    #[arg(long, requires = "provenance")]
    rebuild: bool,
    /// Challenge a run: run the artifact again in the local sandbox with the receipt's limits
    /// and network, and compare the log's and the outputs' digests with the receipt's, naming
    /// each output file that differs. Exit 0 only if all are equal.
    #[arg(long, value_name = "RECEIPT")]
    rerun: Option<PathBuf>,
    /// With --rerun: run without full isolation where the machine cannot provide it.
    #[arg(long)]
    permissive: bool,
    /// Where the runtime an artifact's runtime_fs names is found (for --rebuild and --rerun).
    #[command(flatten)]
    store: crate::cli::runtime::StoreFlag,
}

/// Exit code: the artifact does not match its provenance, or the signature does not verify.
pub const EXIT_MISMATCH: u8 = 1;

fn envelope(path: &std::path::Path) -> anyhow::Result<Envelope> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(first)
        .or_else(|_| serde_json::from_str(&text))
        .with_context(|| format!("{} is not a DSSE envelope", path.display()))
}

pub fn run(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let key = PublicKey::load(&a.key)?;
    let digest = file_sha256(&a.artifact)?;
    for (what, path) in [
        ("provenance", &a.provenance),
        ("receipt", &a.receipt),
        ("receipt", &a.rerun),
    ] {
        let Some(path) = path else { continue };
        let env = envelope(path)?;
        if let Err(e) = env
            .verified_statement(&key)
            .and_then(|st| check_subject(&st, &digest))
        {
            eprintln!("NOT verified ({what} {}): {e}", path.display());
            return Ok(ExitCode::from(EXIT_MISMATCH));
        }
    }
    println!(
        "verified: {} sha256:{digest}, signed by {}",
        a.artifact.display(),
        key.keyid()
    );
    if a.rebuild
        && let Some(path) = &a.provenance
    {
        let st = envelope(path)?.verified_statement(&key)?;
        let code = rebuild(&a.artifact, &digest, &st, &a.store)?;
        if code != ExitCode::SUCCESS || a.rerun.is_none() {
            return Ok(code);
        }
    }
    if let Some(path) = &a.rerun {
        let st = envelope(path)?.verified_statement(&key)?;
        return rerun(&a.artifact, &st, a.permissive, &a.store);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `artifact` again as the receipt `st` says it ran, and compares what it made.
fn rerun(
    artifact: &std::path::Path,
    st: &serde_json::Value,
    permissive: bool,
    store: &crate::cli::runtime::StoreFlag,
) -> anyhow::Result<ExitCode> {
    use jobpack_core::exec::{
        Executor, IsolationMode, Limits, LocalExecutor, LocalExecutorConfig, NetworkPolicy,
        RunRequest,
    };
    let p = &st["predicate"];
    let limits: Limits = serde_json::from_value(p["limits"].clone()).unwrap_or_default();
    let network: NetworkPolicy = serde_json::from_value(p["network"].clone()).unwrap_or_default();
    let subject = |name: &str| {
        st["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .and_then(|s| s["digest"]["sha256"].as_str().map(str::to_owned))
    };
    let tmp = tempfile::tempdir()?;
    let (work, log) = (tmp.path().join("work"), tmp.path().join("job.log"));
    let rt = tokio::runtime::Runtime::new()?;
    let outcome = rt.block_on(async {
        jobpack_core::unpack_job(artifact, &work).await?;
        let executor = LocalExecutor::new(LocalExecutorConfig {
            mode: if permissive {
                IsolationMode::Permissive
            } else {
                IsolationMode::Strict
            },
            ..LocalExecutorConfig::default()
        });
        let mut req = RunRequest::new(&work, &log);
        // The same root file system: the runtime the artifact names, which must be the one the
        // receipt says ran.
        let runtime = crate::cli::runtime::tree_for(&work, store)?;
        let ran = p["runtime"].as_str().unwrap_or("host");
        let named = runtime
            .as_ref()
            .map_or("host", |(rt, _)| rt.digest.as_str());
        req.rootfs = runtime.as_ref().map(|(_, tree)| tree.clone());
        if ran != named {
            anyhow::bail!("the receipt's run was on {ran}, this artifact names {named}");
        }
        req.limits = limits;
        req.network = network;
        req.env.insert("JOBPACK_ATTEMPT".into(), "1".into());
        let handle = executor.start(req).await?;
        anyhow::Ok(handle.wait().await)
    })?;
    let log_sha = file_sha256(&log)
        .unwrap_or_else(|_| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"")));
    let jobpack_core::attest::Outputs {
        digest: out_sha,
        lines,
        ..
    } = jobpack_core::attest::outputs(&work, jobpack_core::attest::OutputBudget::default())?;
    let mut same = true;
    if subject("log").as_deref() != Some(log_sha.as_str()) {
        same = false;
        eprintln!("differs: the log (sha256:{log_sha} now)");
    }
    if subject("outputs").as_deref() != Some(out_sha.as_str()) {
        same = false;
        // `F path mode size sha256`, `D path`, `L path target` (a link's whole line: its path and
        // target cannot be told apart when they hold spaces).
        let path_of = |l: &str| match l.split_at(l.len().min(2)) {
            ("F ", rest) => rest.rsplitn(4, ' ').nth(3).unwrap_or(rest).to_owned(),
            ("D ", rest) => rest.to_owned(),
            _ => l.to_owned(),
        };
        let before: std::collections::BTreeMap<String, String> = p["outputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .map(|l| (path_of(l), l.to_owned()))
            .collect();
        let now: std::collections::BTreeMap<String, String> =
            lines.iter().map(|l| (path_of(l), l.clone())).collect();
        for path in before
            .keys()
            .chain(now.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            match (before.get(path), now.get(path)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(_), Some(_)) => eprintln!("differs: {path}"),
                (Some(_), None) => eprintln!("missing now: {path}"),
                (None, Some(_)) => eprintln!("new now: {path}"),
                (None, None) => {}
            }
        }
    }
    if same {
        println!(
            "rerun: the same log and outputs ({}, exit code {:?})",
            outcome.status.as_str(),
            outcome.exit_code
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_MISMATCH))
    }
}

/// Packs again what `st` (a verified provenance) says `artifact` was packed from, and compares.
fn rebuild(
    artifact: &std::path::Path,
    digest: &str,
    st: &serde_json::Value,
    store: &crate::cli::runtime::StoreFlag,
) -> anyhow::Result<ExitCode> {
    use jobpack_core::{JobSpec, PackInputs, Packager, PackagerConfig};
    let def = &st["predicate"]["buildDefinition"];
    let spec: JobSpec = serde_json::from_value(def["externalParameters"]["spec"].clone())
        .context("the provenance's spec is not a job spec")?;
    let job = spec.validate()?;
    let tmp = tempfile::tempdir()?;
    let deps = def["resolvedDependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let recorded = |name: &str| {
        deps.iter()
            .find(|d| d["name"] == name)
            .and_then(|d| d["digest"]["sha256"].as_str().map(str::to_owned))
    };
    // The standard input is the submitter's, not fetched: taken from the artifact, checked
    // against the recorded digest.
    let stdin = match recorded("stdin") {
        None => None,
        Some(want) => {
            let bytes = jobpack_core::archive::read_entry(
                artifact,
                jobpack_core::manifest::STDIN_NAME,
                u64::MAX,
            )?
            .context("the provenance records a stdin the artifact does not hold")?;
            let got = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            if got != want {
                eprintln!("NOT rebuilt: the artifact's stdin is sha256:{got}, not sha256:{want}");
                return Ok(ExitCode::from(EXIT_MISMATCH));
            }
            let p = tmp.path().join("stdin");
            std::fs::write(&p, bytes)?;
            Some(p)
        }
    };
    let config = PackagerConfig {
        cache_dir: Some(tmp.path().join("cache")),
        work_dir: tmp.path().join("work"),
        source_date_epoch: def["internalParameters"]["mtime"].as_u64(),
        runtimes: Some(store.dir()),
        ..PackagerConfig::default()
    };
    let packager = Packager::new(config)?;
    if let Some(t) = recorded("templates")
        && t != packager.templates_digest()
    {
        eprintln!(
            "NOT rebuilt: the artifact was rendered from other templates (sha256:{t}, these are \
             sha256:{})",
            packager.templates_digest()
        );
        return Ok(ExitCode::from(EXIT_MISMATCH));
    }
    let out = tmp.path().join("rebuilt.tar.gz");
    let inputs = PackInputs {
        stdin,
        ..PackInputs::default()
    };
    let rt = tokio::runtime::Runtime::new()?;
    let again = rt
        .block_on(packager.pack_job_with(&job, &inputs, Some(&out)))
        .context("cannot pack the recorded materials again")?;
    if again.sha256 == digest {
        println!("rebuilt: identical (sha256:{digest})");
        return Ok(ExitCode::SUCCESS);
    }
    let (a, b) = (
        jobpack_core::archive::entry_digests(artifact)?,
        jobpack_core::archive::entry_digests(&out)?,
    );
    match jobpack_core::archive::first_difference(&a, &b) {
        Some(p) => eprintln!("NOT rebuilt: the artifacts first differ at {p}"),
        None => eprintln!(
            "NOT rebuilt: sha256:{} instead of sha256:{digest} (the entries are equal; the \
             compression differs)",
            again.sha256
        ),
    }
    Ok(ExitCode::from(EXIT_MISMATCH))
}
