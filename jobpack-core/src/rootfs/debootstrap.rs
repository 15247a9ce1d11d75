//! Making a runtime from Debian's packages: debootstrap's `minbase` variant, plus packages, into
//! the store's staging directory, then committed like an import.

use std::fs::{self, File};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Debootstrap, RootfsError, RuntimeFs, Store, check_name, layer};
use crate::io_error::io_err;

impl Store {
    /// Makes `name` from Debian's packages with debootstrap (`minbase` plus `opts.include`).
    /// Needs root and debootstrap.
    pub fn build_debootstrap(
        &self,
        name: &str,
        opts: &Debootstrap,
    ) -> Result<RuntimeFs, RootfsError> {
        check_name(name)?;
        let word = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
        };
        if !word(&opts.suite) {
            return Err(RootfsError::Debootstrap(format!(
                "{:?} is not a suite name",
                opts.suite
            )));
        }
        if let Some(p) = opts.include.iter().find(|p| !word(p)) {
            return Err(RootfsError::Debootstrap(format!(
                "{p:?} is not a package name"
            )));
        }
        let mirror = match &opts.mirror {
            Some(m) => m.clone(),
            None => apt_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".into()),
        };
        let url = url::Url::parse(&mirror)
            .map_err(|e| RootfsError::Debootstrap(format!("mirror {mirror:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RootfsError::Debootstrap(format!(
                "mirror {mirror:?} is not http(s)"
            )));
        }
        self.refuse_existing(name)?;
        let stage = self.stage()?;
        let tree = stage.tree.clone();
        let log_path = stage.dir.path().join("debootstrap.log");
        let log = File::create(&log_path).map_err(io_err("create", &log_path))?;
        let mut cmd = std::process::Command::new("debootstrap");
        cmd.arg("--variant=minbase");
        if !opts.include.is_empty() {
            cmd.arg(format!("--include={}", opts.include.join(",")));
        }
        cmd.arg(&opts.suite)
            .arg(&tree)
            .arg(url.as_str())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(io_err("open", &log_path))?)
            .stderr(log);
        let mut child = cmd.spawn().map_err(|e| {
            RootfsError::Debootstrap(format!(
                "cannot start debootstrap: {e} (install it: apt-get install debootstrap)"
            ))
        })?;
        let deadline = Instant::now() + opts.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Ok(None) => {
                    // Best effort: the deadline error below is what matters; wait reaps it.
                    child.kill().ok();
                    child.wait().ok();
                    return Err(RootfsError::Debootstrap(format!(
                        "it took longer than {:?}",
                        opts.timeout
                    )));
                }
                Err(e) => return Err(RootfsError::Debootstrap(format!("cannot wait for it: {e}"))),
            }
        };
        if !status.success() {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(RootfsError::Debootstrap(format!(
                "{status}: {}",
                tail.join("\n")
            )));
        }
        // What only the build needed: downloaded packages and package lists.
        for d in ["var/cache/apt/archives", "var/lib/apt/lists"] {
            let dir = tree.join(d);
            for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    fs::remove_file(e.path()).map_err(io_err("remove", e.path()))?;
                }
            }
        }
        layer::remove_special(&tree)?;
        let mut source = format!("debootstrap {} minbase", opts.suite);
        for p in &opts.include {
            source.push_str(&format!(" +{p}"));
        }
        self.commit(name, &stage, source)
    }
}

/// The Debian mirror apt on this machine uses, if it names one.
fn apt_mirror() -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(d) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(d.flatten().map(|e| e.path()));
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let rest = line
                .strip_prefix("URIs:")
                .or_else(|| line.strip_prefix("deb "))
                .unwrap_or("");
            if let Some(u) = rest
                .split_whitespace()
                .find(|w| w.starts_with("http") && w.trim_end_matches('/').ends_with("/debian"))
            {
                return Some(u.to_owned());
            }
        }
    }
    None
}
