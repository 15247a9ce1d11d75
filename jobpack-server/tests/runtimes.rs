//! Runtimes: a job's root file system named and pinned by digest (`runtime_fs`). The fixture is
//! a real Debian root file system (debootstrap, `scripts/oci-base.sh`) whose os-release carries
//! a marker, so what a job prints is the runtime's and not the host's. Through the command line
//! (`jobpack runtime import|list|test|rm`, `pack`, `run`) and the server (`/v1/runtimes`, jobs
//! pinned to one, receipts and provenance naming it, the result cache telling runtimes apart),
//! with the attacks beside: hostile tarballs, bad names, non-admins, wrong pins.

mod common;

use std::path::Path;

use common::{Launch, Server, call, jobpack_in, manifest, marked_debian_rootfs, statement};
use serde_json::{Value, json};

const ADMIN: &str = "jp_test-admin-token-0123456789abcdef";

/// What the jobs run: the runtime's marker, its Python, its wheel directory.
const PROBE: &str = "grep ^VARIANT_ID= /etc/os-release || echo no-marker; python3 --version; \
                     ls /opt/wheels 2>/dev/null || echo no-wheels";

fn fixture(dir: &Path, test: &str, marker: &str) -> Option<std::path::PathBuf> {
    match marked_debian_rootfs(dir, marker) {
        Ok(p) => Some(p),
        Err(why) => {
            println!("SKIPPED {test}: {why}");
            None
        }
    }
}

