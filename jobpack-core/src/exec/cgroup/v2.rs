//! cgroup v2: one directory; controllers enabled in the parents' `cgroup.subtree_control`.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Usage, err, io_bytes, procs, read_keyed, remove_dir, wait_empty, write};
use crate::exec::{ExecError, Limits, UsageSample};

#[derive(Debug, Clone)]
pub struct CgroupV2 {
    dir: PathBuf,
}

impl CgroupV2 {
    pub fn create(
        root: &Path,
        parent: &str,
        name: &str,
        limits: &Limits,
        io_device: Option<(u64, u64)>,
    ) -> Result<(CgroupV2, Vec<String>), ExecError> {
        let parent_dir = root.join(parent);
        std::fs::create_dir_all(&parent_dir).map_err(err("create", &parent_dir))?;
        let available =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let cpuset = limits.cpu_cores.is_some().then_some("cpuset");
        let wanted: Vec<&str> = ["memory", "cpu", "pids", "io"]
            .into_iter()
            .chain(cpuset)
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .collect();
        // Enable the controllers from the root down to our parent (best effort per controller:
        // one that is unavailable shows up below as a limit that cannot be written).
        let mut dir = root.to_path_buf();
        for part in std::iter::once("").chain(parent.split('/').filter(|p| !p.is_empty())) {
            if !part.is_empty() {
                dir.push(part);
            }
            for c in &wanted {
                let control = dir.join("cgroup.subtree_control");
                if let Err(e) = std::fs::write(&control, format!("+{c}")) {
                    tracing::debug!("cannot enable {c} in {}: {e}", control.display());
                }
            }
        }
        let dir = parent_dir.join(name);
        std::fs::create_dir(&dir).map_err(err("create", &dir))?;
        let cg = CgroupV2 { dir };
        let mut applied = Vec::new();
        if let Err(e) = cg.apply(limits, io_device, &mut applied) {
            if let Err(r) = cg.remove() {
                tracing::warn!("{r}");
            }
            return Err(e);
        }
        Ok((cg, applied))
    }

    fn apply(
        &self,
        limits: &Limits,
        io_device: Option<(u64, u64)>,
        applied: &mut Vec<String>,
    ) -> Result<(), ExecError> {
        let d = &self.dir;
        if let Some(mem) = limits.memory_bytes {
            write(&d.join("memory.max"), &mem.to_string())?;
            if d.join("memory.swap.max").exists() {
                write(&d.join("memory.swap.max"), "0")?;
            }
            applied.push("memory".into());
        }
        if let Some(pct) = limits.cpu_percent {
            write(
                &d.join("cpu.max"),
                &format!("{} 100000", u64::from(pct) * 1000),
            )?;
            applied.push("cpu".into());
        }
        if let Some(cores) = &limits.cpu_cores {
            write(&d.join("cpuset.cpus"), cores)?;
            applied.push("cpuset".into());
        }
        if let Some(n) = limits.pids {
            write(&d.join("pids.max"), &n.to_string())?;
            applied.push("pids".into());
        }
        if let (Some(bps), Some((maj, min))) = (limits.io_bps, io_device) {
            write(
                &d.join("io.max"),
                &format!("{maj}:{min} rbps={bps} wbps={bps}"),
            )?;
            applied.push("io".into());
        }
        Ok(())
    }

    pub fn open(root: &Path, parent: &str, name: &str) -> Option<CgroupV2> {
        let dir = root.join(parent).join(name);
        dir.is_dir().then_some(CgroupV2 { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn add(&self, pid: i32) -> Result<(), ExecError> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    pub fn pids(&self) -> Vec<i32> {
        procs(&self.dir.join("cgroup.procs"))
    }

    pub fn usage(&self) -> Usage {
        let d = &self.dir;
        Usage {
            cpu_nanos: read_keyed(&d.join("cpu.stat"), "usage_usec").map(|u| u * 1000),
            memory_peak: super::read_u64(&d.join("memory.peak")),
            oom_kills: read_keyed(&d.join("memory.events"), "oom_kill").unwrap_or(0),
            pids_refused: read_keyed(&d.join("pids.events"), "max").unwrap_or(0),
        }
    }

    /// Usage now; `None` once the cgroup is gone.
    pub fn sample(&self) -> Option<UsageSample> {
        let d = &self.dir;
        let cpu_nanos = read_keyed(&d.join("cpu.stat"), "usage_usec")? * 1000;
        let io = std::fs::read_to_string(d.join("io.stat"))
            .ok()
            .map(|t| io_bytes(&t));
        Some(UsageSample {
            cpu_nanos,
            memory_bytes: super::read_u64(&d.join("memory.current")),
            pids: super::read_u64(&d.join("pids.current")),
            io_read_bytes: io.map(|(r, _)| r),
            io_write_bytes: io.map(|(_, w)| w),
        })
    }

    pub fn kill_all(&self) -> Result<(), ExecError> {
        let kill_file = self.dir.join("cgroup.kill");
        for _ in 0..100 {
            if self.pids().is_empty() {
                return Ok(());
            }
            if kill_file.exists() {
                write(&kill_file, "1")?;
            } else {
                // Frozen, none can fork between the read of the pids and the kill; a freeze
                // that fails only loses that, and the loop goes on until the cgroup is empty.
                let freeze = self.dir.join("cgroup.freeze");
                if let Err(e) = std::fs::write(&freeze, "1") {
                    tracing::debug!("cannot freeze {}: {e}", self.dir.display());
                }
                for pid in self.pids() {
                    // A pid read from the cgroup: at worst it is gone (ESRCH).
                    kill(Pid::from_raw(pid), Signal::SIGKILL).ok();
                }
                write(&freeze, "0")?;
            }
            if wait_empty(|| self.pids(), Duration::from_millis(100)) {
                return Ok(());
            }
        }
        Err(ExecError::Cgroup {
            action: "empty",
            path: self.dir.clone(),
            source: std::io::Error::other("processes survived SIGKILL"),
        })
    }

    pub fn remove(&self) -> Result<(), ExecError> {
        remove_dir(&self.dir)
    }
}
