//! Signed statements about what was packed: an [in-toto Statement v1] with a [SLSA provenance
//! v1] predicate, in a [DSSE] envelope signed with ed25519, in the formats other tools read (the
//! public key as PEM SubjectPublicKeyInfo, the private key as PKCS#8 PEM).
//!
//! The envelope is `{payloadType, payload (base64), signatures: [{keyid, sig (base64)}]}`; the
//! signature covers DSSE's pre-authentication encoding of the type and the payload bytes, so the
//! payload needs no canonical form. A key's id is the hex sha256 of its SubjectPublicKeyInfo DER.
//!
//! [in-toto Statement v1]: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
//! [SLSA provenance v1]: https://slsa.dev/spec/v1.0/provenance
//! [DSSE]: https://github.com/secure-systems-lab/dsse/blob/master/protocol.md

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The envelope's payload type for in-toto statements.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
/// What a jobpack pack is, for the provenance's `buildType`.
pub const BUILD_TYPE: &str = "https://github.com/jobpack/jobpack/pack/v1";

/// What went wrong with a key, an envelope or a statement.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a key: {0} (expected a PKCS#8 ed25519 private key or an SPKI public key, PEM)")]
    Key(String),
    #[error("not a DSSE envelope: {0}")]
    Envelope(String),
    #[error("no signature of key {keyid} verifies this envelope")]
    Signature { keyid: String },
    #[error("the statement is about {want}, not this file ({got})")]
    Subject { want: String, got: String },
}

pub type Result<T> = std::result::Result<T, AttestError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AttestError + '_ {
    move |source| AttestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An ed25519 signing key.
pub struct Key(ed25519_dalek::SigningKey);

impl Key {
    /// A new key from the system's random numbers.
    pub fn generate() -> Result<Key> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| AttestError::Key(format!("no random numbers: {e}")))?;
        Ok(Key(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    pub fn from_pem(pem: &str) -> Result<Key> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Key)
            .map_err(|e| AttestError::Key(e.to_string()))
    }

    /// PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String> {
        self.0
            .to_pkcs8_pem(Default::default())
            .map(|p| p.to_string())
            .map_err(|e| AttestError::Key(e.to_string()))
    }

    pub fn load(path: &Path) -> Result<Key> {
        Key::from_pem(&std::fs::read_to_string(path).map_err(io(path))?)
    }

    /// Writes the key to `path` (mode 0600, never over an existing file).
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        f.write_all(self.to_pem()?.as_bytes()).map_err(io(path))?;
        f.sync_all().map_err(io(path))
    }

    /// The key at `path`, made there first if there is none.
    pub fn load_or_create(path: &Path) -> Result<Key> {
        match Key::load(path) {
            Err(AttestError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let k = Key::generate()?;
                match k.save(path) {
                    Ok(()) => Ok(k),
                    // Made by someone else meanwhile: theirs.
                    Err(AttestError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Key::load(path)
                    }
                    Err(e) => Err(e),
                }
            }
            r => r,
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

/// An ed25519 public key.
#[derive(Clone)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn from_pem(pem: &str) -> Result<PublicKey> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map(PublicKey)
            .map_err(|e| AttestError::Key(e.to_string()))
    }

    pub fn load(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        // A private key file names its public key too.
        PublicKey::from_pem(&text).or_else(|_| Key::from_pem(&text).map(|k| k.public()))
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(Default::default())
            .unwrap_or_default()
    }

    /// The hex sha256 of the SubjectPublicKeyInfo DER.
    pub fn keyid(&self) -> String {
        let der = self
            .0
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        hex::encode(Sha256::digest(der))
    }
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub keyid: String,
    pub sig: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<Signature>,
}

