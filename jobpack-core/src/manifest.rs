//! `jobpack.json`: what an artifact holds and where it came from.
//!
//! Written at the artifact's root. Everything in it is derived from the spec and the fetched
//! contents, never from the machine or the clock, so it is as reproducible as the archive itself.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::FileEntry;
use crate::fetch::Downloaded;
use crate::source::git::SubmoduleInfo;
use crate::spec::JobSpec;

/// The manifest format version. Bumped on any incompatible change.
pub const MANIFEST_FORMAT: u32 = 1;

/// The file name of the manifest at the artifact's root.
pub const MANIFEST_NAME: &str = "jobpack.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The jobpack version that wrote it.
    pub generator: String,
    /// The normalised spec (defaults filled in, `data_url` folded into `data`, commit resolved).
    pub spec: JobSpec,
    /// `sha256:<hex>` of the normalised spec's canonical JSON.
    pub spec_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRecord>,
    pub data: Vec<Downloaded>,
    /// The image the Dockerfile builds from, and whether it is pinned by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<BaseImageRecord>,
    /// The root file system the job runs on: the host's, or a pinned runtime's (whose image the
    /// Dockerfile builds from).
    #[serde(default)]
    pub runtime_fs: RootFsRecord,
    /// The install step and how it was chosen (detected from which files, or the spec's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::runtime::Runtime>,
    /// How the archive was compressed (backend, version, level, block size): the one input of
    /// its bytes that is not in the tree. Absent in artifacts packed before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressor: Option<String>,
    /// The mtime of every archive entry (seconds since the epoch); the Dockerfile's
    /// `SOURCE_DATE_EPOCH`.
    pub mtime: u64,
    /// The command's standard input, the artifact's `stdin` file, if the job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<StdinRecord>,
    /// Every entry of the archive except this manifest, sorted by path.
    pub files: Vec<FileEntry>,
}

/// The file name of a job's standard input at the artifact's root.
pub const STDIN_NAME: &str = "stdin";

/// A job's standard input: where it is in the artifact, its sha256 (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinRecord {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

impl StdinRecord {
    /// The record of the file at `path` (read in chunks).
    pub fn of(path: &std::path::Path) -> std::io::Result<StdinRecord> {
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        let size = std::io::copy(&mut f, &mut h)?;
        Ok(StdinRecord {
            path: STDIN_NAME.to_owned(),
            sha256: hex::encode(h.finalize()),
            size,
        })
    }
}

/// The root file system a job runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RootFsRecord {
    /// The sandbox binds the host's `/usr`, `/etc`, ...; the container runs on `base_image`.
    #[default]
    Host,
    /// A runtime ([`crate::rootfs`]): its tree in the sandbox, its image in the container.
    Runtime {
        name: String,
        /// `sha256:<hex>` of its canonical layer.
        digest: String,
        /// `localhost/jobpack-runtime/NAME@sha256:<manifest>`.
        image: String,
    },
}

impl RootFsRecord {
    /// The runtime's digest, or `host`.
    pub fn digest_or_host(&self) -> &str {
        match self {
            RootFsRecord::Host => "host",
            RootFsRecord::Runtime { digest, .. } => digest,
        }
    }
}

/// The base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImageRecord {
    pub reference: String,
    /// `name[:tag]@sha256:<digest>`: the same bytes on every build. Unpinned tags move.
    pub pinned: bool,
}

/// The code's origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub git_url: String,
    /// The full commit id.
    pub commit: String,
    /// Its committer time (seconds since the epoch).
    pub commit_time: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub submodules: Vec<SubmoduleInfo>,
}

/// `sha256:<hex>` of a spec's canonical JSON (fields in declaration order, env sorted).
pub fn spec_digest(spec: &JobSpec) -> String {
    let json = serde_json::to_vec(spec).expect("a JobSpec always serialises");
    format!("sha256:{}", hex::encode(Sha256::digest(&json)))
}

impl Manifest {
    /// The manifest as written into the artifact: pretty JSON with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a Manifest always serialises");
        v.push(b'\n');
        v
    }
}
