//! Archive stage: a byte-reproducible `.tar.gz` of a directory.
//!
//! Same tree in, same bytes out, on any machine: entries sorted by path (byte order), one fixed
//! mtime, uid/gid 0 with no user or group names, modes normalised (files 0644 or 0755 by their
//! executable bit, directories 0755, symlinks 0777 and kept as symlinks), no atime, ctime or
//! extended attributes (GNU format, long names as GNU long-name entries), and a gzip stream with
//! header mtime 0, no file name, OS byte 255, from one pinned backend (zlib-rs) at one level,
//! compressed on every core in fixed blocks ([`pgzip`]: the bytes do not depend on the machine).
//!
//! It refuses: special files (devices, fifos, sockets) and names that are not UTF-8.
//! The output goes to a temporary file beside the destination and is renamed into place only when
//! complete, so a reader never sees a partial artifact.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::io_error::{IoError, io_err};

mod compare;
pub mod pgzip;
mod unpack;
mod write;

pub use compare::{entry_digests, first_difference, read_entry};
pub use unpack::{UnpackError, UnpackLimits, is_archive_name, unpack, unpack_upload};
pub use write::{Contents, TreeArchiveError, Written, tar_gz_dir, tar_gz_tree, write_tar_gz};

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
    /// A directory's entry, as [`scan`] describes one.
    pub fn dir(path: &str) -> FileEntry {
        FileEntry {
            path: path.to_owned(),
            kind: EntryKind::Dir,
            mode: "0755".into(),
            size: 0,
            sha256: None,
            target: None,
        }
    }

    /// The entry of a file held in memory, as [`scan`] would describe it on disk.
    pub fn file(path: &str, bytes: &[u8], executable: bool) -> FileEntry {
        FileEntry {
            path: path.to_owned(),
            kind: EntryKind::File,
            mode: if executable { "0755" } else { "0644" }.into(),
            size: bytes.len() as u64,
            sha256: Some(hex::encode(Sha256::digest(bytes))),
            target: None,
        }
    }

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
            out.push(FileEntry::dir(&relp));
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
    let mut buf = vec![0u8; 64 << 10];
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

#[cfg(test)]
mod tests {
    use super::unpack::link_stays_inside;
    use super::*;
    use std::os::unix::fs::symlink;

    const GOLDEN_SHA256: &str = "6919f2810926fdbc1708b5087b50b829f09b47cbdb04a82e47eaf53a8f4198bf";

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
            b.append_data(&mut h, "dev", std::io::empty()).unwrap();
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
