//! Runtimes: root file systems named and pinned by their content digest, so that the sandbox, a
//! Slurm node and a container run a job on the same bytes.
//!
//! A runtime is made from Debian's packages ([`Store::build_debootstrap`]) or imported from a
//! rootfs tarball or an OCI image layout ([`Store::import_tar`], [`Store::import_oci`]). Either
//! way its tree is written as one canonical tar ([`layer`]); that tar's sha256 is the runtime's
//! digest, the tar is the single layer of its OCI image (a fixed config, so the image's digest
//! follows from the layer alone), and the unpacked tree is what the sandbox binds read-only as
//! the job's `/usr`, `/etc`, `/bin`, ... A spec names one as `runtime_fs: NAME@sha256:<hex>`.
//!
//! A store is a directory that is also an OCI image layout (`buildah pull oci:STORE:NAME`):
//!
//! ```text
//! STORE/oci-layout, index.json     one image per runtime, annotated with its name
//! STORE/blobs/sha256/<hex>         layers (canonical tars), configs, manifests
//! STORE/fs/<hex>/                  the unpacked tree of the layer <hex>
//! STORE/runtimes/<name>.json       what `jobpack runtime list` shows
//! STORE/tmp/                       imports in progress (a failed one leaves nothing else)
//! ```

mod debootstrap;
pub mod layer;
mod oci;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::io_error::{IoError, io_err};
pub use layer::ImportLimits;

/// Why a runtime could not be made, found or used.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(
        "runtime name {0:?} is invalid: lowercase letters and digits in groups joined by single \
         '.', '_' or '-', at most 64 characters (e.g. python-3.11-bookworm)"
    )]
    BadName(String),
    #[error("runtime reference {0:?} is invalid: write NAME or NAME@sha256:<64 hex digits>")]
    BadRef(String),
    #[error(
        "runtime {0:?} is not installed here (see `jobpack runtime list`; add it with \
         `jobpack runtime import` or `jobpack runtime build`)"
    )]
    NotFound(String),
    #[error(
        "runtime {name:?} here is {have}, not the pinned {want}: install the pinned file system, \
         or pin {have}"
    )]
    Mismatch {
        name: String,
        want: String,
        have: String,
    },
    #[error(
        "runtime {name:?} already exists as {digest}: remove it first (`jobpack runtime rm {name}`)"
    )]
    Exists { name: String, digest: String },
    #[error("not a usable root file system: {0}")]
    BadArchive(String),
    #[error("the root file system is too large: {0}")]
    TooLarge(String),
    #[error("debootstrap failed: {0}")]
    Debootstrap(String),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// A spec's `runtime_fs`: a name, pinned to a digest or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRef {
    pub name: String,
    /// `sha256:<64 lowercase hex>`.
    pub digest: Option<String>,
}

