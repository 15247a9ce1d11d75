//! Shared working directories: the host directories an admin allows jobs to run in
//! (`--allowed-workdir`, seed 003's `ALLOWED_WORKDIRS`), and the check of a job's `working_dir`
//! against them: inside one (else `Forbidden`), an existing directory reached without following
//! any link (else `Invalid`). The sandbox resolves it the same way again when it mounts it.

use std::path::{Component, Path, PathBuf};

use jobpack_core::exec::SharedDir;

use crate::server::service::error::{ServiceError, ServiceResult};

use jobpack_core::exec::SANDBOX_OWN_DIRS as RESERVED;

#[derive(Debug, Default)]
pub struct Workdirs {
    roots: Vec<PathBuf>,
    /// Where `/api/v1` jobs that name no `working_dir` run (inside a root), if set.
    pub default: Option<PathBuf>,
}

impl Workdirs {
    /// The allowed roots: each an absolute, existing directory whose path has no link in it,
    /// outside the sandbox's own top-level directories; `default` inside one of them.
    pub fn new(allowed: &[PathBuf], default: Option<PathBuf>) -> anyhow::Result<Workdirs> {
        let mut roots = Vec::new();
        for a in allowed {
            let canon = std::fs::canonicalize(a)
                .map_err(|e| anyhow::anyhow!("--allowed-workdir {}: {e}", a.display()))?;
            if !a.is_absolute() || canon != *a || !canon.is_dir() {
                anyhow::bail!(
                    "--allowed-workdir {}: give an existing directory by its absolute path, \
                     without links ({})",
                    a.display(),
                    canon.display()
                );
            }
            let top = canon.components().nth(1);
            if top.is_none_or(|t| RESERVED.contains(&t.as_os_str().to_string_lossy().as_ref())) {
                anyhow::bail!(
                    "--allowed-workdir {}: must be outside /{} (the sandbox's own)",
                    a.display(),
                    RESERVED.join(", /")
                );
            }
            roots.push(canon);
        }
        let w = Workdirs {
            roots,
            default: None,
        };
        if let Some(d) = &default {
            w.resolve(d)
                .map_err(|e| anyhow::anyhow!("--default-working-dir: {}", e.message))?;
        }
        Ok(Workdirs { default, ..w })
    }

    /// `asked` as a shared directory under one of the roots.
    pub fn resolve(&self, asked: &Path) -> ServiceResult<SharedDir> {
        let lexical = asked
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !asked.is_absolute() || !lexical {
            return Err(ServiceError::invalid(
                "bad_request",
                format!(
                    "working_dir: {} must be an absolute path without . or ..",
                    asked.display()
                ),
            ));
        }
        let Some(root) = self.roots.iter().find(|r| asked.starts_with(r)) else {
            return Err(ServiceError::forbidden(
                "working_dir_forbidden",
                if self.roots.is_empty() {
                    format!(
                        "working_dir: {} is not allowed: this server allows no working \
                         directories (an admin sets --allowed-workdir)",
                        asked.display()
                    )
                } else {
                    format!(
                        "working_dir: {} is not inside an allowed directory ({})",
                        asked.display(),
                        self.roots
                            .iter()
                            .map(|r| r.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            ));
        };
        let rel = asked
            .strip_prefix(root)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .map_or(".".to_owned(), |r| r.to_string_lossy().into_owned());
        // Exists, and is reached without any link (as the sandbox will reach it).
        let opened = std::fs::File::open(root).and_then(|top| {
            use rustix::fs::{Mode, OFlags, ResolveFlags};
            rustix::fs::openat2(
                &top,
                rel.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(std::io::Error::from)
        });
        if let Err(e) = opened {
            return Err(ServiceError::invalid(
                "bad_request",
                format!(
                    "working_dir: {} is not a directory reachable without links: {e}",
                    asked.display()
                ),
            ));
        }
        Ok(SharedDir {
            root: root.clone(),
            rel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_dirs_must_be_inside_an_allowed_root_and_reached_without_links() {
        let base = tempfile::tempdir_in("/var/tmp").unwrap();
        let root = std::fs::canonicalize(base.path()).unwrap();
        std::fs::create_dir_all(root.join("project/sub")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        let w = Workdirs::new(std::slice::from_ref(&root), None).unwrap();
        let ok = w.resolve(&root.join("project/sub")).unwrap();
        assert_eq!(
            (ok.root.clone(), ok.rel.as_str()),
            (root.clone(), "project/sub")
        );
        assert_eq!(w.resolve(&root).unwrap().rel, ".");
        let kind = |p: PathBuf| w.resolve(&p).unwrap_err().kind;
        use crate::server::service::error::Kind;
        assert_eq!(kind(PathBuf::from("/var/other")), Kind::Forbidden);
        assert_eq!(kind(root.join("etc-link")), Kind::Invalid);
        assert_eq!(kind(root.join("project/../../x")), Kind::Invalid);
        assert_eq!(kind(root.join("missing")), Kind::Invalid);
        assert!(Workdirs::new(&[PathBuf::from("/tmp")], None).is_err());
        assert!(Workdirs::new(&[root.join("etc-link")], None).is_err());
        let none = Workdirs::default();
        assert_eq!(none.resolve(&root).unwrap_err().kind, Kind::Forbidden);
    }
}
