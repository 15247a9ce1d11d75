//! The [`Plan`] as bytes, for the spawner (a copy of this program in another process): every
//! field pid 1 reads, in order, each number as a native-endian u64 and each string as its length
//! and bytes. The names of the ops (for error messages) stay with the server. [`decode`] checks
//! every length against what is left, so a cut or padded message is refused, never half read.

use std::ffi::{CStr, CString};

use nix::mount::MsFlags;
use nix::sys::resource::Resource;

use super::{MountOp, Plan};

/// Resources a plan's rlimits may name (decoded by their number).
const RESOURCES: [Resource; 8] = [
    Resource::RLIMIT_CORE,
    Resource::RLIMIT_NOFILE,
    Resource::RLIMIT_FSIZE,
    Resource::RLIMIT_NPROC,
    Resource::RLIMIT_AS,
    Resource::RLIMIT_CPU,
    Resource::RLIMIT_STACK,
    Resource::RLIMIT_MEMLOCK,
];

/// What the child reads of a plan, as bytes (the names of its ops stay with the server).
pub(super) fn encode(p: &Plan) -> Vec<u8> {
    let mut o = Out(Vec::with_capacity(4096));
    o.c(&p.root);
    o.u64(ulong(p.root_flags.bits()));
    o.u64(p.ops.len() as u64);
    for op in &p.ops {
        match op {
            MountOp::Bind { src, dst, flags } => {
                o.u64(0);
                o.c(src);
                o.c(dst);
                o.u64(ulong(flags.bits()));
            }
            MountOp::BindNoFollow { src, dst, flags } => {
                o.u64(1);
                o.c(src);
                o.c(dst);
                o.u64(ulong(flags.bits()));
            }
            MountOp::BindBeneath {
                root,
                rel,
                dst,
                flags,
            } => {
                o.u64(2);
                o.c(root);
                o.c(rel);
                o.c(dst);
                o.u64(ulong(flags.bits()));
            }
            MountOp::Tmpfs { dst, data } => {
                o.u64(3);
                o.c(dst);
                o.c(data);
            }
            MountOp::Proc { dst } => {
                o.u64(4);
                o.c(dst);
            }
        }
    }
    o.c(&p.workdir);
    o.c(&p.hostname);
    o.u64(p.lo_up.into());
    o.u64(p.rlimits.len() as u64);
    for &(res, lim) in &p.rlimits {
        o.u64(res as i64 as u64);
        o.u64(lim);
    }
    o.u64(p.setgroups.into());
    o.u64(p.last_cap.into());
    o.u64(p.filter.len() as u64);
    for i in &p.filter {
        o.u64(u64::from(i.code) | u64::from(i.jt) << 16 | u64::from(i.jf) << 24);
        o.u64(i.k.into());
    }
    o.c(&p.exe);
    o.u64(p.argv_area.0 as u64);
    o.u64(p.argv_area.1 as u64);
    o.c(&p.title);
    for list in [&p._argv, &p._envp] {
        o.u64(list.len() as u64);
        for c in list {
            o.c(c);
        }
    }
    o.u64(p.job_stack.len() as u64);
    o.0
}

/// The plan `encode` wrote; `None` if the bytes are not one.
pub(super) fn decode(b: &[u8]) -> Option<Plan> {
    let mut i = In(b);
    let root = i.c()?;
    let root_flags = i.flags()?;
    let mut ops = Vec::new();
    for _ in 0..i.count()? {
        ops.push(match i.u64()? {
            0 => MountOp::Bind {
                src: i.c()?,
                dst: i.c()?,
                flags: i.flags()?,
            },
            1 => MountOp::BindNoFollow {
                src: i.c()?,
                dst: i.c()?,
                flags: i.flags()?,
            },
            2 => MountOp::BindBeneath {
                root: i.c()?,
                rel: i.c()?,
                dst: i.c()?,
                flags: i.flags()?,
            },
            3 => MountOp::Tmpfs {
                dst: i.c()?,
                data: i.c()?,
            },
            4 => MountOp::Proc { dst: i.c()? },
            _ => return None,
        });
    }
    let workdir = i.c()?;
    let hostname = i.c()?;
    let lo_up = i.u64()? != 0;
    let mut rlimits = Vec::new();
    for _ in 0..i.count()? {
        let n = i.u64()?;
        let res = *RESOURCES.iter().find(|r| **r as i64 as u64 == n)?;
        rlimits.push((res, i.u64()?));
    }
    let setgroups = i.u64()? != 0;
    let last_cap = u32::try_from(i.u64()?).ok()?;
    let mut filter = Vec::new();
    for _ in 0..i.count()? {
        let w = i.u64()?;
        filter.push(super::seccomp::Insn {
            code: w as u16,
            jt: (w >> 16) as u8,
            jf: (w >> 24) as u8,
            k: u32::try_from(i.u64()?).ok()?,
        });
    }
    let exe = i.c()?;
    let argv_area = (i.u64()? as usize, i.u64()? as usize);
    let title = i.c()?;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        for _ in 0..i.count()? {
            list.push(i.c()?);
        }
    }
    let [argv, envp] = lists;
    let job_stack = vec![0; usize::try_from(i.u64()?).ok()?.min(16 << 20)];
    if !i.0.is_empty() {
        return None;
    }
    let env_bash = super::shebang::EnvBash::new(&exe, &argv, &envp);
    Some(Plan {
        root,
        root_flags,
        ops,
        op_names: Vec::new(),
        workdir,
        hostname,
        lo_up,
        rlimits,
        setgroups,
        last_cap,
        filter,
        exe,
        argv_area,
        title,
        argv_ptrs: super::pointers(&argv),
        envp_ptrs: super::pointers(&envp),
        _argv: argv,
        _envp: envp,
        job_stack,
        env_bash,
    })
}

