//! The job's script started as `/usr/bin/env bash` would start it, one exec sooner.
//!
//! Every artifact's `run.sh` packed before 2026-12-03 begins with `#!/usr/bin/env bash` (newer
//! ones with `#!/bin/sh`, which the kernel starts directly): the kernel execs env(1), which
//! searches the job's PATH for bash and execs it as `bash ./run.sh ARGS...`. That is two program
//! starts (each a dynamic link and a libc start-up, a millisecond together on our machines) where
//! one does the work. The job's process does env's part itself, just before its exec: when the
//! program is executable and its first line is exactly [`ENV_BASH`], and `/usr/bin/env` is
//! there, it execs `DIR/bash` for each directory of the job's PATH in order, with env's argv
//! (`bash PROGRAM ARGS...`), going on where env's `execvp` goes on (the name missing or not
//! executable there). If none starts, or any check fails, it execs the program the ordinary way,
//! so that every failure is the kernel's or env's own, as before.
//!
//! All of it is prepared in the parent ([`EnvBash::new`]): the job's process shares pid 1's
//! memory until it execs and may not allocate.

use std::ffi::{CStr, CString, c_char};

/// The first line this applies to, newline included.
pub(crate) const ENV_BASH: &[u8] = b"#!/usr/bin/env bash\n";

/// The interpreter the first line names.
const ENV: &CStr = c"/usr/bin/env";

/// `bash` on the job's PATH, and the argv env(1) would give it.
pub(crate) struct EnvBash {
    /// `DIR/bash` for each directory of the job's PATH, in order; empty when the PATH has an
    /// empty or relative entry (execvp would search the working directory: left to env).
    pub candidates: Vec<CString>,
    /// `bash`, the program as the job names it, then the job's other arguments; NULL-ended.
    /// Points into `_bash` and into the plan's own strings (`exe`, argv), which outlive it.
    pub argv_ptrs: Vec<*const c_char>,
    _bash: CString,
}

impl EnvBash {
    /// What `exe` with these arguments and environment needs; `exe` and `argv` are the plan's
    /// own strings (heap buffers that do not move when the plan does).
    pub(crate) fn new(exe: &CStr, argv: &[CString], envp: &[CString]) -> EnvBash {
        let path = envp
            .iter()
            .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
            .unwrap_or_default();
        let dirs: Vec<&[u8]> = path.split(|&b| b == b':').collect();
        let usable = !path.is_empty() && dirs.iter().all(|d| d.starts_with(b"/"));
        let candidates = if usable {
            dirs.iter()
                .filter_map(|d| {
                    let mut p = d.to_vec();
                    if !p.ends_with(b"/") {
                        p.push(b'/');
                    }
                    p.extend_from_slice(b"bash");
                    CString::new(p).ok()
                })
                .collect()
        } else {
            Vec::new()
        };
        let bash = c"bash".to_owned();
        let argv_ptrs = [bash.as_ptr(), exe.as_ptr()]
            .into_iter()
            .chain(argv.iter().skip(1).map(|a| a.as_ptr()))
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        EnvBash {
            candidates,
            argv_ptrs,
            _bash: bash,
        }
    }
}

/// Whether the kernel would run `exe` as `/usr/bin/env bash` (see the module's text). Only
/// system calls on the stack: safe in the job's process before its exec.
pub(crate) fn runs_env_bash(exe: &CStr) -> bool {
    // SAFETY: NUL-terminated strings; the descriptor is ours and closed here.
    unsafe {
        if libc::access(exe.as_ptr(), libc::X_OK) != 0
            || libc::access(ENV.as_ptr(), libc::X_OK) != 0
        {
            return false;
        }
        let fd = libc::open(
            exe.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        );
        if fd < 0 {
            return false;
        }
        let mut head = [0u8; ENV_BASH.len()];
        let mut got = 0;
        while got < head.len() {
            let n = libc::read(fd, head[got..].as_mut_ptr().cast(), head.len() - got);
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        libc::close(fd);
        got == head.len() && head == ENV_BASH
    }
}

/// Whether env's `execvp` goes on to the PATH's next directory after this exec error.
pub(crate) fn try_next(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn strings(ptrs: &[*const c_char]) -> Vec<String> {
        let (last, rest) = ptrs.split_last().unwrap();
        assert!(last.is_null());
        rest.iter()
            // SAFETY: the pointers are into CStrings alive in the test.
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn bash_is_looked_for_in_each_directory_of_the_path_and_given_envs_argv() {
        let exe = c("./run.sh");
        let argv = [c("./run.sh"), c("one"), c("two words")];
        let envp = [c("HOME=/tmp"), c("PATH=/usr/local/bin:/usr/bin/:/bin")];
        let e = EnvBash::new(&exe, &argv, &envp);
        let found: Vec<_> = e.candidates.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(found, ["/usr/local/bin/bash", "/usr/bin/bash", "/bin/bash"]);
        assert_eq!(
            strings(&e.argv_ptrs),
            ["bash", "./run.sh", "one", "two words"]
        );
    }

    #[test]
    fn a_path_that_would_search_the_working_directory_is_left_to_env() {
        let exe = c("./run.sh");
        let argv = [c("./run.sh")];
        for path in [
            "PATH=",
            "PATH=/usr/bin::/bin",
            "PATH=bin:/usr/bin",
            "PATH=/usr/bin:",
        ] {
            let e = EnvBash::new(&exe, &argv, &[c(path)]);
            assert!(e.candidates.is_empty(), "{path}");
        }
        assert!(
            EnvBash::new(&exe, &argv, &[c("HOME=/")])
                .candidates
                .is_empty()
        );
    }

    #[test]
    fn only_an_executable_script_whose_first_line_is_exactly_env_bash_qualifies() {
        if !std::path::Path::new("/usr/bin/env").exists() {
            println!("SKIPPED: no /usr/bin/env here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8], mode: u32| {
            let p = dir.path().join(name);
            std::fs::File::create(&p).unwrap().write_all(body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            CString::new(p.to_str().unwrap()).unwrap()
        };
        let yes = write("yes", b"#!/usr/bin/env bash\nset -e\n", 0o755);
        assert!(runs_env_bash(&yes));
        for (name, body, mode) in [
            ("not-executable", &b"#!/usr/bin/env bash\n"[..], 0o644),
            ("other-interpreter", b"#!/usr/bin/env python3\n", 0o755),
            ("option", b"#!/usr/bin/env bash -x\n", 0o755),
            ("carriage-return", b"#!/usr/bin/env bash\r\n", 0o755),
            ("direct", b"#!/bin/bash\n", 0o755),
            ("short", b"#!/usr/bin/env bas", 0o755),
            ("empty", b"", 0o755),
        ] {
            assert!(!runs_env_bash(&write(name, body, mode)), "{name}");
        }
        assert!(
            !runs_env_bash(&c(dir.path().to_str().unwrap())),
            "a directory"
        );
        assert!(!runs_env_bash(c"/nonexistent/run.sh"));
    }

    #[test]
    fn env_goes_on_past_a_missing_or_forbidden_name_and_stops_at_anything_else() {
        for e in [libc::ENOENT, libc::EACCES, libc::ENOTDIR] {
            assert!(try_next(e));
        }
        for e in [libc::ENOEXEC, libc::E2BIG, libc::ELOOP, libc::ENOMEM] {
            assert!(!try_next(e));
        }
    }
}
