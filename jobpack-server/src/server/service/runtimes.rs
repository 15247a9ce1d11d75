//! Runtimes over the service (seed 004's RuntimeService: install, list, info, test; and
//! remove): every signed-in caller may list and read them (to pin one in a spec); only admins
//! install, test and remove. Installing is an upload (a rootfs tarball or gzip of one): the
//! server itself never fetches a file system for a caller. Building one from Debian's packages
//! is `jobpack runtime build` on the machine.

use jobpack_core::rootfs::{ImportLimits, RootfsError, RuntimeFs, Store};

use super::Service;
use super::auth::{Action, Caller, require};
use super::error::{Kind, ServiceError, ServiceResult};

/// What `test` ran in the runtime and what it printed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    pub runtime: RuntimeFs,
    /// Whether the probe exited 0 in the sandbox on that root.
    pub ok: bool,
    pub exit_code: Option<i32>,
    /// Its output (the runtime's os-release name, and python3's version if it has one).
    pub output: String,
}

fn from_rootfs(e: RootfsError) -> ServiceError {
    let code = match &e {
        RootfsError::NotFound(_) => {
            return ServiceError::new(Kind::NotFound, "not_found", e.to_string());
        }
        RootfsError::Exists { .. } => {
            return ServiceError::new(Kind::Conflict, "exists", e.to_string());
        }
        RootfsError::TooLarge(_) => {
            return ServiceError::new(Kind::OverQuota, "too_large", e.to_string());
        }
        RootfsError::Io(_) => return ServiceError::new(Kind::Internal, "internal", e.to_string()),
        RootfsError::BadName(_) | RootfsError::BadRef(_) => "bad_request",
        _ => "invalid_rootfs",
    };
    ServiceError::invalid(code, e.to_string())
}

impl Service {
    fn runtimes(&self) -> ServiceResult<&Store> {
        self.runner.runtimes.as_ref().ok_or_else(|| {
            ServiceError::new(
                Kind::Internal,
                "no_runtime_store",
                "this server's runtime store could not be opened (see its log)",
            )
        })
    }

    pub fn list_runtimes(&self, caller: &Caller) -> ServiceResult<Vec<RuntimeFs>> {
        require(caller, Action::Read, "list runtimes")?;
        self.runtimes()?.list().map_err(from_rootfs)
    }

    pub fn runtime(&self, caller: &Caller, name: &str) -> ServiceResult<RuntimeFs> {
        require(caller, Action::Read, "read runtimes")?;
        self.runtimes()?.get(name).map_err(from_rootfs)
    }

    /// Installs the uploaded tarball `upload` (a file the door wrote, or the bytes of a message,
    /// already bounded by the door's size limit) as `name`, within the import's own bounds.
    pub async fn install_runtime(
        &self,
        caller: &Caller,
        name: &str,
        upload: Box<dyn std::io::Read + Send>,
    ) -> ServiceResult<RuntimeFs> {
        require(caller, Action::Administer, "install runtimes")?;
        let store = self.runtimes()?.clone();
        let name = name.to_owned();
        let source = format!("install by {}", caller.user);
        tokio::task::spawn_blocking(move || {
            store
                .import_tar(&name, upload, &source, ImportLimits::default())
                .map_err(from_rootfs)
        })
        .await
        .map_err(|e| ServiceError::new(Kind::Internal, "internal", e.to_string()))?
    }

    /// Removes `name`, unless a run uses it now (409).
    pub fn remove_runtime(&self, caller: &Caller, name: &str) -> ServiceResult<RuntimeFs> {
        require(caller, Action::Administer, "remove runtimes")?;
        let store = self.runtimes()?;
        let rt = store.get(name).map_err(from_rootfs)?;
        // Held while removing, so that no run takes it meanwhile (see `runtime_taken`).
        let in_use = self
            .runner
            .runtimes_in_use
            .lock()
            .map_err(|_| ServiceError::new(Kind::Internal, "internal", "poisoned lock"))?;
        let n = in_use.values().filter(|d| **d == rt.digest).count();
        if n > 0 {
            return Err(ServiceError::new(
                Kind::Conflict,
                "in_use",
                format!("runtime {name} is in use by {n} running job(s): remove it when they end"),
            ));
        }
        store.remove(name).map_err(from_rootfs)
    }

    /// Runs a probe in the sandbox with `name` as the root (the runtime is usable here).
    pub async fn test_runtime(&self, caller: &Caller, name: &str) -> ServiceResult<TestResult> {
        require(caller, Action::Administer, "test runtimes")?;
        let store = self.runtimes()?;
        let rt = store.get(name).map_err(from_rootfs)?;
        let internal = |e: String| ServiceError::new(Kind::Internal, "internal", e);
        let tmp = tempfile::Builder::new()
            .prefix("runtime-test-")
            .tempdir_in(&self.runner.data_dir)
            .map_err(|e| internal(format!("cannot create a test directory: {e}")))?;
        let req = store
            .probe_request(&rt, tmp.path())
            .map_err(|e| internal(e.to_string()))?;
        let log = req.log_path.clone();
        let handle = self
            .runner
            .executor
            .start(req)
            .await
            .map_err(|e| ServiceError::new(Kind::Conflict, "unusable", e.to_string()))?;
        let outcome = handle.wait().await;
        let output = std::fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(64 << 10)]).into_owned())
            .unwrap_or_default();
        Ok(TestResult {
            runtime: rt,
            ok: outcome.exit_code == Some(0),
            exit_code: outcome.exit_code,
            output,
        })
    }
}
