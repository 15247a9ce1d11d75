//! Reading a directory tree that someone else may be changing while we read it: a job's working
//! directory, which the job writes while the server (root) serves files from it.
//!
//! Every file is opened relative to a handle of the tree's root (or of a directory opened through
//! it), never by a path string that could be checked and then swapped: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or, on kernels without
//! `openat2` (before 5.6), one `openat(O_NOFOLLOW)` per path component. A symlink anywhere on the
//! way is refused (`ELOOP`), `..` cannot climb out, a FIFO or device is never opened for reading
//! (`O_NONBLOCK`, then `fstat` of the open file decides), and the size and mode of a file are those
//! of the file actually opened. A link inside the tree is reported as a link (its target text),
//! never followed.
//!
//! What this refuses to do: follow any symlink, even one that stays inside the tree.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Why a file of a tree could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Nothing is at that path.
    #[error("{path:?} does not exist")]
    NotFound { path: String },
    /// The path goes through or ends at a symlink (or tries to leave the tree).
    #[error("{path:?} goes through a symbolic link; links are never followed")]
    Link { path: String },
    /// The path is not a regular file (a directory, FIFO, socket or device).
    #[error("{path:?} is not a regular file")]
    NotAFile { path: String },
    /// The path is not a valid relative path.
    #[error("{path:?} is not a valid path inside the tree: {why}")]
    BadPath { path: String, why: String },
    /// Directories nest deeper than [`MAX_DEPTH`].
    #[error("{path:?} is nested more than {MAX_DEPTH} directories deep")]
    TooDeep { path: String },
    #[error("cannot read {path:?}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl TreeError {
    fn from_errno(path: &str, e: rustix::io::Errno) -> TreeError {
        let path = path.to_owned();
        match e {
            rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => TreeError::NotFound { path },
            rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => TreeError::Link { path },
            e => TreeError::Io {
                path,
                source: e.into(),
            },
        }
    }
}

/// The open root of a tree.
#[derive(Debug)]
pub struct Tree {
    root: OwnedFd,
    path: PathBuf,
}

/// A regular file opened inside a tree, with its size and mode taken from the open file.
#[derive(Debug)]
pub struct TreeFile {
    pub file: File,
    pub size: u64,
    pub mode: u32,
}

/// What one entry of a walk is.
#[derive(Debug)]
pub enum EntryKind {
    Dir,
    /// A regular file, opened.
    File(TreeFile),
    /// A symlink and its target text (not followed).
    Link(Vec<u8>),
}

/// One entry of [`Tree::walk`], in byte order of paths, parents before children.
#[derive(Debug)]
pub struct Entry {
    /// The path relative to the root, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
}

/// How deep a walk goes (each level holds one open directory).
pub const MAX_DEPTH: usize = 256;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

impl Tree {
    /// Opens the root of a tree. `path` itself is trusted (made by the caller); only what is
    /// under it is not. A symlink at `path` is refused.
    pub fn open(path: &Path) -> Result<Tree, TreeError> {
        let shown = path.display().to_string();
        let root = rustix::fs::open(path, DIR_FLAGS, Mode::empty())
            .map_err(|e| TreeError::from_errno(&shown, e))?;
        Ok(Tree {
            root,
            path: path.to_path_buf(),
        })
    }

    /// The path the tree was opened at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file at `rel` (a relative path; `.` components are ignored, `..` and
    /// links are refused).
    pub fn open_file(&self, rel: &str) -> Result<TreeFile, TreeError> {
        let clean = check_rel(rel)?;
        let fd = open_beneath(self.root.as_fd(), &clean, FILE_FLAGS)
            .map_err(|e| TreeError::from_errno(rel, e))?;
        regular(fd, rel)
    }

    /// Visits every entry of the tree (not the root itself), in byte order of paths, without
    /// following any link. `visit` returns `false` to stop the walk early.
    pub fn walk(
        &self,
        visit: &mut dyn FnMut(Entry) -> Result<bool, TreeError>,
    ) -> Result<(), TreeError> {
        walk_dir(self.root.as_fd(), "", 0, visit).map(drop)
    }
}

