//! Archive stage: a byte-reproducible `.tar.gz` of a directory.
//!
//! Same tree in, same bytes out, on any machine: entries sorted by path (byte order), one fixed
//! mtime, uid/gid 0 with no user or group names, modes normalised (files 0644 or 0755 by their
//! executable bit, directories 0755, symlinks 0777 and kept as symlinks), no atime, ctime or
//! extended attributes (GNU format, long names as GNU long-name entries), and a gzip stream with
//! header mtime 0, no file name, OS byte 255, from one pinned backend (zlib-rs) at one level.
//!
//! It refuses: special files (devices, fifos, sockets) and names that are not UTF-8.
//! The output goes to a temporary file beside the destination and is renamed into place only when
//! complete, so a reader never sees a partial artifact.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{IoError, io_err};
use crate::progress::{Progress, ProgressFn};

/// The one compression level artifacts use. Changing it changes every artifact's bytes.
pub const GZIP_LEVEL: u32 = 6;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry of the archive, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the archive root, `/`-separated, no trailing slash.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Normalised mode as four octal digits, e.g. `"0644"`.
    pub mode: String,
    /// Size in bytes (0 for directories and symlinks).
    pub size: u64,
    /// sha256 of the contents (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Link target (symlinks only), exactly as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl FileEntry {
    fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0o644)
    }
}