/// Checks a runtime name (it becomes part of an image reference and a file name).
pub fn check_name(name: &str) -> Result<(), RootfsError> {
    let groups_ok = name.split(['.', '_', '-']).all(|g| {
        !g.is_empty()
            && g.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if name.is_empty() || name.len() > 64 || !groups_ok {
        return Err(RootfsError::BadName(name.to_owned()));
    }
    Ok(())
}

/// `sha256:<64 lowercase hex>`, or `None`.
fn sha256_digest(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

impl RuntimeRef {
    pub fn parse(s: &str) -> Result<RuntimeRef, RootfsError> {
        let bad = || RootfsError::BadRef(s.to_owned());
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(sha256_digest(d).ok_or_else(bad)?)),
            None => (s, None),
        };
        check_name(name).map_err(|_| bad())?;
        Ok(RuntimeRef {
            name: name.to_owned(),
            digest,
        })
    }
}

impl std::fmt::Display for RuntimeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.digest {
            Some(d) => write!(f, "{}@{d}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// An installed runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeFs {
    pub name: String,
    /// `sha256:<hex>` of its canonical layer tar: what a spec pins.
    pub digest: String,
    /// Its OCI image as a Dockerfile names it: `localhost/jobpack-runtime/NAME@sha256:<manifest>`.
    pub image: String,
    /// The image manifest's digest.
    pub image_digest: String,
    /// Bytes of the layer tar.
    pub size: u64,
    /// Entries of the layer (files, directories, links).
    pub entries: u64,
    /// `PRETTY_NAME` of its `/etc/os-release`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_release: Option<String>,
    /// How it was made: `debootstrap bookworm +python3`, `import FILE`, ...
    pub source: String,
}

impl RuntimeFs {
    /// `NAME@sha256:<hex>`, the spec's pinned form.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.digest)
    }
}

/// How [`Store::build_debootstrap`] makes a root file system.
#[derive(Debug, Clone)]
pub struct Debootstrap {
    /// A Debian suite (`bookworm`).
    pub suite: String,
    /// Packages to add to the `minbase` variant (`python3`).
    pub include: Vec<String>,
    /// The Debian mirror (`None`: the one apt on this machine uses, else Debian's default).
    pub mirror: Option<String>,
    /// How long debootstrap may take.
    pub timeout: Duration,
}

/// An import in progress: its private directory and the tree being filled in it.
struct Staging {
    dir: tempfile::TempDir,
    tree: PathBuf,
}

/// A directory of runtimes (see the module's doc).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    fs::write(&tmp, bytes).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))
}

/// Removes a tree this store owns, first moving it aside so it is never half there.
fn remove_tree(store_tmp: &Path, p: &Path) -> Result<(), IoError> {
    let aside = store_tmp.join(format!("trash-{}", uuid::Uuid::new_v4().simple()));
    match fs::rename(p, &aside) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r.map_err(io_err("move aside", p))?,
    }
    fs::remove_dir_all(&aside).map_err(io_err("remove", &aside))
}

/// The `PRETTY_NAME` of `tree`'s `etc/os-release` (one link level, resolved inside the tree).
fn os_release(tree: &Path) -> Option<String> {
    let mut rel = PathBuf::from("etc/os-release");
    if let Ok(target) = fs::read_link(tree.join(&rel)) {
        let joined = if target.is_absolute() {
            target
        } else {
            Path::new("etc").join(target)
        };
        let mut out = PathBuf::new();
        for c in joined.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::ParentDir if out.pop() => {}
                Component::RootDir | Component::CurDir => {}
                _ => return None,
            }
        }
        rel = out;
    }
    let path = tree.join(&rel);
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 64 << 10 {
        return None;
    }
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
}

