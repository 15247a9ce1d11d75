//! Per-job cgroups, v2 and v1 behind one type, so hybrid hosts (v1 controllers, as on our CI
//! machines) and pure-v2 hosts share every caller.
//!
//! A job's cgroup is created before the job starts, the job's first process is moved into it
//! before it runs anything, limits are written, usage is read at the end, every process left in
//! it is killed, and the cgroup is removed. Nothing here decides policy: a limit that cannot be
//! written is an error the executor turns into a strict-mode failure or a reported gap.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{ExecError, Limits, UsageSample};

mod v1;
mod v2;

/// Which cgroup version this host offers for jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// Detects the cgroup layout under `root` (normally `/sys/fs/cgroup`): pure v2 when the root is a
/// cgroup2 mount with controllers, v1 when a v1 memory hierarchy is mounted (hybrid hosts keep an
/// empty cgroup2 at `unified/`, which cannot limit anything).
pub fn detect(root: &Path) -> Option<Version> {
    if root.join("cgroup.controllers").exists() {
        Some(Version::V2)
    } else if root.join("memory/memory.limit_in_bytes").exists() {
        Some(Version::V1)
    } else {
        None
    }
}

/// Starts the kernel's wait for moving processes between cgroups now, so that a job's move a few
/// milliseconds later does not pay it (best effort; blocking for up to one RCU grace period, so
/// call it off the async threads, ahead of the run).
///
/// Why: moving a process into a cgroup (`cgroup.procs`) takes a system-wide lock whose first
/// writer after a quiet spell waits for an RCU grace period (4-8 ms measured on our hosts); a
/// writer within a grace period of the last one does not wait. This moves the calling thread into
/// the cgroup it is already in (v1: the memory hierarchy's `tasks`; v2: `cgroup.procs` of the
/// process's own cgroup), which changes nothing but takes that lock.
pub fn warm_up(root: &Path) -> Result<(), ExecError> {
    let Some(version) = detect(root) else {
        return Ok(());
    };
    let own = std::fs::read_to_string("/proc/thread-self/cgroup")
        .map_err(err("read", Path::new("/proc/thread-self/cgroup")))?;
    let (file, id) = match version {
        Version::V1 => {
            let rel = v1_group(&own, "memory").ok_or_else(|| ExecError::IsolationUnavailable {
                what: "this thread is in no v1 memory cgroup".into(),
            })?;
            let tid = nix::unistd::gettid().as_raw() as u32;
            (
                root.join("memory")
                    .join(rel.trim_start_matches('/'))
                    .join("tasks"),
                tid,
            )
        }
        Version::V2 => {
            let rel = own.lines().find_map(|l| l.strip_prefix("0::"));
            let rel = rel.ok_or_else(|| ExecError::IsolationUnavailable {
                what: "this process is in no cgroup v2".into(),
            })?;
            (
                root.join(rel.trim_start_matches('/')).join("cgroup.procs"),
                std::process::id(),
            )
        }
    };
    write(&file, &id.to_string())
}

/// The path of the v1 hierarchy holding `controller` in a `/proc/<pid>/cgroup` text
/// (`id:controllers:path` lines).
fn v1_group<'a>(own: &'a str, controller: &str) -> Option<&'a str> {
    own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

/// What a cgroup measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nanos: Option<u64>,
    pub memory_peak: Option<u64>,
    /// Processes the OOM killer killed in this cgroup.
    pub oom_kills: u64,
    /// Forks refused because of the pids limit.
    pub pids_refused: u64,
}

/// One job's cgroup.
#[derive(Debug, Clone)]
pub enum Cgroup {
    V1(v1::CgroupV1),
    V2(v2::CgroupV2),
}

pub(crate) fn err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExecError {
    let path = path.to_path_buf();
    move |source| ExecError::Cgroup {
        action,
        path,
        source,
    }
}

pub(crate) fn write(path: &Path, value: &str) -> Result<(), ExecError> {
    std::fs::write(path, value).map_err(err("write", path))
}

pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.events, cpu.stat, pids.events, memory.oom_control).
pub(crate) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Processes in a `cgroup.procs` file.
pub(crate) fn procs(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Removes a cgroup directory, retrying while the kernel finishes tearing down its processes.
pub(crate) fn remove_dir(path: &Path) -> Result<(), ExecError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(err("remove", path)(e)),
        }
    }
}