/// A `c_ulong` (flags) as the wire's u64 (the same type on 64-bit Linux, wider on 32-bit).
#[allow(clippy::useless_conversion)]
pub(super) fn ulong(v: libc::c_ulong) -> u64 {
    u64::from(v)
}

struct Out(Vec<u8>);

impl Out {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn c(&mut self, c: &CStr) {
        self.u64(c.to_bytes().len() as u64);
        self.0.extend_from_slice(c.to_bytes());
    }
}

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.take(8)?.try_into().ok()?))
    }
    /// A length that the rest of the input can hold (each item takes at least 8 bytes).
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len() / 8).then_some(n)
    }
    #[allow(clippy::useless_conversion)]
    fn flags(&mut self) -> Option<MsFlags> {
        Some(MsFlags::from_bits_retain(self.u64()?.try_into().ok()?))
    }
    fn c(&mut self) -> Option<CString> {
        let n = usize::try_from(self.u64()?).ok()?;
        CString::new(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::sandbox::PlanInput;
    use crate::exec::{Mount, SharedDir};

    /// A plan with one op of each kind, a few rlimits and the real seccomp filter.
    fn a_plan(dir: &std::path::Path) -> Plan {
        let (job, root) = (dir.join("job"), dir.join("root"));
        for d in [&job, &root] {
            std::fs::create_dir_all(d).unwrap();
        }
        Plan::build(PlanInput {
            job_dir: &job,
            root_dir: &root,
            create_skeleton: true,
            rootfs: None,
            tmp_size_mb: 64,
            network_none: true,
            argv: &["sh".into(), "-c".into(), "echo 'a b' \"$X\"".into()],
            env: &[("X".into(), "é=1".into()), ("PATH".into(), "/bin".into())],
            rlimits: vec![(Resource::RLIMIT_CORE, 0), (Resource::RLIMIT_NOFILE, 1024)],
            parent_is_root: true,
            mounts: &[Mount {
                source: dir.to_path_buf(),
                target: "deps/a".into(),
                read_only: true,
            }],
            // Outside the sandbox's own directories (/tmp is one); never opened here.
            shared_dirs: &[SharedDir {
                root: "/srv/jobpack-spawner-test".into(),
                rel: "w".into(),
            }],
        })
        .unwrap()
    }

    #[test]
    fn a_plan_crosses_to_the_spawner_whole() {
        let dir = tempfile::tempdir().unwrap();
        let plan = a_plan(dir.path());
        let bytes = encode(&plan);
        let back = decode(&bytes).expect("a plan's own bytes decode");
        // Everything pid 1 reads came across (the encoding covers every field it reads).
        assert_eq!(encode(&back), bytes);
        assert_eq!(back.root, plan.root);
        assert_eq!(back.ops.len(), plan.ops.len());
        assert!(
            matches!(back.ops.iter().find(|o| matches!(o, MountOp::BindBeneath { .. })),
            Some(MountOp::BindBeneath { rel, .. }) if rel.as_bytes() == b"w")
        );
        assert_eq!(back.rlimits, plan.rlimits);
        assert_eq!(back.filter, plan.filter);
        assert!(!back.filter.is_empty());
        assert_eq!(back._argv, plan._argv);
        assert_eq!(back._envp, plan._envp);
        assert_eq!(back.job_stack.len(), plan.job_stack.len());
        // The pointer arrays point into the decoded plan's own strings, NULL-terminated.
        assert_eq!(back.argv_ptrs.len(), back._argv.len() + 1);
        assert!(back.argv_ptrs.last().unwrap().is_null());
        for (p, c) in back.argv_ptrs.iter().zip(&back._argv) {
            assert_eq!(*p, c.as_ptr());
        }
    }

    #[test]
    fn a_cut_or_padded_plan_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode(&a_plan(dir.path()));
        for n in 0..bytes.len() {
            assert!(
                decode(&bytes[..n]).is_none(),
                "cut at {n} of {}",
                bytes.len()
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode(&padded).is_none());
        // A count larger than the input could hold is refused before anything is allocated.
        let mut huge = bytes.clone();
        let ops_at = 8 + plan_root_len(&bytes) + 8;
        huge[ops_at..ops_at + 8].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert!(decode(&huge).is_none());
        // A string with a NUL inside is not a C string.
        let mut nul = bytes;
        nul[8] = 0;
        assert!(decode(&nul).is_none());
    }

    /// The length of the root path, the first field.
    fn plan_root_len(bytes: &[u8]) -> usize {
        u64::from_ne_bytes(bytes[..8].try_into().unwrap()) as usize
    }
}