/// Why the archive stage failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot archive {path}: {reason}")]
    Unsupported { path: String, reason: &'static str },
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Walks `root` (without following symlinks) and describes every entry, hashing every file.
/// Sorted by path. `root` itself is not an entry.
pub fn scan(root: &Path) -> Result<Vec<FileEntry>, ArchiveError> {
    let mut out = Vec::new();
    scan_dir(root, "", &mut out)?;
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

fn scan_dir(dir: &Path, rel: &str, out: &mut Vec<FileEntry>) -> Result<(), ArchiveError> {
    let rd = fs::read_dir(dir).map_err(io_err("read directory", dir))?;
    for ent in rd {
        let ent = ent.map_err(io_err("read directory", dir))?;
        let path = ent.path();
        let name = ent.file_name();
        let Some(name) = name.to_str() else {
            return Err(ArchiveError::Unsupported {
                path: path.display().to_string(),
                reason: "the name is not UTF-8",
            });
        };
        let relp = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            out.push(FileEntry {
                path: relp.clone(),
                kind: EntryKind::Dir,
                mode: "0755".into(),
                size: 0,
                sha256: None,
                target: None,
            });
            scan_dir(&path, &relp, out)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err("read link", &path))?;
            let Some(target) = target.to_str() else {
                return Err(ArchiveError::Unsupported {
                    path: relp,
                    reason: "the symlink target is not UTF-8",
                });
            };
            out.push(FileEntry {
                path: relp,
                kind: EntryKind::Symlink,
                mode: "0777".into(),
                size: 0,
                sha256: None,
                target: Some(target.to_owned()),
            });
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            let (sha256, size) = hash_file(&path)?;
            out.push(FileEntry {
                path: relp,
                kind: EntryKind::File,
                mode: if exec { "0755" } else { "0644" }.into(),
                size,
                sha256: Some(sha256),
                target: None,
            });
        } else {
            return Err(ArchiveError::Unsupported {
                path: relp,
                reason: "special files (devices, fifos, sockets) cannot be packed",
            });
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<(String, u64), ArchiveError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

/// Where an entry's contents come from when writing.
pub enum Contents<'a> {
    /// Read from `root/<path>` on disk.
    Disk,
    /// Given in memory (for files that are never written to disk, like the manifest).
    Bytes(&'a [u8]),
}

/// The archive's sha256 and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub sha256: String,
    pub size: u64,
}

/// Writes `entries` (taken from `root`, or from memory) as a deterministic `.tar.gz` at `dest`,
/// via a temporary file in the same directory renamed into place when complete.
pub fn write_tar_gz(
    root: &Path,
    entries: &[(FileEntry, Contents<'_>)],
    mtime: u64,
    dest: &Path,
    progress: &ProgressFn,
) -> Result<Written, ArchiveError> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".jobpack-artifact-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err("create a temporary file in", dir))?;
    let hashing = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(hashing, Compression::new(GZIP_LEVEL));
    let mut tar = tar::Builder::new(gz);
    let total: u64 = entries.iter().map(|(e, _)| e.size).sum();
    let mut written = 0u64;
    let mut last_report = 0u64;

    let mut sorted: Vec<&(FileEntry, Contents<'_>)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.path.as_bytes().cmp(b.0.path.as_bytes()));
    let tar_io = |e: io::Error| ArchiveError::from(io_err("write", tmp.path())(e));
    for (entry, contents) in sorted {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(entry.mode_bits());
        match entry.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", entry.path), io::empty())
                    .map_err(tar_io)?;
            }
            EntryKind::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                let target = entry.target.as_deref().unwrap_or_default();
                tar.append_link(&mut h, &entry.path, target)
                    .map_err(tar_io)?;
            }
            EntryKind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(entry.size);
                match contents {
                    Contents::Bytes(b) => {
                        tar.append_data(&mut h, &entry.path, *b).map_err(tar_io)?
                    }
                    Contents::Disk => {
                        let src = root.join(&entry.path);
                        let f = File::open(&src).map_err(io_err("open", &src))?;
                        // Exactly the size the manifest says, or an error: a file that changed
                        // since it was scanned must not produce a corrupt archive.
                        let mut limited = ExactReader {
                            inner: f,
                            left: entry.size,
                            path: &src,
                        };
                        tar.append_data(&mut h, &entry.path, &mut limited)
                            .map_err(io_err("read", &src))?;
                    }
                }
                written += entry.size;
                if written - last_report >= 8 << 20 {
                    last_report = written;
                    progress(Progress::Archive { written, total });
                }
            }
        }
    }
    let gz = tar.into_inner().map_err(tar_io)?;
    let hashing = gz.finish().map_err(tar_io)?;
    let (buf, sha256, size) = hashing.finish();
    let file = buf.into_inner().map_err(|e| tar_io(e.into_error()))?;
    file.sync_all().map_err(tar_io)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644)).map_err(tar_io)?;
    tmp.persist(dest)
        .map_err(|e| io_err("move the artifact into place at", dest)(e.error))?;
    progress(Progress::Archive {
        written: total,
        total,
    });
    Ok(Written { sha256, size })
}

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
fn link_stays_inside(path: &str, target: &[u8]) -> bool {
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

/// Writes a deterministic `.tar.gz` of everything under `root` (mtime 0) to `dest`.
pub fn tar_gz_dir(root: &Path, dest: &Path) -> Result<Written, ArchiveError> {
    let entries: Vec<_> = scan(root)?
        .into_iter()
        .map(|e| (e, Contents::Disk))
        .collect();
    write_tar_gz(root, &entries, 0, dest, &crate::progress::ignore())
}

/// Why [`tar_gz_tree`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum TreeArchiveError {
    /// The tree holds more file bytes than the caller allows in one archive.
    #[error("the directory holds more than {max} bytes of files; download single files instead")]
    TooLarge { max: u64 },
    /// The caller asked to stop (the client went away, the server is shutting down).
    #[error("stopped")]
    Stopped,
    #[error(transparent)]
    Tree(#[from] crate::tree::TreeError),
    /// Writing the output failed (typically: the receiver went away).
    #[error("cannot write the archive")]
    Write(#[source] io::Error),
}

/// Streams a `.tar.gz` of a tree that may be changing while it is read (a job's working
/// directory) into `out`: every entry is opened through [`crate::tree::Tree`] (no link followed,
/// links stored as links), each file contributes exactly the size its open file had (padded with
/// zeros if it shrinks, cut if it grows), at most `max_bytes` of file contents in all, and
/// `stop()` is asked between every 1 MiB. Returns the bytes of file contents archived.
pub fn tar_gz_tree(
    tree: &crate::tree::Tree,
    out: impl Write,
    max_bytes: u64,
    stop: &dyn Fn() -> bool,
) -> Result<u64, TreeArchiveError> {
    use crate::tree::EntryKind as K;
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(out, Compression::new(1));
    let mut tar = tar::Builder::new(gz);
    let mut total = 0u64;
    let mut failed: Option<TreeArchiveError> = None;
    let walked = tree.walk(&mut |e| {
        if stop() {
            failed = Some(TreeArchiveError::Stopped);
            return Ok(false);
        }
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let r = match e.kind {
            K::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", e.path), io::empty())
            }
            K::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                let target = String::from_utf8_lossy(&target).into_owned();
                tar.append_link(&mut h, &e.path, target)
            }
            K::File(f) => {
                total = total.saturating_add(f.size);
                if total > max_bytes {
                    failed = Some(TreeArchiveError::TooLarge { max: max_bytes });
                    return Ok(false);
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if f.mode & 0o111 != 0 { 0o755 } else { 0o644 });
                h.set_size(f.size);
                let mut r = StoppableExact {
                    inner: f.file,
                    left: f.size,
                    since_check: 0,
                    stop,
                };
                tar.append_data(&mut h, &e.path, &mut r)
            }
        };
        match r {
            Ok(()) => Ok(true),
            Err(err) => {
                failed = Some(if stop() {
                    TreeArchiveError::Stopped
                } else {
                    TreeArchiveError::Write(err)
                });
                Ok(false)
            }
        }
    });
    if let Some(f) = failed {
        return Err(f);
    }
    walked?;
    let gz = tar.into_inner().map_err(TreeArchiveError::Write)?;
    gz.finish().map_err(TreeArchiveError::Write)?;
    Ok(total)
}