/// DSSE's pre-authentication encoding: `DSSEv1 <len> <type> <len> <payload>`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// Signs `payload` as `payload_type` with `key`.
    pub fn sign(key: &Key, payload_type: &str, payload: &[u8]) -> Envelope {
        let sig = key.0.sign(&pae(payload_type, payload));
        Envelope {
            payload_type: payload_type.to_owned(),
            payload: B64.encode(payload),
            signatures: vec![Signature {
                keyid: key.public().keyid(),
                sig: B64.encode(sig.to_bytes()),
            }],
        }
    }

    /// Signs an in-toto statement.
    pub fn sign_statement(key: &Key, statement: &Value) -> Envelope {
        Envelope::sign(key, PAYLOAD_TYPE, statement.to_string().as_bytes())
    }

    /// The payload, if a signature of `key` verifies it.
    pub fn verify(&self, key: &PublicKey) -> Result<Vec<u8>> {
        let payload = B64
            .decode(&self.payload)
            .map_err(|e| AttestError::Envelope(format!("payload: {e}")))?;
        let message = pae(&self.payload_type, &payload);
        let ok = self.signatures.iter().any(|s| {
            B64.decode(&s.sig)
                .ok()
                .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
                .is_some_and(|sig| key.0.verify(&message, &sig).is_ok())
        });
        if !ok {
            return Err(AttestError::Signature { keyid: key.keyid() });
        }
        Ok(payload)
    }

    /// The verified in-toto statement.
    pub fn verified_statement(&self, key: &PublicKey) -> Result<Value> {
        if self.payload_type != PAYLOAD_TYPE {
            return Err(AttestError::Envelope(format!(
                "payloadType is {:?}, not {PAYLOAD_TYPE:?}",
                self.payload_type
            )));
        }
        let payload = self.verify(key)?;
        let v: Value = serde_json::from_slice(&payload)
            .map_err(|e| AttestError::Envelope(format!("payload: not JSON: {e}")))?;
        if v["_type"] != STATEMENT_TYPE {
            return Err(AttestError::Envelope(format!(
                "payload: not an in-toto statement ({STATEMENT_TYPE})"
            )));
        }
        Ok(v)
    }
}

/// Checks that `statement` has a subject with the sha256 `digest` (hex).
pub fn check_subject(statement: &Value, digest: &str) -> Result<()> {
    let subjects = statement["subject"].as_array().cloned().unwrap_or_default();
    if subjects
        .iter()
        .any(|s| s["digest"]["sha256"].as_str() == Some(digest))
    {
        return Ok(());
    }
    let want = subjects
        .iter()
        .filter_map(|s| s["digest"]["sha256"].as_str())
        .map(|d| format!("sha256:{d}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(AttestError::Subject {
        want,
        got: format!("sha256:{digest}"),
    })
}

/// The sha256 (hex) of a file, read in chunks.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io(path))?;
    Ok(hex::encode(h.finalize()))
}

/// The SLSA provenance of a packed artifact: its subject (file name and sha256), the spec as
/// the external parameters, and every resolved material (git commit, data files with their
/// sha256, the base image, the templates' digest), with jobpack's version as the builder.
pub fn provenance(
    artifact: &crate::Artifact,
    templates_digest: &str,
    invocation_id: Option<&str>,
) -> Value {
    let m = &artifact.manifest;
    let name = artifact
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact.tar.gz".into());
    let mut deps = Vec::new();
    if let Some(src) = &m.source {
        deps.push(json!({
            "uri": format!("git+{}@{}", src.git_url, src.commit),
            "digest": {"gitCommit": src.commit},
        }));
    }
    for d in &m.data {
        deps.push(json!({"uri": d.url, "name": d.path, "digest": {"sha256": d.sha256}}));
    }
    if let Some(b) = &m.base_image {
        let mut dep = json!({"uri": format!("oci://{}", b.reference), "name": "base_image"});
        if let Some((_, digest)) = b.reference.split_once("@sha256:") {
            dep["digest"] = json!({"sha256": digest});
        }
        deps.push(dep);
    }
    if let crate::manifest::RootFsRecord::Runtime {
        name,
        digest,
        image,
    } = &m.runtime_fs
    {
        deps.push(json!({
            "uri": format!("oci://{image}"),
            "name": format!("runtime_fs:{name}"),
            "digest": {"sha256": digest.trim_start_matches("sha256:")},
        }));
    }
    if let Some(s) = &m.stdin {
        deps.push(json!({"name": "stdin", "digest": {"sha256": s.sha256}}));
    }
    deps.push(json!({"name": "templates", "digest": {"sha256": templates_digest}}));
    let mut metadata = json!({});
    if let Some(id) = invocation_id {
        metadata["invocationId"] = json!(id);
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": artifact.sha256}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"spec": m.spec},
                "internalParameters": {"spec_digest": m.spec_digest, "mtime": m.mtime},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": format!("https://github.com/jobpack/jobpack@{}", env!("CARGO_PKG_VERSION")),
                    "version": {"jobpack": env!("CARGO_PKG_VERSION")},
                },
                "metadata": metadata,
            },
        },
    })
}