impl Cgroup {
    /// Creates the cgroup `<root>/<parent>/<name>` (per controller on v1) and writes `limits`.
    /// Returns the cgroup and the names of the limits it enforces.
    pub fn create(
        root: &Path,
        version: Version,
        parent: &str,
        name: &str,
        limits: &Limits,
        io_device: Option<(u64, u64)>,
    ) -> Result<(Cgroup, Vec<String>), ExecError> {
        match version {
            Version::V1 => {
                let (c, applied) = v1::CgroupV1::create(root, parent, name, limits, io_device)?;
                Ok((Cgroup::V1(c), applied))
            }
            Version::V2 => {
                let (c, applied) = v2::CgroupV2::create(root, parent, name, limits, io_device)?;
                Ok((Cgroup::V2(c), applied))
            }
        }
    }

    /// The existing cgroup `<parent>/<name>`, if there is one (to clean up after a crash).
    pub fn open(root: &Path, version: Version, parent: &str, name: &str) -> Option<Cgroup> {
        match version {
            Version::V1 => v1::CgroupV1::open(root, parent, name).map(Cgroup::V1),
            Version::V2 => v2::CgroupV2::open(root, parent, name).map(Cgroup::V2),
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Cgroup::V1(_) => Version::V1,
            Cgroup::V2(_) => Version::V2,
        }
    }

    /// Moves a process (and so all its future children) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), ExecError> {
        match self {
            Cgroup::V1(c) => c.add(pid),
            Cgroup::V2(c) => c.add(pid),
        }
    }

    /// Processes currently in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        match self {
            Cgroup::V1(c) => c.pids(),
            Cgroup::V2(c) => c.pids(),
        }
    }

    pub fn usage(&self) -> Usage {
        match self {
            Cgroup::V1(c) => c.usage(),
            Cgroup::V2(c) => c.usage(),
        }
    }

    /// A reader of this cgroup's current usage that a run's handle can keep while the
    /// supervisor owns the cgroup (it reads nothing once the cgroup is removed).
    pub fn probe(&self) -> Probe {
        Probe(self.clone())
    }

    /// Kills every process in the cgroup (none can escape by forking meanwhile) and waits until
    /// it is empty.
    pub fn kill_all(&self) -> Result<(), ExecError> {
        match self {
            Cgroup::V1(c) => c.kill_all(),
            Cgroup::V2(c) => c.kill_all(),
        }
    }

    /// Kills what is left and removes the cgroup.
    pub fn destroy(&self) -> Result<(), ExecError> {
        self.kill_all()?;
        match self {
            Cgroup::V1(c) => c.remove(),
            Cgroup::V2(c) => c.remove(),
        }
    }

    /// The directories of this cgroup (one per controller on v1).
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V1(c) => c.paths(),
            Cgroup::V2(c) => vec![c.path().to_path_buf()],
        }
    }
}