impl Tree {
    /// Copies the tree into `dst`, which must not exist yet (it is made): directories, regular
    /// files (their bytes and permission bits, never set-id) and symbolic links (as links, never
    /// followed). Names that are not UTF-8, FIFOs, sockets and devices are left out. Returns the
    /// bytes copied.
    pub fn copy_to(&self, dst: &Path) -> Result<u64, TreeError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let shown = dst.display().to_string();
        let io = |path: &str| {
            let path = path.to_owned();
            move |source| TreeError::Io { path, source }
        };
        std::fs::create_dir(dst).map_err(io(&shown))?;
        let mut bytes = 0u64;
        self.walk(&mut |e| {
            let to = dst.join(&e.path);
            match e.kind {
                EntryKind::Dir => std::fs::create_dir(&to).map_err(io(&e.path))?,
                EntryKind::Link(target) => {
                    use std::os::unix::ffi::OsStrExt;
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &to)
                        .map_err(io(&e.path))?
                }
                EntryKind::File(mut f) => {
                    let mut out = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&to)
                        .map_err(io(&e.path))?;
                    bytes += std::io::copy(&mut f.file, &mut out).map_err(io(&e.path))?;
                    out.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o777))
                        .map_err(io(&e.path))?;
                }
            }
            Ok(true)
        })?;
        Ok(bytes)
    }
}

/// What a tree takes on disk (see [`Tree::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Allocated bytes (st_blocks × 512): a sparse file counts what it really takes.
    pub bytes: u64,
    /// Files, directories and links.
    pub entries: u64,
}

impl Tree {
    /// Measures the tree with `fstatat` only (no file is opened), stopping early once `bytes`
    /// passes `stop_bytes` or `entries` passes `stop_entries`: the answer is then just "more".
    pub fn usage(&self, stop_bytes: u64, stop_entries: u64) -> Result<Usage, TreeError> {
        let mut u = Usage::default();
        du_dir(self.root.as_fd(), ".", 0, &mut u, stop_bytes, stop_entries)?;
        Ok(u)
    }
}

fn du_dir(
    dir: std::os::fd::BorrowedFd<'_>,
    shown: &str,
    depth: usize,
    u: &mut Usage,
    stop_bytes: u64,
    stop_entries: u64,
) -> Result<(), TreeError> {
    if depth > MAX_DEPTH {
        return Err(TreeError::TooDeep {
            path: shown.to_owned(),
        });
    }
    let reader = rustix::fs::Dir::read_from(dir).map_err(|e| TreeError::from_errno(shown, e))?;
    for entry in reader {
        let entry = entry.map_err(|e| TreeError::from_errno(shown, e))?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(TreeError::from_errno(shown, e)),
        };
        u.entries += 1;
        u.bytes = u
            .bytes
            .saturating_add((st.st_blocks as u64).saturating_mul(512));
        if u.bytes > stop_bytes || u.entries > stop_entries {
            return Ok(());
        }
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let fd = match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(
                    rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::NOENT,
                ) => {
                    continue;
                }
                Err(e) => return Err(TreeError::from_errno(shown, e)),
            };
            du_dir(fd.as_fd(), shown, depth + 1, u, stop_bytes, stop_entries)?;
            if u.bytes > stop_bytes || u.entries > stop_entries {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn regular(fd: OwnedFd, rel: &str) -> Result<TreeFile, TreeError> {
    let st = rustix::fs::fstat(&fd).map_err(|e| TreeError::from_errno(rel, e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(TreeError::NotAFile {
            path: rel.to_owned(),
        });
    }
    Ok(TreeFile {
        file: File::from(fd),
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
    })
}

/// `rel` as `/`-joined normal components.
fn check_rel(rel: &str) -> Result<String, TreeError> {
    let bad = |why: &str| TreeError::BadPath {
        path: rel.to_owned(),
        why: why.to_owned(),
    };
    if rel.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    if rel.starts_with('/') {
        return Err(bad("it is absolute"));
    }
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(bad("it contains '..'"));
    }
    if parts.is_empty() {
        return Err(bad("it is empty"));
    }
    Ok(parts.join("/"))
}

/// Opens `rel` (clean components) under `dir`, following no link on the way.
fn open_beneath(
    dir: std::os::fd::BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::ResolveFlags;
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(dir, rel, flags, Mode::empty(), resolve) {
            Err(rustix::io::Errno::NOSYS) => {}
            // EAGAIN: the kernel saw a concurrent rename and could not be sure; say so.
            Err(rustix::io::Errno::AGAIN) => return Err(rustix::io::Errno::LOOP),
            other => return other,
        }
    }
    // One component at a time, each relative to the directory opened before it.
    let parts: Vec<&str> = rel.split('/').collect();
    let mut cur: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let at = cur.as_ref().map(|f| f.as_fd()).unwrap_or(dir);
        let last = i + 1 == parts.len();
        let next = rustix::fs::openat(
            at,
            *part,
            if last { flags } else { DIR_FLAGS },
            Mode::empty(),
        )?;
        cur = Some(next);
    }
    cur.ok_or(rustix::io::Errno::INVAL)
}