/// What the receipt's predicate type is.
pub const RECEIPT: &str = "https://github.com/jobpack/jobpack/receipt/v1";

/// What a receipt reads of a job's outputs at most: file contents hashed (a file that would pass
/// it is listed by mode and size only, `-` for its digest), and entries walked.
#[derive(Debug, Clone, Copy)]
pub struct OutputBudget {
    pub hash_bytes: u64,
    pub entries: u64,
}

impl Default for OutputBudget {
    /// 256 MiB of contents and 100,000 entries: a receipt never holds a job's end up for long.
    fn default() -> Self {
        OutputBudget {
            hash_bytes: 256 << 20,
            entries: 100_000,
        }
    }
}

/// A job's outputs as a receipt records them.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// sha256 (hex) of every entry's line, in order.
    pub digest: String,
    /// The first [`MAX_LISTED_OUTPUTS`] lines.
    pub lines: Vec<String>,
    /// Whether every entry was walked and every file hashed (else the budget ran out).
    pub complete: bool,
}

/// The most entries a receipt lists one by one (the digest covers them all).
pub const MAX_LISTED_OUTPUTS: usize = 10_000;

/// The outputs of a job: its working directory after the run, walked without following links
/// ([`crate::tree::Tree`]), each entry one line (`D path`, `L path target`, `F path mode size
/// sha256`, or `F path mode size -` past the budget) in byte order of paths.
pub fn outputs(
    dir: &Path,
    budget: OutputBudget,
) -> std::result::Result<Outputs, crate::tree::TreeError> {
    use crate::tree::{EntryKind, Tree};
    use std::io::Read;
    let tree = Tree::open(dir)?;
    let mut all = Sha256::new();
    let mut lines = Vec::new();
    let (mut hashed, mut walked, mut complete) = (0u64, 0u64, true);
    let mut keep = |line: String, all: &mut Sha256| {
        all.update(line.as_bytes());
        if lines.len() < MAX_LISTED_OUTPUTS {
            lines.push(line.trim_end().to_owned());
        }
    };
    tree.walk(&mut |e| {
        walked += 1;
        if walked > budget.entries {
            complete = false;
            return Ok(false);
        }
        match e.kind {
            EntryKind::Dir => keep(format!("D {}\n", e.path), &mut all),
            EntryKind::Link(t) => keep(
                format!("L {} {}\n", e.path, String::from_utf8_lossy(&t)),
                &mut all,
            ),
            EntryKind::File(f) if hashed.saturating_add(f.size) > budget.hash_bytes => {
                complete = false;
                keep(
                    format!("F {} {:o} {} -\n", e.path, f.mode & 0o7777, f.size),
                    &mut all,
                );
            }
            EntryKind::File(mut f) => {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f
                        .file
                        .read(&mut buf)
                        .map_err(|source| crate::tree::TreeError::Io {
                            path: e.path.clone(),
                            source,
                        })?;
                    if n == 0 {
                        break;
                    }
                    hashed += n as u64;
                    h.update(&buf[..n]);
                }
                keep(
                    format!(
                        "F {} {:o} {} {}\n",
                        e.path,
                        f.mode & 0o7777,
                        f.size,
                        hex::encode(h.finalize())
                    ),
                    &mut all,
                );
            }
        }
        Ok(true)
    })?;
    Ok(Outputs {
        digest: hex::encode(all.finalize()),
        lines,
        complete,
    })
}

