//! The real `jobpack serve` binary on 127.0.0.1:0 with a temporary data directory, for the
//! integration tests. Jobs run in the strict sandbox as root (CI); elsewhere the server is
//! started with --permissive and the test says so.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

/// One request (with a bearer token if given); the answer's status and body (JSON when it is JSON, else a string).
pub async fn call(
    c: &reqwest::Client,
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut r = c.request(method.parse().unwrap(), s.u(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    // Every 401 tells the client how to authenticate.
    if status == 401 {
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer realm=\"jobpack\""),
            "{method} {path}"
        );
    }
    let bytes = resp.bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    (status, v)
}

/// Statuses a job cannot leave (not every test file uses them).
#[allow(unused_imports)]
pub use jobpack_core::workflow::FINAL;

pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT` or `https://...`.
    pub url: String,
    pub data: PathBuf,
    /// The server's stderr, when it was asked to be captured.
    pub stderr: Option<ChildStderr>,
    /// The rest of its stdout (kept open: a closed pipe would fail the server's later lines).
    pub stdout: BufReader<std::process::ChildStdout>,
}

/// The first of `tools` that is not on PATH, if any (for a stage's printed skip reason).
pub fn missing_tool<'a>(tools: &[&'a str]) -> Option<&'a str> {
    tools.iter().copied().find(|tool| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// A script of the project's `scripts/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

pub fn is_root() -> bool {
    // SAFETY: a plain id query.
    unsafe { libc::geteuid() == 0 }
}

/// How to start a server.
#[derive(Default)]
pub struct Launch<'a> {
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    pub capture_stderr: bool,
}

/// `jobpack` with `args`, its output captured: (exit code, stdout, stderr).
pub fn jobpack(args: &[&str]) -> (i32, String, String) {
    jobpack_in(Path::new("."), args, &[])
}

