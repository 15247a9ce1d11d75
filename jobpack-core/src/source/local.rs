//! Code or data from a local directory (e.g. extracted uploads): copied into the staging tree
//! with modes normalised (0644/0755 by the executable bit) and symlinks kept as symlinks.
//! It refuses special files. The directory is trusted to be safe already (see
//! [`crate::archive::unpack`], which refuses escaping paths and links when extracting uploads).

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{IoError, io_err};

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