#[test]
fn cli_jobs_run_on_the_runtime_they_pin_not_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(rootfs) = fixture(
        tmp.path(),
        "cli_jobs_run_on_the_runtime_they_pin",
        "cli-test",
    ) else {
        return;
    };
    let store = tmp.path().join("store");
    let env = [("JOBPACK_RUNTIMES", store.to_str().unwrap())];
    let jp = |args: &[&str]| jobpack_in(tmp.path(), args, &env);

    let (code, out, err) = jp(&["runtime", "import", "py", rootfs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let reference = out.trim().to_owned();
    let digest = reference.strip_prefix("py@").unwrap().to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{reference}"
    );
    // The same tarball imported again under another name: the same digest.
    let (code, again, err) = jp(&["runtime", "import", "py-again", rootfs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again.trim(), format!("py-again@{digest}"));
    let (code, list, _) = jp(&["runtime", "list", "--json"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(
        list[0]["os_release"], "Debian GNU/Linux 12 (bookworm)",
        "{list:#}"
    );
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (code, probe, err) = jp(&["runtime", "test", "py"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        probe.contains("Debian GNU/Linux 12") && probe.contains("Python 3."),
        "{probe}"
    );

    // A spec naming it by name is pinned when packed; the job sees the runtime's files.
    let spec = tmp.path().join("spec.yaml");
    let write_spec = |extra: &str| {
        std::fs::write(
            &spec,
            format!(
                "name: rt\n{extra}command: {}\n",
                serde_json::to_string(PROBE).unwrap()
            ),
        )
        .unwrap();
    };
    write_spec("runtime_fs: py\n");
    let art = tmp.path().join("a.tar.gz");
    let code_dir = tmp.path().join("code");
    std::fs::create_dir(&code_dir).unwrap();
    let pack = |out: &Path| {
        jp(&[
            "pack",
            spec.to_str().unwrap(),
            "--code",
            code_dir.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
    };
    let (code, _, err) = pack(&art);
    assert_eq!(code, 0, "{err}");
    let m = manifest(&art);
    assert_eq!(m["runtime_fs"]["kind"], "runtime", "{m:#}");
    assert_eq!(m["runtime_fs"]["digest"], digest.as_str());
    assert_eq!(
        m["spec"]["runtime_fs"],
        reference.as_str(),
        "the spec is pinned"
    );
    let image = m["runtime_fs"]["image"].as_str().unwrap();
    assert!(
        image.starts_with("localhost/jobpack-runtime/py@sha256:"),
        "{image}"
    );
    assert_eq!(
        m["base_image"]["reference"], image,
        "the Dockerfile builds from the runtime"
    );
    let (code, out, err) = jp(&["run", art.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("VARIANT_ID=cli-test"),
        "the runtime's os-release: {out}"
    );
    assert!(out.contains("Python 3.11"), "{out}");
    assert!(out.contains("jobpack_hello-1.0-py3-none-any.whl"), "{out}");

    // Without runtime_fs: the host's root, and the manifest says so.
    write_spec("");
    let host_art = tmp.path().join("host.tar.gz");
    let (code, _, err) = pack(&host_art);
    assert_eq!(code, 0, "{err}");
    assert_eq!(manifest(&host_art)["runtime_fs"], json!({"kind": "host"}));
    let (code, out, err) = jp(&["run", host_art.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("VARIANT_ID=cli-test"), "{out}");

    // Wrong pins, unknown names, and a second way to choose the base image.
    for (extra, want, exit) in [
        (
            format!("runtime_fs: py@sha256:{}\n", "0".repeat(64)),
            "not the pinned".to_owned(),
            1,
        ),
        ("runtime_fs: nope\n".into(), "not installed".into(), 1),
        ("runtime_fs: ../../etc\n".into(), "runtime_fs".into(), 2),
        (
            "runtime_fs: py\nbase_image: debian:bookworm\n".into(),
            "runtime_fs and base_image".into(),
            2,
        ),
    ] {
        write_spec(&extra);
        let (code, _, err) = pack(&tmp.path().join("bad.tar.gz"));
        assert_eq!(code, exit, "{extra}: {err}");
        assert!(err.contains(&want), "{extra}: {err}");
    }

    // Removed: one name goes, the tree stays for the other; then an artifact pinned to it
    // cannot run (never on the host's root instead).
    let (code, _, err) = jp(&["runtime", "rm", "py-again"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = jp(&["run", art.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = jp(&["runtime", "rm", "py"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_dir(store.join("fs")).unwrap().count(), 0);
    let (code, _, err) = jp(&["run", art.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("not installed"), "{err}");
}

async fn install(
    c: &reqwest::Client,
    s: &Server,
    name: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let r = c
        .post(s.u(&format!("/v1/runtimes/{name}")))
        .bearer_auth(token)
        .header("content-type", "application/x-tar")
        .body(body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_installs_runtimes_and_runs_jobs_pinned_to_them() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(rootfs) = fixture(tmp.path(), "the_server_installs_runtimes", "server-a") else {
        return;
    };
    let other = marked_debian_rootfs(tmp.path(), "server-b").unwrap();
    let data = tmp.path().join("data");
    let s = Server::launch(
        &data,
        Launch {
            args: &["--max-body-mb", "400"],
            env: &[("JOBPACK_ADMIN_TOKEN", ADMIN)],
            capture_stderr: false,
        },
    );
    let c = reqwest::Client::new();
    let mut tokens = Vec::new();
    for (name, role) in [("sam", "submitter"), ("vic", "viewer")] {
        let body = json!({"name": name, "role": role});
        let (st, v) = call(&c, &s, "POST", "/v1/users", Some(ADMIN), Some(&body)).await;
        assert_eq!(st, 201, "{v}");
        let path = format!("/v1/users/{name}/tokens");
        let (st, t) = call(
            &c,
            &s,
            "POST",
            &path,
            Some(ADMIN),
            Some(&json!({"name": "t"})),
        )
        .await;
        assert_eq!(st, 201, "{t}");
        tokens.push(t["token"].as_str().unwrap().to_owned());
    }
    let (sam, vic) = (tokens[0].as_str(), tokens[1].as_str());
    let bytes = std::fs::read(&rootfs).unwrap();

    // Only admins install; a bad name or a hostile archive is a 400 and leaves nothing.
    // (Refused before the body is read: a small one, as a client that sent more may see the
    // connection closed under it.)
    let (st, v) = install(&c, &s, "py", sam, b"x".to_vec()).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = install(&c, &s, "Bad..Name", ADMIN, b"x".to_vec()).await;
    assert_eq!(st, 400, "{v}");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut hostile = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    hostile.append_link(&mut h, "etc", &outside).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    hostile
        .append_data(&mut h, "etc/evil", &b"evil"[..])
        .unwrap();
    let (st, v) = install(&c, &s, "evil", ADMIN, hostile.into_inner().unwrap()).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    let (st, v) = install(&c, &s, "junk", ADMIN, b"not a tar at all".repeat(100)).await;
    assert_eq!(st, 400, "{v}");

    let (st, rt) = install(&c, &s, "py", ADMIN, bytes.clone()).await;
    assert_eq!(st, 201, "{rt}");
    let digest = rt["digest"].as_str().unwrap().to_owned();
    assert_eq!(rt["reference"], format!("py@{digest}"));
    let (st, v) = install(&c, &s, "py", ADMIN, bytes).await;
    assert_eq!(st, 409, "{v}");
    let (st, list) = call(&c, &s, "GET", "/v1/runtimes", Some(vic), None).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["runtimes"][0]["digest"], digest.as_str());
    let (st, v) = call(&c, &s, "POST", "/v1/runtimes/py/test", Some(vic), None).await;
    assert_eq!(st, 403, "{v}");
    let (st, t) = call(&c, &s, "POST", "/v1/runtimes/py/test", Some(ADMIN), None).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["ok"], true, "{t}");
    assert!(t["output"].as_str().unwrap().contains("Python 3.11"), "{t}");

    // A job pinned to it runs on it; the manifest, provenance and receipt name its digest.
    let job = |runtime: &str, cache: bool| json!({"name": "rt", "runtime_fs": runtime, "command": PROBE, "cache": cache});
    let pinned = format!("py@{digest}");
    let (st, j) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        Some(sam),
        Some(&job(&pinned, true)),
    )
    .await;
    assert_eq!(st, 201, "{j}");
    let id = j["job_id"].as_str().unwrap().to_owned();
    let done = wait_final_as(&c, &s, &id, sam).await;
    assert_eq!(done["status"], "completed", "{done}");
    let log = text(&c, &s, &format!("/v1/jobs/{id}/logs"), sam).await;
    assert!(
        log.contains("VARIANT_ID=server-a") && log.contains("Python 3.11"),
        "{log}"
    );
    assert!(log.contains("jobpack_hello"), "{log}");
    let (_, m) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/manifest"),
        Some(sam),
        None,
    )
    .await;
    assert_eq!(m["runtime_fs"]["digest"], digest.as_str(), "{m}");
    let (_, prov) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/provenance"),
        Some(sam),
        None,
    )
    .await;
    let deps = statement(&prov)["predicate"]["buildDefinition"]["resolvedDependencies"].clone();
    assert!(
        deps.as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "runtime_fs:py"
                && d["digest"]["sha256"] == digest.trim_start_matches("sha256:")),
        "{deps:#}"
    );
    let (_, rec) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/receipt"),
        Some(sam),
        None,
    )
    .await;
    let rec = statement(&rec);
    assert_eq!(rec["predicate"]["runtime"], digest.as_str(), "{rec:#}");

    // Challenge the run and the pack on the same runtime: the server's store is DATA/runtimes.
    let (_, keys) = call(&c, &s, "GET", "/v1/keys", Some(sam), None).await;
    let pem = tmp.path().join("server.pub");
    std::fs::write(&pem, keys["keys"][0]["public_key_pem"].as_str().unwrap()).unwrap();
    let files = [("receipt.json", "receipt"), ("prov.json", "provenance")];
    for (file, what) in files {
        let (_, env) = call(
            &c,
            &s,
            "GET",
            &format!("/v1/jobs/{id}/{what}"),
            Some(sam),
            None,
        )
        .await;
        std::fs::write(tmp.path().join(file), env.to_string()).unwrap();
    }
    let art = c
        .get(s.u(&format!("/v1/jobs/{id}/artifact")))
        .bearer_auth(sam)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let art_path = tmp.path().join("job.tar.gz");
    std::fs::write(&art_path, &art).unwrap();
    let store = data.join("runtimes");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            art_path.to_str().unwrap(),
            "--key",
            pem.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        jobpack_in(
            tmp.path(),
            &args,
            &[("JOBPACK_RUNTIMES", store.to_str().unwrap())],
        )
    };
    let receipt = tmp.path().join("receipt.json");
    let (code, out, err) = verify(&["--rerun", receipt.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rerun: the same log and outputs"), "{out}");
    let prov = tmp.path().join("prov.json");
    let (code, out, err) = verify(&["--provenance", prov.to_str().unwrap(), "--rebuild"]);
    assert_eq!(code, 0, "{out}{err}");

    // Unknown runtimes and wrong pins are refused at submission.
    for bad in [
        "nope".to_owned(),
        format!("py@sha256:{}", "1".repeat(64)),
        "../x".into(),
    ] {
        let (st, v) = call(
            &c,
            &s,
            "POST",
            "/v1/jobs",
            Some(sam),
            Some(&job(&bad, false)),
        )
        .await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v.to_string().contains("runtime_fs"), "{v}");
    }

    // The result cache: the same job on the same runtime is answered from the first; on
    // another runtime (one os-release byte apart) it runs.
    let (_, j2) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        Some(sam),
        Some(&job("py", true)),
    )
    .await;
    let second = wait_final_as(&c, &s, j2["job_id"].as_str().unwrap(), sam).await;
    assert_eq!(second["cached_from"], id.as_str(), "{second}");
    let (st, rt2) = install(&c, &s, "py-b", ADMIN, std::fs::read(&other).unwrap()).await;
    assert_eq!(st, 201, "{rt2}");
    assert_ne!(rt2["digest"], digest.as_str());
    let (_, j3) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        Some(sam),
        Some(&job("py-b", true)),
    )
    .await;
    let third = wait_final_as(&c, &s, j3["job_id"].as_str().unwrap(), sam).await;
    assert_eq!(third["status"], "completed", "{third}");
    assert!(third["cached_from"].is_null(), "{third}");
    let log = text(
        &c,
        &s,
        &format!("/v1/jobs/{}/logs", j3["job_id"].as_str().unwrap()),
        sam,
    )
    .await;
    assert!(log.contains("VARIANT_ID=server-b"), "{log}");

    // Removing: admins only; then it is gone.
    let (st, _) = call(&c, &s, "DELETE", "/v1/runtimes/py-b", Some(sam), None).await;
    assert_eq!(st, 403);
    let (st, v) = call(&c, &s, "DELETE", "/v1/runtimes/py-b", Some(ADMIN), None).await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = call(&c, &s, "GET", "/v1/runtimes/py-b", Some(vic), None).await;
    assert_eq!(st, 404);
}

async fn wait_final_as(c: &reqwest::Client, s: &Server, id: &str, token: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (_, v) = call(c, s, "GET", &format!("/v1/jobs/{id}"), Some(token), None).await;
        if common::FINAL.contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} never ended: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn text(c: &reqwest::Client, s: &Server, path: &str, token: &str) -> String {
    c.get(s.u(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grpc_runtime_service_answers_as_the_rest_door() {
    use jobpack_server::proto::joblet_service_client::JobletServiceClient;
    use jobpack_server::proto::runtime_service_client::RuntimeServiceClient;
    use jobpack_server::proto::{self as pb};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

    let tmp = tempfile::tempdir().unwrap();
    let Some(rootfs) = fixture(tmp.path(), "the_grpc_runtime_service", "grpc-test") else {
        return;
    };
    // The server's store, filled on the machine before it starts.
    let data = tmp.path().join("data");
    let store = data.join("runtimes");
    let (code, _, err) = jobpack_in(
        tmp.path(),
        &["runtime", "import", "py", rootfs.to_str().unwrap()],
        &[("JOBPACK_RUNTIMES", store.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    let pki = common::Pki::new("jobpack test CA");
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let mut files = std::collections::HashMap::new();
    for (name, cn, ous, server) in [
        ("server", "localhost", vec![], true),
        ("admin", "alice", vec!["admin"], false),
        ("viewer", "vera", vec!["viewer"], false),
    ] {
        let (cert, key) = pki.leaf(&["localhost", "127.0.0.1"], cn, &ous, server);
        files.insert(name, (cert, key));
    }
    let (scert, skey) = (tmp.path().join("s.pem"), tmp.path().join("s.key"));
    std::fs::write(&scert, &files["server"].0).unwrap();
    std::fs::write(&skey, &files["server"].1).unwrap();
    let mut s = Server::launch(
        &data,
        Launch {
            args: &[
                "--tls-cert",
                scert.to_str().unwrap(),
                "--tls-key",
                skey.to_str().unwrap(),
                "--tls-client-ca",
                ca.to_str().unwrap(),
                "--grpc-listen",
                "127.0.0.1:0",
            ],
            env: &[("JOBPACK_ADMIN_TOKEN", ADMIN)],
            capture_stderr: false,
        },
    );
    let addr = s.grpc_addr();
    let channel = |who: &str| {
        let (cert, key) = files[who].clone();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .domain_name("localhost")
            .identity(Identity::from_pem(cert, key));
        let ep = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        async move { ep.connect().await.unwrap() }
    };
    let (admin, viewer): (Channel, Channel) = (channel("admin").await, channel("viewer").await);
    let mut rv = RuntimeServiceClient::new(viewer);
    let mut ra = RuntimeServiceClient::new(admin.clone());

    let list = rv
        .list_runtimes(pb::ListRuntimesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.runtimes.len(), 1);
    let digest = list.runtimes[0].digest.clone();
    assert_eq!(list.runtimes[0].reference, format!("py@{digest}"));
    let missing = rv
        .get_runtime_info(pb::GetRuntimeInfoRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing}");
    for denied in [
        rv.test_runtime(pb::TestRuntimeRequest { name: "py".into() })
            .await
            .unwrap_err(),
        rv.install_runtime(pb::InstallRuntimeRequest {
            name: "x".into(),
            tarball: vec![0; 1024],
        })
        .await
        .unwrap_err(),
    ] {
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    }
    let t = ra
        .test_runtime(pb::TestRuntimeRequest { name: "py".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(t.success && t.output.contains("Python 3.11"), "{t:?}");
    let mut hostile = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    h.set_cksum();
    hostile.append(&h, &b"x"[..]).unwrap();
    let bad = ra
        .install_runtime(pb::InstallRuntimeRequest {
            name: "evil".into(),
            tarball: hostile.into_inner().unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");
    assert!(!tmp.path().join("data/escape").exists() && !data.join("runtimes/escape").exists());

    // RunJob on the runtime: the job's `runtime` is the pinned reference, its log the runtime's.
    let mut jobs = JobletServiceClient::new(admin);
    let job = jobs
        .run_job(pb::RunJobReq {
            command: "sh".into(),
            args: vec!["-c".into(), PROBE.into()],
            runtime: "py".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        let j = jobs
            .get_job_status(pb::GetJobStatusReq { id: job.id.clone() })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        if !matches!(j.status.as_str(), "INITIALIZING" | "RUNNING") {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "{j:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(done.status, "COMPLETED", "{done:?}");
    assert_eq!(done.runtime, "py", "the runtime as asked: {done:?}");
    let mut logs = jobs
        .get_job_logs(pb::GetJobLogsReq {
            id: job.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = logs.message().await.unwrap() {
        text.extend(chunk.payload);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("VARIANT_ID=grpc-test"), "{text}");
}

#[test]
fn a_runtime_is_built_from_debians_packages() {
    if !common::is_root() {
        println!("SKIPPED a_runtime_is_built_from_debians_packages: debootstrap needs root");
        return;
    }
    if let Some(tool) = common::missing_tool(&["debootstrap"]) {
        println!(
            "SKIPPED a_runtime_is_built_from_debians_packages: no {tool} (setup.sh installs it)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let env = [("JOBPACK_RUNTIMES", store.to_str().unwrap())];
    let jp = |args: &[&str]| jobpack_in(tmp.path(), args, &env);
    let (code, out, err) = jp(&["runtime", "build", "mini", "--suite", "bookworm"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("mini@sha256:"), "{out}");
    let (code, probe, err) = jp(&["runtime", "test", "mini"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        probe, "Debian GNU/Linux 12 (bookworm)\n",
        "minbase has no python3"
    );
    let (_, info, _) = jp(&["runtime", "info", "mini"]);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["source"], "debootstrap bookworm minbase", "{info}");
    // What only the build needed is gone, and no device node was kept.
    let tree = store
        .join("fs")
        .join(&info["digest"].as_str().unwrap()[7..]);
    assert_eq!(
        std::fs::read_dir(tree.join("var/cache/apt/archives"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
            .count(),
        0
    );
    assert!(!tree.join("dev/null").exists());
    // Bad input is refused before anything runs.
    let (code, _, err) = jp(&["runtime", "build", "x", "--include", "python3;rm -rf /"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a package name"), "{err}");
    let (code, _, err) = jp(&["runtime", "build", "x", "--mirror", "file:///etc"]);
    assert_ne!(code, 0);
    assert!(err.contains("not http(s)"), "{err}");
}
