//! Writing archives: the deterministic `.tar.gz` of an artifact (fixed order, times, owners,
//! modes; a temporary file renamed into place), and the streamed `.tar.gz` of a tree a job may be
//! changing (read through `tree::Tree`).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use super::pgzip::ParGzWriter;
use super::{ArchiveError, EntryKind, FileEntry, GZIP_LEVEL, scan};
use crate::io_error::io_err;
use crate::progress::{Progress, ProgressFn};

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
    let gz = ParGzWriter::new(hashing, GZIP_LEVEL);
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
