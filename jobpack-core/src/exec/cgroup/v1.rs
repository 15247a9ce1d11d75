//! cgroup v1: one directory per controller hierarchy (memory, cpu, cpuacct, pids, blkio, freezer).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Usage, err, io_bytes, procs, read_keyed, read_u64, remove_dir, wait_empty, write};
use crate::exec::{ExecError, Limits, UsageSample};

const CONTROLLERS: [&str; 7] = [
    "memory", "cpu", "cpuacct", "pids", "blkio", "freezer", "cpuset",
];

/// Gives a new v1 cpuset directory the parent's CPUs and memory nodes (a v1 cpuset starts
/// empty, and a task cannot join an empty one).
fn inherit_cpuset(dir: &Path) -> Result<(), ExecError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let own = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        if own.trim().is_empty() {
            let theirs =
                std::fs::read_to_string(parent.join(f)).map_err(err("read", &parent.join(f)))?;
            write(&dir.join(f), theirs.trim())?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct CgroupV1 {
    /// (controller, directory) for every controller that is mounted.
    dirs: Vec<(&'static str, PathBuf)>,
}

impl CgroupV1 {
    pub fn create(
        root: &Path,
        parent: &str,
        name: &str,
        limits: &Limits,
        io_device: Option<(u64, u64)>,
    ) -> Result<(CgroupV1, Vec<String>), ExecError> {
        let mut dirs = Vec::new();
        for c in CONTROLLERS {
            let hierarchy = root.join(c);
            // The cpuset hierarchy only for a job pinned to cores.
            if !hierarchy.join("cgroup.procs").exists()
                || (c == "cpuset" && limits.cpu_cores.is_none())
            {
                continue;
            }
            let dir = hierarchy.join(parent).join(name);
            std::fs::create_dir_all(&dir).map_err(err("create", &dir))?;
            if c == "cpuset" {
                // From the top down: each level gets its parent's CPUs and memory nodes.
                let mut at = hierarchy.clone();
                for part in parent
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .chain(std::iter::once(name))
                {
                    at.push(part);
                    inherit_cpuset(&at)?;
                }
            }
            dirs.push((c, dir));
        }
        let cg = CgroupV1 { dirs };
        let mut applied = Vec::new();
        let result = cg.apply(limits, io_device, &mut applied);
        if let Err(e) = result {
            if let Err(r) = cg.remove() {
                tracing::warn!("{r}");
            }
            return Err(e);
        }
        Ok((cg, applied))
    }

    pub fn open(root: &Path, parent: &str, name: &str) -> Option<CgroupV1> {
        let dirs: Vec<_> = CONTROLLERS
            .into_iter()
            .map(|c| (c, root.join(c).join(parent).join(name)))
            .filter(|(_, d)| d.is_dir())
            .collect();
        (!dirs.is_empty()).then_some(CgroupV1 { dirs })
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    fn need(&self, controller: &'static str) -> Result<&Path, ExecError> {
        self.dir(controller).ok_or_else(|| ExecError::Cgroup {
            action: "find the controller",
            path: PathBuf::from(format!("/sys/fs/cgroup/{controller}")),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the v1 {controller} controller is not mounted"),
            ),
        })
    }

    fn apply(
        &self,
        limits: &Limits,
        io_device: Option<(u64, u64)>,
        applied: &mut Vec<String>,
    ) -> Result<(), ExecError> {
        if let Some(mem) = limits.memory_bytes {
            let d = self.need("memory")?;
            write(&d.join("memory.limit_in_bytes"), &mem.to_string())?;
            // No swap either, where swap accounting exists.
            let memsw = d.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &mem.to_string())?;
            }
            applied.push("memory".into());
        }
        if let Some(pct) = limits.cpu_percent {
            let d = self.need("cpu")?;
            write(&d.join("cpu.cfs_period_us"), "100000")?;
            write(
                &d.join("cpu.cfs_quota_us"),
                &(u64::from(pct) * 1000).to_string(),
            )?;
            applied.push("cpu".into());
        }
        if let Some(cores) = &limits.cpu_cores {
            let d = self.need("cpuset")?;
            write(&d.join("cpuset.cpus"), cores)?;
            applied.push("cpuset".into());
        }
        if let Some(n) = limits.pids {
            let d = self.need("pids")?;
            write(&d.join("pids.max"), &n.to_string())?;
            applied.push("pids".into());
        }
        if let (Some(bps), Some((maj, min))) = (limits.io_bps, io_device) {
            let d = self.need("blkio")?;
            write(
                &d.join("blkio.throttle.read_bps_device"),
                &format!("{maj}:{min} {bps}"),
            )?;
            write(
                &d.join("blkio.throttle.write_bps_device"),
                &format!("{maj}:{min} {bps}"),
            )?;
            applied.push("io".into());
        }
        Ok(())
    }

    pub fn add(&self, pid: i32) -> Result<(), ExecError> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub fn pids(&self) -> Vec<i32> {
        // The freezer (or any) hierarchy holds every process of the job.
        self.dirs
            .first()
            .map(|(_, d)| procs(&d.join("cgroup.procs")))
            .unwrap_or_default()
    }

    pub fn usage(&self) -> Usage {
        let mem = self.dir("memory");
        Usage {
            cpu_nanos: self
                .dir("cpuacct")
                .and_then(|d| read_u64(&d.join("cpuacct.usage"))),
            memory_peak: mem.and_then(|d| read_u64(&d.join("memory.max_usage_in_bytes"))),
            oom_kills: mem
                .and_then(|d| {
                    read_keyed(&d.join("memory.oom_control"), "oom_kill")
                        .or_else(|| read_u64(&d.join("memory.failcnt")).map(|f| u64::from(f > 0)))
                })
                .unwrap_or(0),
            pids_refused: self
                .dir("pids")
                .and_then(|d| read_keyed(&d.join("pids.events"), "max"))
                .unwrap_or(0),
        }
    }

    /// Usage now; `None` once the cgroup is gone.
    pub fn sample(&self) -> Option<UsageSample> {
        let cpu = self.dir("cpuacct")?.join("cpuacct.usage");
        let cpu_nanos = read_u64(&cpu)?;
        let io = self
            .dir("blkio")
            .and_then(|d| std::fs::read_to_string(d.join("blkio.throttle.io_service_bytes")).ok())
            .map(|t| io_bytes(&t));
        Some(UsageSample {
            cpu_nanos,
            memory_bytes: self
                .dir("memory")
                .and_then(|d| read_u64(&d.join("memory.usage_in_bytes"))),
            pids: self
                .dir("pids")
                .and_then(|d| read_u64(&d.join("pids.current"))),
            io_read_bytes: io.map(|(r, _)| r),
            io_write_bytes: io.map(|(_, w)| w),
        })
    }

    /// Freeze, SIGKILL every process, thaw, wait until empty.
    pub fn kill_all(&self) -> Result<(), ExecError> {
        let freezer = self.dir("freezer");
        for _ in 0..100 {
            if self.pids().is_empty() {
                return Ok(());
            }
            // Frozen, none can fork between the read of the pids and the kill; a freeze that
            // fails only loses that, and the loop goes on until the cgroup is empty. A frozen
            // task dies of SIGKILL only once thawed, so a thaw that fails is an error.
            if let Some(f) = freezer
                && let Err(e) = std::fs::write(f.join("freezer.state"), "FROZEN")
            {
                tracing::debug!("cannot freeze {}: {e}", f.display());
            }
            for pid in self.pids() {
                // A pid read from the cgroup: at worst it is gone (ESRCH).
                kill(Pid::from_raw(pid), Signal::SIGKILL).ok();
            }
            if let Some(f) = freezer {
                write(&f.join("freezer.state"), "THAWED")?;
            }
            if wait_empty(|| self.pids(), Duration::from_millis(100)) {
                return Ok(());
            }
        }
        let path = self
            .dirs
            .first()
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        Err(ExecError::Cgroup {
            action: "empty",
            path,
            source: std::io::Error::other("processes survived SIGKILL"),
        })
    }

    pub fn remove(&self) -> Result<(), ExecError> {
        let mut first = Ok(());
        for (_, d) in &self.dirs {
            if let Err(e) = remove_dir(d)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }
}