/// A finished run, for its receipt.
pub struct RunRecord<'a> {
    pub job_id: &'a str,
    pub artifact_sha256: &'a str,
    pub log_sha256: &'a str,
    /// The outputs ([`outputs`]), if the working directory could be read.
    pub outputs: Option<&'a Outputs>,
    /// `sandbox`, `slurm`, `container`.
    pub backend: &'a str,
    /// The root file system it ran on (`host` when the host's).
    pub runtime: &'a str,
    pub limits: Value,
    pub network: Value,
    /// The executor's outcome (status, exit code, signal, times, peak memory, isolation).
    pub outcome: Value,
    pub started_at: Option<String>,
    pub finished_at: String,
}

/// The kernel release and CPU model of this machine (for receipts), read once per process:
/// neither changes while it runs, and `/proc/cpuinfo` is made by the kernel for every CPU at each
/// read (the server wrote it per job, ~1% of its CPU under load on 2 cores; more with more).
pub fn host_facts() -> Value {
    static FACTS: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    FACTS.get_or_init(read_host_facts).clone()
}

fn read_host_facts() -> Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    json!({"kernel": kernel, "cpu_model": cpu, "arch": std::env::consts::ARCH})
}

/// A run's receipt: an in-toto statement whose subjects are the artifact, the log and the
/// outputs, and whose predicate says how it ran and how it ended.
pub fn receipt(r: &RunRecord<'_>) -> Value {
    let mut subject = vec![
        json!({"name": "artifact", "digest": {"sha256": r.artifact_sha256}}),
        json!({"name": "log", "digest": {"sha256": r.log_sha256}}),
    ];
    if let Some(o) = r.outputs {
        subject.push(json!({"name": "outputs", "digest": {"sha256": o.digest}}));
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": RECEIPT,
        "predicate": {
            "job_id": r.job_id,
            "backend": r.backend,
            "runtime": r.runtime,
            "limits": r.limits,
            "network": r.network,
            "outcome": r.outcome,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "outputs": r.outputs.map(|o| &o.lines),
            "outputs_complete": r.outputs.map(|o| o.complete),
            "host": host_facts(),
            "jobpack": env!("CARGO_PKG_VERSION"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_verifies_with_its_key_only_and_not_once_changed() {
        let k = Key::generate().unwrap();
        let other = Key::generate().unwrap();
        let st = json!({"_type": STATEMENT_TYPE, "subject": [{"name": "a", "digest": {"sha256": "ab"}}]});
        let env = Envelope::sign_statement(&k, &st);
        assert_eq!(env.verified_statement(&k.public()).unwrap(), st);
        assert!(env.verify(&other.public()).is_err());
        let mut tampered = env.clone();
        let mut payload = B64.decode(&tampered.payload).unwrap();
        payload[5] ^= 1;
        tampered.payload = B64.encode(payload);
        assert!(tampered.verify(&k.public()).is_err());
        // Keys round-trip through PEM; the id is the SPKI's sha256.
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = Key::from_pem(&pem).unwrap();
        assert_eq!(back.public().keyid(), k.public().keyid());
        let p = PublicKey::from_pem(&k.public().to_pem()).unwrap();
        assert!(env.verify(&p).is_ok());
        assert_eq!(env.signatures[0].keyid, p.keyid());
        assert!(check_subject(&st, "ab").is_ok());
        assert!(check_subject(&st, "cd").is_err());
    }

    #[test]
    fn outputs_hash_within_their_budget_and_say_when_they_stopped() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/small"), b"abc").unwrap();
        std::fs::write(d.path().join("big"), vec![0u8; 4096]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let all = outputs(d.path(), OutputBudget::default()).unwrap();
        assert!(all.complete);
        assert_eq!(all.lines.len(), 4, "{:?}", all.lines);
        assert!(all.lines.contains(&"L link /etc/passwd".to_owned()));
        let small = OutputBudget {
            hash_bytes: 100,
            entries: 100,
        };
        let part = outputs(d.path(), small).unwrap();
        assert!(!part.complete);
        assert!(
            part.lines
                .iter()
                .any(|l| l.starts_with("F big ") && l.ends_with(" -"))
        );
        assert!(
            part.lines
                .iter()
                .any(|l| l.starts_with("F sub/small ") && !l.ends_with(" -"))
        );
        assert_ne!(part.digest, all.digest);
        let few = OutputBudget {
            hash_bytes: 1 << 20,
            entries: 2,
        };
        assert!(!outputs(d.path(), few).unwrap().complete);
    }

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
