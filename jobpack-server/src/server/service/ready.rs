//! Readiness (`GET /v1/ready`), apart from liveness (`/v1/health`): whether this server can take
//! and run jobs now. Three checks, each answered with what it found: the store takes a write
//! (committed), the data directory's file system has more free space than the floor, and the
//! executor can start runs (its own check: a writable runtime directory, a cgroup hierarchy in
//! strict mode).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::Service;

/// One check's result: `ok`, and what was found (or what is wrong).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

/// All checks; ready when every one is ok.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: BTreeMap<String, Check>,
}

/// Runs the checks (blocking: a database write, a statvfs, the executor's check).
pub fn readiness(svc: &Service) -> Readiness {
    let runner = &svc.runner;
    let mut checks = BTreeMap::new();
    let check = |r: Result<String, String>| match r {
        Ok(detail) => Check { ok: true, detail },
        Err(detail) => Check { ok: false, detail },
    };
    checks.insert(
        "store".to_owned(),
        check(
            runner
                .store
                .probe_write()
                .map(|()| "takes writes".to_owned())
                .map_err(|e| format!("cannot write: {e:#}")),
        ),
    );
    checks.insert(
        "disk".to_owned(),
        check(disk(&runner.data_dir, svc.ready_min_free_bytes)),
    );
    checks.insert(
        "executor".to_owned(),
        check(
            runner
                .executor
                .ready()
                .map(|()| format!("{} can start runs", runner.executor.backend())),
        ),
    );
    Readiness {
        ready: checks.values().all(|c| c.ok),
        checks,
    }
}

/// Bytes free for unprivileged writers on `dir`'s file system.
pub fn free_bytes(dir: &Path) -> Result<u64, String> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| format!("cannot measure {}: {e}", dir.display()))?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Free space for unprivileged writers on `dir`'s file system against `floor` bytes.
fn disk(dir: &Path, floor: u64) -> Result<String, String> {
    let free = free_bytes(dir)?;
    let mib = |b: u64| b >> 20;
    let found = format!(
        "{} MiB free on {} (floor {} MiB)",
        mib(free),
        dir.display(),
        mib(floor)
    );
    if free > floor { Ok(found) } else { Err(found) }
}