impl Store {
    /// Opens (creating it if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, RootfsError> {
        let root = root.into();
        for d in ["blobs/sha256", "fs", "runtimes", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let store = Store { root };
        if !store.root.join("index.json").exists() {
            store.write_index()?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The unpacked tree of `rt`, bound read-only as a job's root.
    pub fn tree(&self, rt: &RuntimeFs) -> PathBuf {
        self.root
            .join("fs")
            .join(rt.digest.trim_start_matches("sha256:"))
    }

    /// The request that tests `rt` (`jobpack runtime test`, seed 004's TestRuntime): `sh` on
    /// its root prints its os-release name, then python3's version where it has one; 30 s at
    /// most. Its job directory is made in `dir` (empty, the caller's), its log is `dir/log`.
    pub fn probe_request(
        &self,
        rt: &RuntimeFs,
        dir: &Path,
    ) -> Result<crate::exec::RunRequest, RootfsError> {
        let job = dir.join("job");
        fs::create_dir(&job).map_err(io_err("create", &job))?;
        let mut req = crate::exec::RunRequest::new(&job, dir.join("log"));
        req.argv = vec![
            "/bin/sh".into(),
            "-c".into(),
            ". /etc/os-release && echo \"$PRETTY_NAME\"; \
             if command -v python3 >/dev/null; then python3 --version; fi"
                .into(),
        ];
        req.rootfs = Some(self.tree(rt));
        req.limits.timeout = Some(Duration::from_secs(30));
        Ok(req)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root.join("runtimes").join(format!("{name}.json"))
    }

    /// Every installed runtime, by name.
    pub fn list(&self) -> Result<Vec<RuntimeFs>, RootfsError> {
        let dir = self.root.join("runtimes");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let p = e.map_err(io_err("read", &dir))?.path();
            if p.extension().is_some_and(|x| x == "json") {
                let text = fs::read(&p).map_err(io_err("read", &p))?;
                let rt: RuntimeFs = serde_json::from_slice(&text).map_err(|e| {
                    RootfsError::BadArchive(format!("{} is damaged: {e}", p.display()))
                })?;
                out.push(rt);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The runtime called `name`.
    pub fn get(&self, name: &str) -> Result<RuntimeFs, RootfsError> {
        check_name(name)?;
        let p = self.record_path(name);
        match fs::read(&p) {
            Ok(text) => serde_json::from_slice(&text)
                .map_err(|e| RootfsError::BadArchive(format!("{} is damaged: {e}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(RootfsError::NotFound(name.to_owned()))
            }
            Err(e) => Err(io_err("read", &p)(e).into()),
        }
    }

    /// The runtime a spec names; with a digest, only if this store's is that one.
    pub fn resolve(&self, r: &RuntimeRef) -> Result<RuntimeFs, RootfsError> {
        let rt = self.get(&r.name)?;
        match &r.digest {
            Some(want) if *want != rt.digest => Err(RootfsError::Mismatch {
                name: r.name.clone(),
                want: want.clone(),
                have: rt.digest,
            }),
            _ => Ok(rt),
        }
    }

    fn lock(&self) -> Result<nix::fcntl::Flock<File>, RootfsError> {
        let p = self.root.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err("open", &p))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("lock", &p)(e.into()).into())
    }

    /// A fresh staging directory under `tmp/` with an empty `tree/` to fill (removed with the
    /// guard unless committed).
    fn stage(&self) -> Result<Staging, RootfsError> {
        let tmp = self.root.join("tmp");
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&tmp)
            .map_err(io_err("create a directory in", &tmp))?;
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).map_err(io_err("create", &tree))?;
        Ok(Staging { dir, tree })
    }

    /// Imports a rootfs tarball (plain or gzip) as `name`.
    pub fn import_tar(
        &self,
        name: &str,
        reader: impl Read,
        source: &str,
        limits: ImportLimits,
    ) -> Result<RuntimeFs, RootfsError> {
        check_name(name)?;
        self.refuse_existing(name)?;
        let stage = self.stage()?;
        layer::unpack_layer(reader, &stage.tree, limits, &mut layer::Counted::default())?;
        self.commit(name, &stage, source.to_owned())
    }

    /// Imports the image `reference` (`None`: the only one) of the OCI image layout `layout`,
    /// its layers applied in order; every layer's digest is checked.
    pub fn import_oci(
        &self,
        name: &str,
        layout: &Path,
        reference: Option<&str>,
        limits: ImportLimits,
    ) -> Result<RuntimeFs, RootfsError> {
        check_name(name)?;
        self.refuse_existing(name)?;
        let layers = oci::layers(layout, reference)?;
        let stage = self.stage()?;
        let mut counted = layer::Counted::default();
        for l in &layers {
            let mut f = File::open(&l.path).map_err(io_err("open", &l.path))?;
            let mut h = sha2::Sha256::new();
            io::copy(&mut f, &mut h).map_err(io_err("read", &l.path))?;
            let have = format!("sha256:{}", hex::encode(h.finalize()));
            if have != l.digest {
                return Err(RootfsError::BadArchive(format!(
                    "layer {} has digest {have}",
                    l.digest
                )));
            }
            let f = File::open(&l.path).map_err(io_err("open", &l.path))?;
            layer::unpack_layer(f, &stage.tree, limits, &mut counted)?;
        }
        let source = match reference {
            Some(r) => format!("import oci:{}:{r}", layout.display()),
            None => format!("import oci:{}", layout.display()),
        };
        self.commit(name, &stage, source)
    }

    fn refuse_existing(&self, name: &str) -> Result<(), RootfsError> {
        match self.get(name) {
            Ok(rt) => Err(RootfsError::Exists {
                name: name.to_owned(),
                digest: rt.digest,
            }),
            Err(RootfsError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes the staged `tree` as the canonical layer, then puts tree, blobs and record in
    /// place (under the store's lock).
    fn commit(
        &self,
        name: &str,
        stage: &Staging,
        source: String,
    ) -> Result<RuntimeFs, RootfsError> {
        let tree = &stage.tree;
        let layer_path = stage.dir.path().join("layer.tar");
        let file = File::create(&layer_path).map_err(io_err("create", &layer_path))?;
        let mut w = layer::Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: sha2::Sha256::new(),
            len: 0,
        };
        let entries = layer::write_canonical(tree, &mut w)?;
        let (size, hex) = (w.len, hex::encode(w.hasher.finalize()));
        let digest = format!("sha256:{hex}");
        let ((config, _), (manifest, image_digest)) = oci::image(&digest, size);
        let _lock = self.lock()?;
        if let Ok(rt) = self.get(name) {
            return Err(RootfsError::Exists {
                name: name.to_owned(),
                digest: rt.digest,
            });
        }
        let fs_dir = self.root.join("fs").join(&hex);
        if !fs_dir.exists() {
            fs::rename(tree, &fs_dir).map_err(io_err("move into place", &fs_dir))?;
        }
        let blobs = self.root.join("blobs/sha256");
        let layer_blob = blobs.join(&hex);
        if !layer_blob.exists() {
            fs::rename(&layer_path, &layer_blob).map_err(io_err("move into place", &layer_blob))?;
        }
        for bytes in [&config, &manifest] {
            let p = blobs.join(hex::encode(sha2::Sha256::digest(bytes)));
            if !p.exists() {
                write_atomic(&p, bytes)?;
            }
        }
        let rt = RuntimeFs {
            name: name.to_owned(),
            image: format!("localhost/jobpack-runtime/{name}@{image_digest}"),
            image_digest,
            digest,
            size,
            entries,
            os_release: os_release(&fs_dir),
            source,
        };
        let mut json = serde_json::to_vec_pretty(&rt).expect("a RuntimeFs serialises");
        json.push(b'\n');
        write_atomic(&self.record_path(name), &json)?;
        self.write_index()?;
        Ok(rt)
    }

    /// Removes `name`; its tree and blobs go too unless another name has the same digest.
    pub fn remove(&self, name: &str) -> Result<RuntimeFs, RootfsError> {
        let rt = self.get(name)?;
        let _lock = self.lock()?;
        let p = self.record_path(name);
        fs::remove_file(&p).map_err(io_err("remove", &p))?;
        let shared = self.list()?.iter().any(|o| o.digest == rt.digest);
        if !shared {
            remove_tree(&self.root.join("tmp"), &self.tree(&rt))?;
            let ((config, _), (manifest, _)) = oci::image(&rt.digest, rt.size);
            let blobs = self.root.join("blobs/sha256");
            for hex in [
                rt.digest.trim_start_matches("sha256:").to_owned(),
                hex::encode(sha2::Sha256::digest(&config)),
                hex::encode(sha2::Sha256::digest(&manifest)),
            ] {
                match fs::remove_file(blobs.join(&hex)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("remove", blobs.join(&hex))(e).into());
                    }
                    _ => {}
                }
            }
        }
        self.write_index()?;
        Ok(rt)
    }

    fn write_index(&self) -> Result<(), RootfsError> {
        let images: Vec<(String, String, u64)> = self
            .list()?
            .into_iter()
            .map(|rt| {
                let (_, (manifest, digest)) = oci::image(&rt.digest, rt.size);
                (rt.name, digest, manifest.len() as u64)
            })
            .collect();
        Ok(write_atomic(
            &self.root.join("index.json"),
            &oci::index(&images),
        )?)
    }
}

#[cfg(test)]
mod tests;
