//! The new root's skeleton (its mount points, `/dev`'s symlinks, the merged-`/usr` links), made
//! once and shared by every run of the same shape instead of being created and removed per run.
//!
//! Each run mounts on top of the skeleton inside its own mount namespace, so runs never see
//! each other's mounts, and the skeleton itself is bound read-only as `/` there; on the host it is
//! the server's (owned by it, never writable by a job). Its shape depends only on the system root
//! (the host's or a runtime's: which of `usr`, `bin`, `lib`, ... are directories or links, and
//! where the links point) and which `/dev` nodes the host has; the directory's name is a digest
//! of exactly those, so a changed shape gets a new one. (A run with shared working directories
//! has a skeleton of its own, as their paths are the users'.)
//!
//! Why: creating and deleting two dozen inodes per run on the data directory's file system was
//! the largest kernel cost of a trivial job on ext4 (its inode allocator searches past recently
//! deleted inodes: `recently_deleted`, `find_inode_bit` in the profile in BENCHMARKS.md).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{DEV_NODES, SYSTEM_DIRS};
use crate::exec::ExecError;
use crate::io_error::io_err;

/// Where skeletons live under a runtime directory (run names cannot start with a dot).
const DIR: &str = ".skeletons";

/// The name of the skeleton for this shape: a digest of everything that decides it.
pub(crate) fn key(sys_root: &Path) -> String {
    let mut h = Sha256::new();
    h.update(b"jobpack-skeleton-1\0");
    h.update(sys_root.as_os_str().as_bytes());
    for name in SYSTEM_DIRS {
        let p = sys_root.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                h.update(b"\0l");
                if let Ok(t) = std::fs::read_link(&p) {
                    h.update(t.as_os_str().as_bytes());
                }
            }
            Ok(m) if m.is_dir() => h.update(b"\0d"),
            _ => h.update(b"\0-"),
        }
    }
    for node in DEV_NODES {
        h.update(if Path::new("/dev").join(node).exists() {
            b"\0c"
        } else {
            b"\0-"
        });
    }
    hex::encode(&h.finalize()[..12])
}

/// The skeleton `key` names under `runtime_dir`, made first if there is none: `build` fills a
/// fresh private directory, which is then renamed into place whole (a run that loses the race to
/// another building the same one uses the other's and removes its own).
pub(crate) fn ensure(
    runtime_dir: &Path,
    key: &str,
    build: impl FnOnce(&Path) -> Result<(), ExecError>,
) -> Result<PathBuf, ExecError> {
    let base = runtime_dir.join(DIR);
    let dir = base.join(key);
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&base).map_err(io_err("create", &base))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(&base)
        .map_err(io_err("create a directory in", &base))?;
    // The root of the sandbox: everyone may look up names in it (it is read-only there).
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(io_err("set the mode of", tmp.path()))?;
    build(tmp.path())?;
    match std::fs::rename(tmp.path(), &dir) {
        Ok(()) => {
            // Renamed away: nothing is left for the guard to remove.
            tmp.disable_cleanup(true);
            Ok(dir)
        }
        // Another run made it first (the guard removes ours).
        Err(_) if dir.is_dir() => Ok(dir),
        Err(e) => Err(io_err("move into place", &dir)(e).into()),
    }
}
