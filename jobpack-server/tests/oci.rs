//! The OCI stage: artifacts built into real images and run as containers with buildah, from a
//! base image made locally from Debian's packages (`scripts/oci-base.sh`: debootstrap + import;
//! no registry is ever asked). Skips, saying why, only where buildah, podman or debootstrap are
//! missing (`scripts/setup.sh --tests` installs them) or the machine is not root.

mod common;

use std::path::PathBuf;

use common::{is_root, jobpack_in, manifest, missing_tool, script};

const BASE: &str = "localhost/jobpack-base:bookworm";

struct Oci {
    tmp: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Oci {
    /// An image store in a temporary directory with the base image in it, or why not.
    fn new() -> Result<Oci, String> {
        if !is_root() {
            return Err("building images with buildah needs root (CI runs as root)".into());
        }
        if let Some(tool) = missing_tool(&["buildah", "podman", "debootstrap"]) {
            return Err(format!(
                "{tool} is not installed (scripts/setup.sh --tests installs it)"
            ));
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        std::fs::write(
            t.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                t.display()
            ),
        )
        .unwrap();
        std::fs::write(
            t.join("registries.conf"),
            "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n",
        )
        .unwrap();
        let env = vec![
            (
                "CONTAINERS_STORAGE_CONF".into(),
                t.join("storage.conf").display().to_string(),
            ),
            (
                "CONTAINERS_REGISTRIES_CONF".into(),
                t.join("registries.conf").display().to_string(),
            ),
            ("JOBPACK_BUILDER".into(), "buildah".into()),
        ];
        let out = std::process::Command::new(script("oci-base.sh"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the base image could not be made: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), BASE);
        Ok(Oci { tmp, env })
    }

    fn jobpack(&self, args: &[&str]) -> (i32, String, String) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        jobpack_in(self.tmp.path(), args, &env)
    }

