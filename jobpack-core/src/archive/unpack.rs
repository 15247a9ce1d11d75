//! Unpacking archives without trusting them: artifacts and uploads (tar, tar.gz, zip) with no
//! absolute path, no `..`, no special file, no entry through a symlink, bounded in entries and
//! bytes; for uploads, no symlink that points outside.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Limits on what [`unpack`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_entries: u64,
    pub max_total_bytes: u64,
    /// Refuse symlinks whose target is absolute or climbs out of the archive (for uploads; an
    /// artifact's own symlinks come from git and are kept as they are).
    pub contained_links: bool,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_entries: 1_000_000,
            max_total_bytes: 64 << 30,
            contained_links: false,
        }
    }
}

/// Whether a symlink at `path` (relative, normalised) pointing at `target` stays inside the root.
pub(super) fn link_stays_inside(path: &str, target: &[u8]) -> bool {
    let Ok(target) = std::str::from_utf8(target) else {
        return false;
    };
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let mut depth: i64 = path.matches('/').count() as i64;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// Why an archive was refused while unpacking.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("archive entry {path:?} is refused: {reason}")]
    Refused { path: String, reason: &'static str },
    #[error("the archive has more than {0} entries")]
    TooManyEntries(u64),
    #[error("the archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("cannot unpack {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Unpacks a `.tar.gz` (or plain `.tar`) into `dest`, which must exist.
///
/// Refuses (and stops at) entries with absolute paths or `..`, anything but files, directories
/// and symlinks (no devices, fifos or hard links), and archives over `limits`. A symlink is created
/// as a symlink and never followed: an entry whose path goes through a symlink is refused, so a
/// hostile archive cannot write outside `dest`. Modes are kept (without setuid/setgid/sticky).
pub fn unpack(src: &Path, dest: &Path, limits: UnpackLimits) -> Result<u64, UnpackError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UnpackError::Io { path, source }
    };
    let mut f = File::open(src).map_err(io(src))?;
    let mut magic = [0u8; 2];
    let gz = f.read(&mut magic).map_err(io(src))? == 2 && magic == [0x1f, 0x8b];
    drop(f);
    let f = File::open(src).map_err(io(src))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(io::BufReader::new(f)))
    } else {
        Box::new(io::BufReader::new(f))
    };
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(false);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(false);
    let (mut entries, mut total) = (0u64, 0u64);
    for entry in ar.entries().map_err(io(src))? {
        let mut entry = entry.map_err(io(src))?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries(limits.max_entries));
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason| UnpackError::Refused {
            path: shown.clone(),
            reason,
        };
        let path = std::str::from_utf8(&raw).map_err(|_| refuse("the name is not UTF-8"))?;
        if path.trim_end_matches('/') == "." || path.is_empty() {
            continue;
        }
        let rel = checked_rel(path).map_err(refuse)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            return Err(refuse("only files, directories and symlinks are allowed"));
        }
        total = total.saturating_add(entry.size());
        if total > limits.max_total_bytes {
            return Err(UnpackError::TooLarge(limits.max_total_bytes));
        }
        let target = make_parents(dest, &rel, &shown)?;
        if kind.is_dir() {
            make_dir(&target, &shown)?;
        } else if kind.is_symlink() {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| refuse("a symlink without a target"))?;
            make_link(&rel, &link, &target, limits.contained_links, &shown)?;
            continue;
        } else {
            make_file(&mut entry, &target, &shown)?;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let mode = if kind.is_dir() {
            mode | 0o700
        } else {
            mode | 0o600
        };
        fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io(&target))?;
    }
    Ok(entries)
}

fn refused(path: &str, reason: &'static str) -> UnpackError {
    UnpackError::Refused {
        path: path.to_owned(),
        reason,
    }
}

/// An entry's path, relative and normalised; absolute paths and `..` are refused.
fn checked_rel(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') {
        return Err("absolute path");
    }
    crate::spec::normalise_rel_path(path)
        .map_err(|_| "the path is empty, has '..' or control characters")
}

/// Creates the directories above `rel` under `dest`, refusing to go through anything but a real
/// directory (so a symlink planted by an earlier entry cannot redirect a later one), and refuses
/// a target that exists already unless it is a directory. Returns the target path.
fn make_parents(dest: &Path, rel: &str, shown: &str) -> Result<PathBuf, UnpackError> {
    use crate::source::local::{ParentDirError, make_parent_dirs};
    make_parent_dirs(dest, rel).map_err(|e| match e {
        ParentDirError::NotADirectory(_) => {
            refused(shown, "its path goes through a symlink or a file")
        }
        ParentDirError::Io(e) => UnpackError::Io {
            path: e.path,
            source: e.source,
        },
    })?;
    let target = dest.join(rel);
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => Ok(target),
        Ok(_) => Err(refused(shown, "the path appears twice")),
        Err(_) => Ok(target),
    }
}

