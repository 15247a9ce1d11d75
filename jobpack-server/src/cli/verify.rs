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
    #[arg(long, required_unless_present = "receipt")]
    provenance: Option<PathBuf>,
    /// A run's receipt (`GET /v1/jobs/{id}/receipt`): its signature, and that it is about this
    /// artifact.
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// The public key (SPKI PEM; `GET /v1/keys` gives a server's).
    #[arg(long)]
    key: PathBuf,
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
    for (what, path) in [("provenance", &a.provenance), ("receipt", &a.receipt)] {
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
    Ok(ExitCode::SUCCESS)
}