fn walk_dir(
    dir: std::os::fd::BorrowedFd<'_>,
    prefix: &str,
    depth: usize,
    visit: &mut dyn FnMut(Entry) -> Result<bool, TreeError>,
) -> Result<bool, TreeError> {
    if depth > MAX_DEPTH {
        return Err(TreeError::TooDeep {
            path: prefix.to_owned(),
        });
    }
    let shown = if prefix.is_empty() { "." } else { prefix };
    let mut names: Vec<Vec<u8>> = Vec::new();
    let reader = rustix::fs::Dir::read_from(dir).map_err(|e| TreeError::from_errno(shown, e))?;
    for entry in reader {
        let entry = entry.map_err(|e| TreeError::from_errno(shown, e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(name.to_vec());
    }
    names.sort();
    for name in names {
        let Ok(name_str) = String::from_utf8(name.clone()) else {
            // Not UTF-8: no tar path or URL could name it; skip it rather than mangle it.
            continue;
        };
        let path = if prefix.is_empty() {
            name_str.clone()
        } else {
            format!("{prefix}/{name_str}")
        };
        let st = match rustix::fs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since the directory was read: the job removed it.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(TreeError::from_errno(&path, e)),
        };
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let fd = match rustix::fs::openat(dir, name.as_slice(), DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => fd,
                    // Replaced by a link or removed after the stat: not followed, not listed.
                    Err(
                        rustix::io::Errno::LOOP
                        | rustix::io::Errno::NOTDIR
                        | rustix::io::Errno::NOENT,
                    ) => continue,
                    Err(e) => return Err(TreeError::from_errno(&path, e)),
                };
                if !visit(Entry {
                    path: path.clone(),
                    kind: EntryKind::Dir,
                })? {
                    return Ok(false);
                }
                if !walk_dir(fd.as_fd(), &path, depth + 1, visit)? {
                    return Ok(false);
                }
                continue;
            }
            FileType::RegularFile => {
                let fd = match rustix::fs::openat(dir, name.as_slice(), FILE_FLAGS, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(TreeError::from_errno(&path, e)),
                };
                match regular(fd, &path) {
                    Ok(f) => EntryKind::File(f),
                    // Swapped for a FIFO or a directory after the stat.
                    Err(TreeError::NotAFile { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            FileType::Symlink => match rustix::fs::readlinkat(dir, name.as_slice(), Vec::new()) {
                Ok(t) => EntryKind::Link(t.into_bytes()),
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => continue,
                Err(e) => return Err(TreeError::from_errno(&path, e)),
            },
            // FIFOs, sockets, devices: never read.
            _ => continue,
        };
        if !visit(Entry { path, kind })? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn opens_files_and_refuses_links_dirs_and_fifos() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("b", d.path().join("a/inner")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("pw")).unwrap();
        let fifo = std::ffi::CString::new(d.path().join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        nix::unistd::mkfifo(
            fifo.as_c_str(),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let t = Tree::open(d.path()).unwrap();
        let mut f = t.open_file("a/b/f.txt").unwrap();
        let mut s = String::new();
        f.file.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), f.size), ("hello", 5));
        assert!(t.open_file("./a//b/f.txt").is_ok());
        for p in ["etc/passwd", "pw", "a/inner/f.txt"] {
            assert!(matches!(t.open_file(p), Err(TreeError::Link { .. })), "{p}");
        }
        assert!(matches!(
            t.open_file("fifo"),
            Err(TreeError::NotAFile { .. })
        ));
        assert!(matches!(t.open_file("a"), Err(TreeError::NotAFile { .. })));
        assert!(matches!(
            t.open_file("nope"),
            Err(TreeError::NotFound { .. })
        ));
        for p in ["../x", "a/../../x", "/etc/passwd", ""] {
            assert!(
                matches!(t.open_file(p), Err(TreeError::BadPath { .. })),
                "{p}"
            );
        }
        let mut seen = Vec::new();
        t.walk(&mut |e| {
            seen.push(match e.kind {
                EntryKind::Dir => format!("{}/", e.path),
                EntryKind::File(f) => format!("{} {}", e.path, f.size),
                EntryKind::Link(l) => format!("{} -> {}", e.path, String::from_utf8_lossy(&l)),
            });
            Ok(true)
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                "a/",
                "a/b/",
                "a/b/f.txt 5",
                "a/inner -> b",
                "etc -> /etc",
                "pw -> /etc/passwd"
            ]
        );
        let u = t.usage(u64::MAX, u64::MAX).unwrap();
        assert_eq!(u.entries, 7);
        // A sparse file counts what it takes, not its length.
        let f = std::fs::File::create(d.path().join("sparse")).unwrap();
        f.set_len(1 << 40).unwrap();
        assert!(t.usage(u64::MAX, u64::MAX).unwrap().bytes < 1 << 20);
    }
}