/// `jobpack` with `args` in `dir` with more environment variables: (exit code, stdout, stderr).
pub fn jobpack_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jobpack"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Server {
    /// A server without authentication (`--auth none`, a laptop's setup).
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--auth", "none"];
        args.extend_from_slice(extra);
        Server::launch(
            data,
            Launch {
                args: &args,
                ..Launch::default()
            },
        )
    }

    pub fn launch(data: &Path, l: Launch<'_>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobpack"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(["--grace", "0.5"])
            .args(l.args)
            .env_remove("JOBPACK_ADMIN_TOKEN")
            // The fixture repositories and data servers are on loopback, which a server refuses
            // to fetch from by default; the SSRF tests set this back to nothing.
            .env("JOBPACK_ALLOW_FETCH_FROM", "127.0.0.0/8")
            // Errors only: a request line per call from every test's server is noise (the
            // observability tests ask for `info`).
            .env("JOBPACK_LOG", "error")
            .envs(l.env.iter().copied())
            .env("XDG_CACHE_HOME", data.join("xdg"))
            .stdout(Stdio::piped())
            .stderr(if l.capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        if !is_root() {
            println!("note: not root, so the server runs jobs with --permissive (no sandbox)");
            cmd.arg("--permissive");
        }
        // Its own process group, ended whole when the test ends (see `Drop`).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("jobpack listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server {
            stderr: child.stderr.take(),
            child,
            url,
            data: data.to_path_buf(),
            stdout,
        }
    }

    pub fn kill(mut self) -> PathBuf {
        self.stop();
        self.data.clone()
    }

    /// SIGKILL to the server and everything in its process group (a sandbox's pid 1 with it).
    fn stop(&mut self) {
        // SAFETY: a signal to the process group the server leads.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn u(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The gRPC door's `host:port`, from the line the server prints after its URL (a server
    /// started with `--grpc-listen`).
    pub fn grpc_addr(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix("jobpack gRPC listening on ")
            .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
            .to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and certificates signed by it, written as PEM files.
pub struct Pki {
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let ca = p.self_signed(&key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// (certificate PEM, PKCS#8 key PEM).
    pub fn leaf(&self, sans: &[&str], cn: &str, ous: &[&str], server: bool) -> (String, String) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        for ou in ous {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, *ou);
        }
        p.distinguished_name
            .push(DnType::OrganizationName, "jobpack tests");
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The project's Python (`.venv`, made by `scripts/setup.sh --tests`), if it can import every
/// one of `modules` (`"grpc, grpc_tools"`).
pub fn venv_python(modules: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let ok = Command::new(&p)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}

/// GETs `path` (a job, batch or workflow) until its `status` is final, for two minutes at most;
/// the last answer.
pub async fn wait_final(c: &reqwest::Client, s: &Server, path: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (_, v) = call(c, s, "GET", path, None, None).await;
        if FINAL.contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Submits `spec` (JSON, no token) and waits for the job to end: its id and its last answer.
pub async fn run_job(
    c: &reqwest::Client,
    s: &Server,
    spec: &serde_json::Value,
) -> (String, serde_json::Value) {
    let (code, v) = call(c, s, "POST", "/v1/jobs", None, Some(spec)).await;
    assert_eq!(code, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_owned();
    let job = wait_final(c, s, &format!("/v1/jobs/{id}")).await;
    (id, job)
}

/// A Debian root file system as a tarball in `dir`: the one `scripts/oci-base.sh` caches
/// (debootstrap minbase bookworm + python3 + a wheel directory `/opt/wheels`), with the line
/// `VARIANT_ID=<marker>` added to its os-release so that it is never mistaken for the host's
/// (this machine may be Debian bookworm too). `Err` says why there is none (not root, no
/// debootstrap or podman: `scripts/setup.sh --tests` installs them).
pub fn marked_debian_rootfs(dir: &Path, marker: &str) -> Result<PathBuf, String> {
    let cache = std::env::var_os("JOBPACK_OCI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/jobpack-oci"));
    let cached = cache.join("bookworm-minbase-python3.tar");
    if !cached.exists() {
        if !is_root() {
            return Err("making a Debian root file system needs root (CI runs as root)".into());
        }
        if let Some(tool) = missing_tool(&["debootstrap", "podman"]) {
            return Err(format!(
                "{tool} is not installed (scripts/setup.sh --tests installs it)"
            ));
        }
        // oci-base.sh also imports the image: into a throw-away store.
        let conf = dir.join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let out = Command::new(script("oci-base.sh"))
            .env("CONTAINERS_STORAGE_CONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "oci-base.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out_path = dir.join(format!("rootfs-{marker}.tar"));
    let mut src = tar::Archive::new(std::fs::File::open(&cached).unwrap());
    let mut b = tar::Builder::new(std::io::BufWriter::new(
        std::fs::File::create(&out_path).unwrap(),
    ));
    let mut marked = false;
    for e in src.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        let kind = h.entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = e.link_name().unwrap().unwrap().into_owned();
            b.append_link(&mut h, &path, &target).unwrap();
        } else if path.ends_with("usr/lib/os-release") {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut text).unwrap();
            text.extend_from_slice(format!("VARIANT_ID={marker}\n").as_bytes());
            h.set_size(text.len() as u64);
            b.append_data(&mut h, &path, &text[..]).unwrap();
            marked = true;
        } else {
            b.append_data(&mut h, &path, &mut e).unwrap();
        }
    }
    b.into_inner().unwrap();
    assert!(marked, "{} has no usr/lib/os-release", cached.display());
    Ok(out_path)
}

/// The in-toto statement a DSSE envelope carries (not verified: what it says).
pub fn statement(env: &serde_json::Value) -> serde_json::Value {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// The `jobpack.json` inside the artifact at `art`.
pub fn manifest(art: &Path) -> serde_json::Value {
    let f = std::fs::File::open(art).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("jobpack.json") {
            return serde_json::from_reader(&mut e).unwrap();
        }
    }
    panic!("no jobpack.json in {}", art.display());
}