/// Gives exactly `left` bytes of `inner` (zeros after an early end) and fails once `stop()` says
/// so, checked every 1 MiB.
struct StoppableExact<'a, R> {
    inner: R,
    left: u64,
    since_check: u64,
    stop: &'a dyn Fn() -> bool,
}

impl<R: Read> Read for StoppableExact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.since_check >= 1 << 20 {
            self.since_check = 0;
            if (self.stop)() {
                return Err(io::Error::other("stopped"));
            }
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        self.since_check += n as u64;
        Ok(n)
    }
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

/// Reads exactly `left` bytes, failing if the file is shorter or longer.
struct ExactReader<'a> {
    inner: File,
    left: u64,
    path: &'a Path,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "{} grew while being archived",
                    self.path.display()
                ))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being archived", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }
    fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.size)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const GOLDEN_SHA256: &str = "1decc86011fecd96f1c9c87a03c8fe51606e036d6d5d161a8a97abf18f409722";

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::create_dir_all(p.join("code/sub")).unwrap();
        fs::write(p.join("code/a.txt"), "hello\n").unwrap();
        fs::write(p.join("code/run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(p.join("code/run"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(p.join("code/sub/b"), "b").unwrap();
        fs::set_permissions(p.join("code/sub/b"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("../a.txt", p.join("code/sub/link")).unwrap();
        let long = "x".repeat(150);
        fs::write(p.join("code").join(&long), "long name").unwrap();
        d
    }

    fn pack(root: &Path, out: &Path) -> Written {
        let entries: Vec<_> = scan(root)
            .unwrap()
            .into_iter()
            .map(|e| (e, Contents::Disk))
            .collect();
        write_tar_gz(
            root,
            &entries,
            1_700_000_000,
            out,
            &crate::progress::ignore(),
        )
        .unwrap()
    }

    #[test]
    fn scan_normalises_modes_and_keeps_links() {
        let d = tree();
        let entries = scan(d.path()).unwrap();
        let get = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
        assert_eq!(get("code").kind, EntryKind::Dir);
        assert_eq!(get("code/run").mode, "0755");
        assert_eq!(get("code/sub/b").mode, "0644");
        assert_eq!(get("code/sub/link").target.as_deref(), Some("../a.txt"));
        assert_eq!(
            get("code/a.txt").sha256.as_deref(),
            Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
        );
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }

    #[test]
    fn same_tree_same_bytes_and_tar_reads_it_back() {
        let (a, b) = (tree(), tree());
        let out = tempfile::tempdir().unwrap();
        let wa = pack(a.path(), &out.path().join("a.tar.gz"));
        let wb = pack(b.path(), &out.path().join("b.tar.gz"));
        assert_eq!(wa, wb);
        let bytes = fs::read(out.path().join("a.tar.gz")).unwrap();
        assert_eq!(wa.size, bytes.len() as u64);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "gzip mtime must be 0");
        assert_eq!(bytes[9], 255, "gzip OS byte");
        assert_eq!(bytes[3] & 0x08, 0, "no file name in the gzip header");

        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            seen.push((e.path().unwrap().display().to_string(), h.mode().unwrap()));
        }
        assert!(seen.contains(&("code/run".into(), 0o755)));
        assert!(seen.contains(&("code/sub/".into(), 0o755)));
        assert!(seen.contains(&(format!("code/{}", "x".repeat(150)), 0o644)));
        // No temporary file is left beside the artifact.
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 2);
    }

    #[test]
    fn unpack_round_trips_and_refuses_hostile_entries() {
        let d = tree();
        let out = tempfile::tempdir().unwrap();
        let art = out.path().join("a.tar.gz");
        pack(d.path(), &art);
        let x = out.path().join("x");
        fs::create_dir(&x).unwrap();
        unpack(&art, &x, UnpackLimits::default()).unwrap();
        assert_eq!(fs::read_to_string(x.join("code/a.txt")).unwrap(), "hello\n");
        assert_eq!(
            fs::read_link(x.join("code/sub/link")).unwrap(),
            Path::new("../a.txt")
        );
        assert_eq!(
            fs::metadata(x.join("code/run"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );

        // Hostile archives, built by hand.
        let hostile = |build: &dyn Fn(&mut tar::Builder<Vec<u8>>)| {
            let mut b = tar::Builder::new(Vec::new());
            build(&mut b);
            let bytes = b.into_inner().unwrap();
            let p = out.path().join("h.tar");
            fs::write(&p, bytes).unwrap();
            let dest = tempfile::tempdir_in(out.path()).unwrap();
            let r = unpack(&p, dest.path(), UnpackLimits::default());
            (r, dest)
        };
        let file = |b: &mut tar::Builder<Vec<u8>>, path: &[u8], data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // Raw name bytes: the tar crate's own setters refuse "..", a hostile tool does not.
            h.as_old_mut().name[..path.len()].copy_from_slice(path);
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        let link = |b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        };
        let (r, _) = hostile(&|b| file(b, b"../escape.txt", b"x"));
        assert!(r.unwrap_err().to_string().contains("'..'"));
        assert!(!out.path().join("escape.txt").exists());
        let (r, _) = hostile(&|b| file(b, b"/etc/evil", b"x"));
        assert!(r.unwrap_err().to_string().contains("absolute"));
        let (r, _) = hostile(&|b| {
            link(b, "sub", "/tmp");
            file(b, b"sub/planted", b"x");
        });
        assert!(r.unwrap_err().to_string().contains("through a symlink"));
        assert!(!Path::new("/tmp/planted").exists());
        assert!(link_stays_inside("a/b", b"../c"));
        assert!(!link_stays_inside("a/b", b"../../c"));
        assert!(!link_stays_inside("a", b"/etc/passwd"));
        assert!(link_stays_inside("a", b"x/../y"));
        let (r, _) = hostile(&|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Char);
            h.set_size(0);
            b.append_data(&mut h, "dev", io::empty()).unwrap();
        });
        assert!(r.unwrap_err().to_string().contains("only files"));
        let (r, _) = hostile(&|b| {
            for i in 0..3 {
                file(b, format!("f{i}").as_bytes(), b"x");
            }
        });
        assert_eq!(r.unwrap(), 3);
    }

    /// The reproducibility contract across machines and versions: a fixed tree, a fixed mtime,
    /// fixed bytes. If this fails, artifact hashes changed (tar headers, gzip backend or level):
    /// that is a breaking change to announce, not a test to update in passing.
    #[test]
    fn golden_archive_bytes() {
        let d = tree();
        let out = tempfile::tempdir().unwrap();
        let w = pack(d.path(), &out.path().join("g.tar.gz"));
        assert_eq!(w.sha256, GOLDEN_SHA256, "artifact bytes changed");
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let d = tree();
        let out = tempfile::tempdir().unwrap();
        let mut entries: Vec<_> = scan(d.path())
            .unwrap()
            .into_iter()
            .map(|e| (e, Contents::Disk))
            .collect();
        // The manifest says a file is bigger than it is.
        entries
            .iter_mut()
            .find(|(e, _)| e.path == "code/a.txt")
            .unwrap()
            .0
            .size = 100;
        let dest = out.path().join("x.tar.gz");
        let err =
            write_tar_gz(d.path(), &entries, 0, &dest, &crate::progress::ignore()).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }
}