/// Waits until `pids()` is empty, for at most `limit`.
pub(crate) fn wait_empty(pids: impl Fn() -> Vec<i32>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if pids().is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The CPUs of a cpuset list (`0-3,6`): each number or range, ascending, at most 4096 CPUs.
pub fn parse_cpu_list(list: &str) -> Result<std::collections::BTreeSet<u32>, String> {
    let mut out = std::collections::BTreeSet::new();
    let bad = || format!("cpu cores {list:?}: expected a list like 0-1 or 2,3");
    if list.trim().is_empty() {
        return Err(bad());
    }
    for part in list.trim().split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let (a, b): (u32, u32) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b || b >= 4096 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// The CPUs this machine can run jobs on (`/sys/devices/system/cpu/online`).
pub fn online_cpus() -> Option<std::collections::BTreeSet<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    parse_cpu_list(text.trim()).ok()
}

/// `list` if it names only CPUs this machine has online; else why not.
pub fn check_cpu_cores(list: &str) -> Result<(), String> {
    let want = parse_cpu_list(list)?;
    if let Some(online) = online_cpus() {
        let missing: Vec<String> = want.difference(&online).map(u32::to_string).collect();
        if !missing.is_empty() {
            return Err(format!(
                "cpu cores {list:?}: CPU {} not available (online: {})",
                missing.join(", "),
                online
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    Ok(())
}

/// Reads a cgroup's usage now; it can do nothing else (see [`Cgroup::probe`]).
#[derive(Debug, Clone)]
pub struct Probe(Cgroup);

impl Probe {
    /// CPU used so far, memory and processes now, bytes read and written so far; `None` once
    /// the cgroup is gone (the run ended).
    pub fn sample(&self) -> Option<UsageSample> {
        match &self.0 {
            Cgroup::V1(c) => c.sample(),
            Cgroup::V2(c) => c.sample(),
        }
    }
}

/// The sums of the `Read` and `Write` (v1 `blkio.throttle.io_service_bytes`) or `rbytes=` and
/// `wbytes=` (v2 `io.stat`) fields of every device.
pub(crate) fn io_bytes(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(_device) = words.next() else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        match rest.as_slice() {
            ["Read", n] => read = read.saturating_add(n.parse().unwrap_or(0)),
            ["Write", n] => write = write.saturating_add(n.parse().unwrap_or(0)),
            fields => {
                for f in fields {
                    if let Some(n) = f.strip_prefix("rbytes=") {
                        read = read.saturating_add(n.parse().unwrap_or(0));
                    } else if let Some(n) = f.strip_prefix("wbytes=") {
                        write = write.saturating_add(n.parse().unwrap_or(0));
                    }
                }
            }
        }
    }
    (read, write)
}

#[cfg(test)]
mod cpu_list_tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_bad_ones_say_so() {
        assert_eq!(
            parse_cpu_list("0-1")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(parse_cpu_list("2,3,5-6").unwrap().len(), 4);
        for bad in ["", "a", "3-1", "1-", "9999", "0,,1"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
        assert!(check_cpu_cores("4095").is_err());
        assert!(check_cpu_cores("0").is_ok());
    }

    #[test]
    fn io_bytes_sums_every_device_of_either_version() {
        let v1 =
            "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:16 Read 1\n8:16 Write 2\nTotal 4611\n";
        assert_eq!(io_bytes(v1), (4097, 514));
        let v2 =
            "8:0 rbytes=100 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n259:0 rbytes=5 wbytes=0\n";
        assert_eq!(io_bytes(v2), (105, 20));
        assert_eq!(io_bytes(""), (0, 0));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod warm_up_tests {
    use super::*;

    /// The thread's own v1 memory cgroup, as the kernel names it.
    fn own_memory_cgroup() -> Option<String> {
        let own = std::fs::read_to_string("/proc/thread-self/cgroup").ok()?;
        v1_group(&own, "memory").map(str::to_owned)
    }

    #[test]
    fn the_v1_group_of_a_controller_is_found_in_a_joined_hierarchy() {
        let own = "12:cpu,cpuacct:/a\n4:memory:/jobs/x\n1:name=systemd:/s\n0::/u\n";
        assert_eq!(v1_group(own, "memory"), Some("/jobs/x"));
        assert_eq!(v1_group(own, "cpuacct"), Some("/a"));
        assert_eq!(v1_group(own, "pids"), None);
    }

    #[test]
    fn warm_up_writes_this_thread_into_its_own_cgroup() {
        // A v1 layout under a directory of our own: the tid lands in the thread's own group.
        let Some(rel) = own_memory_cgroup() else {
            println!("SKIPPED: this thread is in no v1 memory cgroup");
            return;
        };
        let root = tempfile::tempdir().unwrap();
        let group = root.path().join("memory").join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(root.path().join("memory/memory.limit_in_bytes"), "max").unwrap();
        warm_up(root.path()).unwrap();
        let tid = nix::unistd::gettid().as_raw().to_string();
        assert_eq!(std::fs::read_to_string(group.join("tasks")).unwrap(), tid);
        // No cgroup layout at all: nothing to do, and no error.
        let empty = tempfile::tempdir().unwrap();
        warm_up(empty.path()).unwrap();
    }

    #[test]
    fn warm_up_on_the_host_moves_nothing() {
        if !nix::unistd::geteuid().is_root() || detect(Path::new("/sys/fs/cgroup")).is_none() {
            println!("SKIPPED: needs root and a cgroup hierarchy at /sys/fs/cgroup");
            return;
        }
        let before = std::fs::read_to_string("/proc/thread-self/cgroup").unwrap();
        warm_up(Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(
            std::fs::read_to_string("/proc/thread-self/cgroup").unwrap(),
            before
        );
    }
}
