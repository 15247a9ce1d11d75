//! Code or data from a local directory (e.g. extracted uploads): copied into the staging tree
//! with modes normalised (0644/0755 by the executable bit) and symlinks kept as symlinks.
//! It refuses special files. The directory is trusted to be safe already (see
//! [`crate::archive::unpack`], which refuses escaping paths and links when extracting uploads).

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::io_error::{IoError, io_err};

/// Copies the contents of `src` into `dst` (which exists). Returns the number of files copied.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<usize, IoError> {
    let mut n = 0;
    for e in fs::read_dir(src).map_err(io_err("read directory", src))? {
        let e = e.map_err(io_err("read directory", src))?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let meta = fs::symlink_metadata(&from).map_err(io_err("stat", &from))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(io_err("create", &to))?;
            fs::set_permissions(&to, Permissions::from_mode(0o755))
                .map_err(io_err("set mode of", &to))?;
            n += copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err("read link", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("create symlink", &to))?;
            n += 1;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(io_err("copy to", &to))?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&to, Permissions::from_mode(mode))
                .map_err(io_err("set mode of", &to))?;
            n += 1;
        } else {
            return Err(io_err("copy (special files are refused)", &from)(
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        }
    }
    Ok(n)
}

/// Why [`make_parent_dirs`] stopped.
#[derive(Debug)]
pub(crate) enum ParentDirError {
    /// Something that is not a real directory (a symlink, a file) is in the way at this path.
    NotADirectory(std::path::PathBuf),
    Io(IoError),
}

/// Creates the directories above `rel` (a normalised relative path) under `root`, mode 0755,
/// refusing to go through anything but a real directory, so that a symlink planted by an earlier
/// entry or download cannot redirect a later one. A directory created meanwhile by a concurrent
/// caller is fine.
pub(crate) fn make_parent_dirs(root: &Path, rel: &str) -> Result<(), ParentDirError> {
    let parts: Vec<&str> = rel.split('/').collect();
    let mut dir = root.to_path_buf();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ParentDirError::NotADirectory(dir)),
            Err(_) => {
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    // Made meanwhile by a concurrent caller: only a real directory will do.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                            return Err(ParentDirError::NotADirectory(dir));
                        }
                        continue;
                    }
                    Err(e) => return Err(ParentDirError::Io(io_err("create", &dir)(e))),
                }
                fs::set_permissions(&dir, Permissions::from_mode(0o755))
                    .map_err(|e| ParentDirError::Io(io_err("set mode of", &dir)(e)))?;
            }
        }
    }
    Ok(())
}
