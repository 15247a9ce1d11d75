//! A content-addressed cache of whole artifacts: a spec whose every input is pinned (a full
//! commit id, every data file's sha256, no uploaded files) packs to the same bytes every time, so
//! the second pack of it is a copy of the first's artifact.
//!
//! The key is the sha256 of what decides the bytes: the normalised spec (with the resolved
//! runtime), the templates' digest, jobpack's version, the archive timestamp the packager was
//! given, and the stdin's sha256. An entry is `artifacts/<key>.tar.gz` beside
//! `artifacts/<key>.json` (the [`crate::Artifact`] without its path); a hit is checked against the
//! recorded size and sha256 before it is used, so a damaged entry is packed again, never served.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::Manifest;
use crate::spec::{CommitRef, Job};

/// What an entry records besides its bytes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub sha256: String,
    pub size: u64,
    pub commit: Option<String>,
    pub manifest: Manifest,
}

/// The cache key of `job`, or `None` when one of its inputs is not pinned (then it cannot be
/// known to pack to the same bytes) or it has uploaded files.
pub(crate) fn key(
    job: &Job,
    uploads: bool,
    stdin: Option<&Path>,
    templates_digest: &str,
    source_date_epoch: Option<u64>,
) -> io::Result<Option<String>> {
    let commit_pinned = job
        .source
        .as_ref()
        .is_none_or(|s| matches!(s.commit, CommitRef::Full(_)));
    let data_pinned = job.data.iter().all(|d| d.sha256.is_some());
    // Uploaded code or data is not content the key covers (without them the code is the
    // commit's, or empty).
    if uploads || !commit_pinned || !data_pinned {
        return Ok(None);
    }
    let mut h = Sha256::new();
    let spec = serde_json::to_vec(&job.normalised_spec(None)).expect("a JobSpec serialises");
    for part in [
        b"jobpack-artifact-cache-1\0".as_slice(),
        env!("CARGO_PKG_VERSION").as_bytes(),
        b"\0",
        templates_digest.as_bytes(),
        b"\0",
        format!("{source_date_epoch:?}").as_bytes(),
        b"\0",
        &spec,
        b"\0",
    ] {
        h.update(part);
    }
    if let Some(p) = stdin {
        let mut f = fs::File::open(p)?;
        io::copy(&mut f, &mut h)?;
    }
    Ok(Some(hex::encode(h.finalize())))
}

fn paths(dir: &Path, key: &str) -> (PathBuf, PathBuf) {
    let d = dir.join("artifacts");
    (
        d.join(format!("{key}.tar.gz")),
        d.join(format!("{key}.json")),
    )
}

/// The cached artifact of `key` copied to `dest`, if there is a sound one.
pub(crate) fn take(dir: &Path, key: &str, dest: &Path) -> io::Result<Option<Entry>> {
    let (art, meta) = paths(dir, key);
    let entry: Entry = match fs::read(&meta) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(e) => e,
            Err(_) => return Ok(None),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut src = match fs::File::open(&art) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
    // Copied and hashed in one pass; a mismatch leaves `dest` as it was.
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        io::Write::write_all(&mut tmp, &buf[..n])?;
        size += n as u64;
    }
    if size != entry.size || hex::encode(h.finalize()) != entry.sha256 {
        return Ok(None);
    }
    tmp.as_file().sync_all()?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(Some(entry))
}

/// Keeps a copy of `artifact` under `key` (written aside, then renamed: a reader never sees half
/// an entry).
pub(crate) fn put(dir: &Path, key: &str, artifact: &crate::Artifact) -> io::Result<()> {
    let (art, meta) = paths(dir, key);
    let d = dir.join("artifacts");
    fs::create_dir_all(&d)?;
    let tmp = tempfile::NamedTempFile::new_in(&d)?;
    fs::copy(&artifact.path, tmp.path())?;
    tmp.persist(&art).map_err(|e| e.error)?;
    let entry = Entry {
        sha256: artifact.sha256.clone(),
        size: artifact.size,
        commit: artifact.commit.clone(),
        manifest: artifact.manifest.clone(),
    };
    let tmp = tempfile::NamedTempFile::new_in(&d)?;
    fs::write(
        tmp.path(),
        serde_json::to_vec(&entry).map_err(io::Error::other)?,
    )?;
    tmp.persist(&meta).map_err(|e| e.error)?;
    Ok(())
}