fn make_dir(target: &Path, shown: &str) -> Result<(), UnpackError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(refused(
            shown,
            "a directory would replace a file or symlink",
        )),
        Err(_) => fs::create_dir(target).map_err(|source| UnpackError::Io {
            path: target.to_path_buf(),
            source,
        }),
    }
}

fn make_link(
    rel: &str,
    link: &[u8],
    target: &Path,
    contained: bool,
    shown: &str,
) -> Result<(), UnpackError> {
    if contained && !link_stays_inside(rel, link) {
        return Err(refused(shown, "a symlink pointing outside the archive"));
    }
    if target.is_dir() {
        return Err(refused(shown, "the path appears twice"));
    }
    use std::os::unix::ffi::OsStrExt;
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(link), target).map_err(|source| {
        UnpackError::Io {
            path: target.to_path_buf(),
            source,
        }
    })
}

fn make_file(src: &mut impl Read, target: &Path, shown: &str) -> Result<(), UnpackError> {
    if target.is_dir() {
        return Err(refused(shown, "the path appears twice"));
    }
    let io = |source| UnpackError::Io {
        path: target.to_path_buf(),
        source,
    };
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(io)?;
    io::copy(src, &mut out).map_err(io)?;
    Ok(())
}

/// Whether a file name is one of the archives [`unpack_upload`] takes (`.tar`, `.tar.gz`,
/// `.tgz`, `.zip`; any case).
pub fn is_archive_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [".tar", ".tar.gz", ".tgz", ".zip"]
        .iter()
        .any(|e| n.ends_with(e))
}

/// Extracts an uploaded archive (`.zip` by its name, else `.tar`/`.tar.gz` by content) into
/// `dest` with the upload rules: no `..`, no absolute paths, no special files, no symlink that
/// points outside, at most 100,000 entries and `max_bytes` (at most 16 GiB; a service passes the
/// job's disk quota, so an archive bomb stops at what the job could have written itself).
pub fn unpack_upload(
    src: &Path,
    name: &str,
    dest: &Path,
    max_bytes: u64,
) -> Result<u64, UnpackError> {
    let limits = UnpackLimits {
        max_entries: 100_000,
        max_total_bytes: max_bytes.min(16 << 30),
        contained_links: true,
    };
    if name.to_ascii_lowercase().ends_with(".zip") {
        unpack_zip(src, dest, limits)
    } else {
        unpack(src, dest, limits)
    }
}

fn unpack_zip(src: &Path, dest: &Path, limits: UnpackLimits) -> Result<u64, UnpackError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UnpackError::Io { path, source }
    };
    let f = File::open(src).map_err(io(src))?;
    let mut z =
        zip::ZipArchive::new(io::BufReader::new(f)).map_err(|e| io(src)(io::Error::other(e)))?;
    if z.len() as u64 > limits.max_entries {
        return Err(UnpackError::TooManyEntries(limits.max_entries));
    }
    let mut total = 0u64;
    for i in 0..z.len() {
        let mut e = z.by_index(i).map_err(|e| io(src)(io::Error::other(e)))?;
        let raw = e
            .name()
            .map_err(|_| UnpackError::Refused {
                path: format!("entry {i}"),
                reason: "the name is not valid",
            })?
            .into_owned();
        let refuse = |reason| UnpackError::Refused {
            path: raw.clone(),
            reason,
        };
        let rel = checked_rel(&raw).map_err(refuse)?;
        total = total.saturating_add(e.size());
        if total > limits.max_total_bytes {
            return Err(UnpackError::TooLarge(limits.max_total_bytes));
        }
        let target = make_parents(dest, &rel, &raw)?;
        let mode = e.unix_mode().unwrap_or(0o644);
        if e.is_dir() {
            make_dir(&target, &raw)?;
        } else if mode & 0o170000 == 0o120000 {
            let mut link = Vec::new();
            e.read_to_end(&mut link).map_err(io(&target))?;
            make_link(&rel, &link, &target, true, &raw)?;
        } else if mode & 0o170000 == 0 || mode & 0o170000 == 0o100000 {
            make_file(&mut e, &target, &raw)?;
            let m = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            fs::set_permissions(&target, fs::Permissions::from_mode(m)).map_err(io(&target))?;
        } else {
            return Err(refuse("only files, directories and symlinks are allowed"));
        }
    }
    Ok(z.len() as u64)
}