    /// Packs `spec` with `files` as its code; the artifact's path.
    fn pack(&self, name: &str, spec: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(dir.join("code")).unwrap();
        for (f, text) in files {
            std::fs::write(dir.join("code").join(f), text).unwrap();
        }
        std::fs::write(dir.join("spec.yaml"), spec).unwrap();
        let art = dir.join("artifact.tar.gz");
        let (code, out, err) = self.jobpack(&[
            "pack",
            dir.join("spec.yaml").to_str().unwrap(),
            "--code",
            dir.join("code").to_str().unwrap(),
            "-o",
            art.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(code, 0, "{out}\n{err}");
        art
    }
}

fn skip(test: &str) -> Option<Oci> {
    match Oci::new() {
        Ok(o) => Some(o),
        Err(why) => {
            println!("SKIPPED {test}: {why}");
            None
        }
    }
}

#[test]
fn artifacts_build_and_run_as_containers() {
    let Some(oci) = skip("artifacts_build_and_run_as_containers") else {
        return;
    };

    // A plain shell job: the container prints what the sandbox prints.
    let shell = oci.pack(
        "shell",
        &format!(
            "name: shell\nbase_image: {BASE}\nenv: {{GREETING: \"it's $HOME-free\"}}\n\
             command: \"echo $GREETING; cat words.txt; ls; echo exit-soon; exit 3\"\n"
        ),
        &[("words.txt", "one two\n")],
    );
    let m = manifest(&shell);
    assert_eq!(m["runtime"]["kind"], "none", "{m:#}");
    assert_eq!(
        m["base_image"],
        serde_json::json!({"reference": BASE, "pinned": false})
    );
    let (code, container_out, err) = oci.jobpack(&["run", shell.to_str().unwrap(), "--container"]);
    assert_eq!(code, 3, "the container's exit code: {err}");
    let (code, sandbox_out, err2) = oci.jobpack(&["run", shell.to_str().unwrap()]);
    assert_eq!(code, 3, "{err2}");
    assert_eq!(
        container_out, sandbox_out,
        "container and sandbox differ\n{err}"
    );
    assert_eq!(
        container_out,
        "it's $HOME-free\none two\nwords.txt\nexit-soon\n"
    );

    // The same artifact built twice: the same image (config digest), thanks to --timestamp.
    let build = |tag: &str| {
        let (code, out, err) = oci.jobpack(&["build", shell.to_str().unwrap(), "-t", tag]);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("COMMIT"),
            "the builder's output is streamed: {err}"
        );
        out.trim().to_owned()
    };
    let (a, b) = (build("localhost/shell:a"), build("localhost/shell:b"));
    assert!(a.starts_with("sha256:") || a.len() == 64, "{a}");
    println!("image id of two builds of one artifact: {a} and {b}");
    assert_eq!(
        a, b,
        "two builds of the same artifact gave different images"
    );

    // A Python job whose requirements.txt is installed from the base image's wheel directory,
    // before the code is copied.
    let py = oci.pack(
        "python",
        &format!("name: py\nbase_image: {BASE}\ncommand: \"python3 main.py\"\n"),
        &[
            ("requirements.txt", "jobpack-hello==1.0\n"),
            (
                "main.py",
                "import jobpack_hello\nprint(jobpack_hello.greet('container'))\n",
            ),
        ],
    );
    let m = manifest(&py);
    assert_eq!(m["runtime"]["kind"], "python");
    assert_eq!(
        m["runtime"]["markers"],
        serde_json::json!(["requirements.txt"])
    );
    let (code, out, err) = oci.jobpack(&["run", py.to_str().unwrap(), "--container"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello, container\n");
    assert!(
        err.contains("Successfully installed jobpack-hello-1.0"),
        "{err}"
    );

    // A job whose install step fails: the build fails and says why.
    let bad = oci.pack(
        "failing",
        &format!(
            "name: failing\nbase_image: {BASE}\ncommand: \"true\"\n\
             install: [\"echo about to fail >&2; exit 7\"]\n"
        ),
        &[],
    );
    let (code, out, err) = oci.jobpack(&["build", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("about to fail"), "the RUN's own output: {err}");
    assert!(err.contains("exit status 7"), "the builder's error: {err}");
    assert!(err.contains("the build failed: buildah exited"), "{err}");
    assert!(out.is_empty(), "no image id for a failed build: {out}");
}

/// The outputs digest a `jobpack run` reported on stderr.
fn outputs_of(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("jobpack: outputs "))
        .unwrap_or_else(|| panic!("no outputs line in {stderr}"))
        .to_owned()
}

#[test]
fn a_runtime_runs_the_same_bytes_in_the_sandbox_and_the_container() {
    let Some(mut oci) = skip("a_runtime_runs_the_same_bytes_in_the_sandbox_and_the_container")
    else {
        return;
    };
    let rootfs = common::marked_debian_rootfs(oci.tmp.path(), "oci-test").unwrap();
    let store = oci.tmp.path().join("runtimes");
    oci.env
        .push(("JOBPACK_RUNTIMES".into(), store.display().to_string()));
    let (code, reference, err) =
        oci.jobpack(&["runtime", "import", "py", rootfs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // The job reads the runtime's os-release and Python, and writes outputs from both.
    let art = oci.pack(
        "runtime",
        &format!(
            "name: on-runtime\nruntime_fs: {}\ncommand: \"grep ^VARIANT_ID= /etc/os-release; \
             python3 --version; python3 main.py\"\n",
            reference.trim()
        ),
        &[(
            "main.py",
            "import os, sys\nos.makedirs('out', exist_ok=True)\n\
             open('out/version.txt', 'w').write(sys.version)\n\
             open('out/os.txt', 'w').write(open('/etc/os-release').read())\nprint('wrote out/')\n",
        )],
    );
    let (code, sandbox_out, sandbox_err) =
        oci.jobpack(&["run", art.to_str().unwrap(), "--outputs"]);
    assert_eq!(code, 0, "{sandbox_err}");
    assert!(
        sandbox_out.starts_with("VARIANT_ID=oci-test\nPython 3.11"),
        "{sandbox_out}"
    );
    let (code, container_out, container_err) =
        oci.jobpack(&["run", art.to_str().unwrap(), "--container", "--outputs"]);
    assert_eq!(code, 0, "{container_err}");
    assert!(
        container_err.contains("jobpack: loaded the runtime py@sha256:"),
        "{container_err}"
    );
    assert_eq!(container_out, sandbox_out, "the same output");
    assert_eq!(
        outputs_of(&container_err),
        outputs_of(&sandbox_err),
        "the same outputs (every file's mode, size and sha256)"
    );
}
