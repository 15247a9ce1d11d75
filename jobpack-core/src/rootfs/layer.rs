//! Root file systems as tar layers: unpacking one into a private directory (bounded, never
//! outside it, OCI whiteouts applied) and writing a tree back as the canonical tar whose sha256
//! is the runtime's digest.
//!
//! The canonical tar: GNU headers, entries in depth-first order with each directory's names
//! sorted bytewise, no `./` prefix, numeric owners only, permission bits (`0o7777`), regular
//! files' mtimes (directories' and links' are 0: unpacking and whiteouts change those, and
//! nothing reads them), hard links as link entries to the first path seen. Devices, FIFOs and
//! sockets are never kept: the sandbox and every container runtime bring their own `/dev`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::RootfsError;
use crate::io_error::io_err;

/// How much one import may unpack.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// The sum of all regular files' sizes.
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_bytes: 16 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What an import has unpacked so far (over all its layers).
#[derive(Debug, Default)]
pub(crate) struct Counted {
    bytes: u64,
    entries: u64,
}

fn bad(why: impl Into<String>) -> RootfsError {
    RootfsError::BadArchive(why.into())
}

/// The entry's path made relative and plain: `None` for the root itself; an error for `..`.
fn plain(path: &Path) -> Result<Option<PathBuf>, RootfsError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad(format!(
                    "entry {} climbs out with '..'",
                    path.display()
                )));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// `dst/rel`'s parent exists as real directories all the way (no link on the way), so removing
/// beneath it cannot reach outside `dst`.
fn real_parent(dst: &Path, rel: &Path) -> bool {
    let mut p = dst.to_path_buf();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unpacks one layer (a tar, gzip-compressed or not) over `dst`, a directory only this process
/// writes. OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove what lower layers left. Every
/// path is checked to stay beneath `dst` (the tar crate refuses a parent that resolves outside
/// it, through a link or otherwise); devices, FIFOs and sockets are skipped.
pub(crate) fn unpack_layer(
    reader: impl Read,
    dst: &Path,
    limits: ImportLimits,
    counted: &mut Counted,
) -> Result<(), RootfsError> {
    let mut reader = io::BufReader::with_capacity(1 << 16, reader);
    let gz = {
        use io::BufRead;
        let head = reader
            .fill_buf()
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(reader);
    let as_root = nix::unistd::geteuid().is_root();
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(as_root);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut dirs = Vec::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(format!("a damaged entry: {e}")))?;
        let raw = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let Some(rel) = plain(&raw)? else { continue };
        counted.entries += 1;
        if counted.entries > limits.max_entries {
            return Err(RootfsError::TooLarge(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_file() || kind.is_gnu_sparse() {
            counted.bytes = counted.bytes.saturating_add(entry.size());
            if counted.bytes > limits.max_bytes {
                return Err(RootfsError::TooLarge(format!(
                    "more than {} bytes of files",
                    limits.max_bytes
                )));
            }
        }
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if !real_parent(dst, &rel) {
                return Err(bad(format!(
                    "whiteout {} is not in a directory",
                    raw.display()
                )));
            }
            let parent = dst.join(rel.parent().unwrap_or(Path::new("")));
            if hidden == ".wh..opq" {
                // An opaque directory: nothing of the lower layers shows through.
                for child in fs::read_dir(&parent).map_err(io_err("read", &parent))? {
                    let child = child.map_err(io_err("read", &parent))?.path();
                    let ours = child.strip_prefix(dst).is_ok_and(|r| written.contains(r));
                    if !ours {
                        remove_any(&child).map_err(io_err("remove", &child))?;
                    }
                }
            } else {
                let victim = parent.join(hidden);
                remove_any(&victim).map_err(io_err("remove", &victim))?;
            }
            continue;
        }
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            continue;
        }
        if !(kind.is_file()
            || kind.is_gnu_sparse()
            || kind.is_dir()
            || kind.is_symlink()
            || kind.is_hard_link()
            || kind.is_contiguous())
        {
            continue;
        }
        written.insert(rel.clone());
        if kind.is_dir() {
            // Last, deepest first, so a read-only directory is made so only when it is filled.
            dirs.push(entry);
            continue;
        }
        // A lower layer's directory replaced by a file (or link) of this one.
        let target = dst.join(&rel);
        if real_parent(dst, &rel)
            && fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir())
            && !kind.is_dir()
        {
            fs::remove_dir_all(&target).map_err(io_err("remove", &target))?;
        }
        if !entry
            .unpack_in(dst)
            .map_err(|e| bad(format!("{}: {e}", raw.display())))?
        {
            return Err(bad(format!("entry {} leaves the root", raw.display())));
        }
    }
    dirs.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut d in dirs {
        let raw = d.path_bytes().into_owned();
        if !d
            .unpack_in(dst)
            .map_err(|e| bad(format!("{}: {e}", String::from_utf8_lossy(&raw))))?
        {
            return Err(bad(format!(
                "entry {} leaves the root",
                String::from_utf8_lossy(&raw)
            )));
        }
    }
    Ok(())
}

/// Removes devices, FIFOs and sockets from a tree this process made (debootstrap's `/dev`).
pub(crate) fn remove_special(root: &Path) -> Result<(), RootfsError> {
    for e in fs::read_dir(root).map_err(io_err("read", root))? {
        let e = e.map_err(io_err("read", root))?;
        let t = e.file_type().map_err(io_err("stat", e.path()))?;
        if t.is_dir() {
            remove_special(&e.path())?;
        } else if t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket() {
            fs::remove_file(e.path()).map_err(io_err("remove", e.path()))?;
        }
    }
    Ok(())
}

/// A writer that hashes what passes through it and counts it.
pub(crate) struct Hashing<W> {
    pub inner: W,
    pub hasher: sha2::Sha256,
    pub len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `root` as the canonical tar (see the module's doc) to `out`; the number of entries.
pub(crate) fn write_canonical(root: &Path, out: impl Write) -> Result<u64, RootfsError> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut n = 0;
    walk(root, Path::new(""), &mut b, &mut links, &mut n)?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err("write the layer of", root))?;
    Ok(n)
}

fn walk<W: Write>(
    root: &Path,
    rel: &Path,
    b: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), PathBuf>,
    n: &mut u64,
) -> Result<(), RootfsError> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io_err("read", &dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err("read", &dir))?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let m = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let t = m.file_type();
        let mut h = tar::Header::new_gnu();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid().into());
        h.set_gid(m.gid().into());
        h.set_mtime(0);
        h.set_size(0);
        let wrote = io_err("write the layer entry", &path);
        if t.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            let mut p = rel.clone().into_os_string();
            p.push("/");
            b.append_data(&mut h, &p, io::empty()).map_err(wrote)?;
            *n += 1;
            walk(root, &rel, b, links, n)?;
            continue;
        }
        if t.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err("read link", &path))?;
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, &rel, &target).map_err(wrote)?;
        } else if t.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, &rel, first).map_err(wrote)?;
                    *n += 1;
                    continue;
                }
                links.insert((m.dev(), m.ino()), rel.clone());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mtime(m.mtime().max(0) as u64);
            h.set_size(m.len());
            let f = File::open(&path).map_err(io_err("open", &path))?;
            b.append_data(&mut h, &rel, f.take(m.len()))
                .map_err(wrote)?;
        } else {
            continue;
        }
        *n += 1;
    }
    Ok(())
}
