//! Writing a commit's tree out of the object database (blob by blob, modes and links as git
//! records them, no name that could leave the destination), and the submodules `.gitmodules`
//! names.

use super::*;

/// Writes a tree out blob by blob.
pub(super) struct TreeWriter<'a> {
    pub(super) repo: &'a Repository,
    pub(super) commit: String,
    pub(super) files: usize,
    /// Submodules found: (path relative to the top-level checkout, pinned commit).
    pub(super) gitlinks: Vec<(String, Oid)>,
    pub(super) progress: &'a ProgressFn,
    pub(super) cancel: &'a Option<Arc<AtomicBool>>,
}

impl TreeWriter<'_> {
    fn unsafe_entry(&self, path: &str, reason: &'static str) -> GitError {
        GitError::UnsafeTree {
            commit: self.commit.clone(),
            path: path.to_owned(),
            reason,
        }
    }

    pub(super) fn write(
        &mut self,
        tree: &git2::Tree<'_>,
        dir: &Path,
        rel: &str,
    ) -> Result<(), GitError> {
        if is_cancelled(self.cancel) {
            return Err(GitError::Cancelled);
        }
        for entry in tree.iter() {
            let raw = entry.name_bytes();
            let Ok(name) = std::str::from_utf8(raw) else {
                let shown = String::from_utf8_lossy(raw);
                return Err(self.unsafe_entry(&format!("{rel}/{shown}"), "name is not UTF-8"));
            };
            let relp = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains(['/', '\\', '\0'])
                || name.eq_ignore_ascii_case(".git")
            {
                return Err(self.unsafe_entry(&relp, "reserved or invalid file name"));
            }
            let path = dir.join(name);
            let other = |source| GitError::Other {
                url: String::new(),
                source,
            };
            match entry.filemode() {
                0o040000 => {
                    fs::create_dir(&path).map_err(io("create directory", &path))?;
                    let sub = self.repo.find_tree(entry.id()).map_err(other)?;
                    self.write(&sub, &path, &relp)?;
                    fs::set_permissions(&path, Permissions::from_mode(0o755))
                        .map_err(io("set mode of", &path))?;
                }
                mode @ (0o100644 | 0o100664 | 0o100755) => {
                    let blob = self.repo.find_blob(entry.id()).map_err(other)?;
                    let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(perm)
                        .open(&path)
                        .map_err(io("create", &path))?;
                    f.write_all(blob.content()).map_err(io("write", &path))?;
                    // Explicitly, so the umask has no say.
                    f.set_permissions(Permissions::from_mode(perm))
                        .map_err(io("set mode of", &path))?;
                    self.files += 1;
                    if self.files.is_multiple_of(256) {
                        (self.progress)(Progress::Checkout { files: self.files });
                    }
                }
                0o120000 => {
                    let blob = self.repo.find_blob(entry.id()).map_err(other)?;
                    let target = blob.content();
                    if target.is_empty() || target.contains(&0) {
                        return Err(self.unsafe_entry(&relp, "symlink with an empty target"));
                    }
                    use std::os::unix::ffi::OsStrExt;
                    let target = std::ffi::OsStr::from_bytes(target);
                    std::os::unix::fs::symlink(target, &path)
                        .map_err(io("create symlink", &path))?;
                    self.files += 1;
                }
                0o160000 => {
                    fs::create_dir(&path).map_err(io("create directory", &path))?;
                    fs::set_permissions(&path, Permissions::from_mode(0o755))
                        .map_err(io("set mode of", &path))?;
                    self.gitlinks.push((relp, entry.id()));
                }
                _ => return Err(self.unsafe_entry(&relp, "unknown file mode")),
            }
        }
        Ok(())
    }
}

/// Reads `.gitmodules` from a tree: (path, url) for every submodule that has both.
pub(super) fn submodule_urls(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    url: &str,
) -> Result<Vec<(String, String)>, GitError> {
    let Ok(entry) = tree.get_path(Path::new(".gitmodules")) else {
        return Ok(Vec::new());
    };
    let other = |source| GitError::Other {
        url: url.to_owned(),
        source,
    };
    let blob = repo.find_blob(entry.id()).map_err(other)?;
    // libgit2 parses config files only from disk.
    let mut tmp = tempfile::NamedTempFile::new().map_err(io("create", Path::new("$TMPDIR")))?;
    tmp.write_all(blob.content())
        .map_err(io("write", tmp.path()))?;
    let cfg = git2::Config::open(tmp.path()).map_err(other)?;
    let mut names = Vec::new();
    let mut entries = cfg.entries(Some(r"^submodule\..*\.path$")).map_err(other)?;
    while let Some(e) = entries.next() {
        let e = e.map_err(other)?;
        if let (Ok(k), Ok(v)) = (e.name(), e.value()) {
            let name = k["submodule.".len()..k.len() - ".path".len()].to_owned();
            names.push((name, v.trim_matches('/').to_owned()));
        }
    }
    Ok(names
        .into_iter()
        .filter_map(|(name, path)| {
            cfg.get_string(&format!("submodule.{name}.url"))
                .ok()
                .map(|u| (path, u))
        })
        .collect())
}

/// Resolves a submodule URL as git does: `./x` and `../x` relative to the superproject's URL.
pub(super) fn resolve_submodule_url(parent: &str, url: &str) -> Result<String, String> {
    let resolved = if url.starts_with("./") || url.starts_with("../") {
        let mut base = parent.trim_end_matches('/').to_owned();
        let mut rest = url;
        loop {
            if let Some(r) = rest.strip_prefix("./") {
                rest = r;
            } else if let Some(r) = rest.strip_prefix("../") {
                match base.rfind(['/', ':']) {
                    Some(i) if !base[..i].ends_with('/') => base.truncate(i),
                    _ => return Err("climbs above the superproject's URL".into()),
                }
                rest = r;
            } else {
                break;
            }
        }
        format!("{base}/{rest}")
    } else {
        url.to_owned()
    };
    crate::spec::validate_git_url(&resolved)?;
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_submodule_urls() {
        let r = |p, u| resolve_submodule_url(p, u);
        assert_eq!(
            r("https://h/org/app.git", "../lib.git").unwrap(),
            "https://h/org/lib.git"
        );
        assert_eq!(
            r("https://h/org/app", "./sub").unwrap(),
            "https://h/org/app/sub"
        );
        assert_eq!(r("git@h:org/app", "../lib").unwrap(), "git@h:org/lib");
        assert!(r("https://h/app", "../../../x").is_err());
        assert!(r("https://h/app", "/etc/passwd").is_err());
        assert_eq!(
            r("https://h/app", "https://other/x").unwrap(),
            "https://other/x"
        );
    }
}
