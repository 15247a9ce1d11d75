//! The gRPC door, through a client that is not this project's code: Python grpcio with stubs
//! that grpcio-tools generates from `proto/joblet.proto` (both from PyPI, installed into .venv by
//! `scripts/setup.sh --tests`). Certificates for the server, an admin and a viewer are made here.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Launch, Pki, Server};

const ADMIN: &str = "jp_test-admin-token-0123456789abcdef";

#[test]
fn a_grpcio_client_runs_follows_stops_and_is_refused_as_the_seed_says() {
    let Some(py) = common::venv_python("grpc, grpc_tools") else {
        println!(
            "SKIPPED: .venv has no grpcio/grpcio-tools (scripts/setup.sh --tests installs them)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let pki = Pki::new("jobpack test CA");
    std::fs::write(certs.join("ca.pem"), &pki.ca_pem).unwrap();
    for (name, cn, ous, server) in [
        ("server", "localhost", vec![], true),
        ("admin", "alice", vec!["admin"], false),
        ("viewer", "vera", vec!["viewer"], false),
    ] {
        let (cert, key) = pki.leaf(&["localhost", "127.0.0.1"], cn, &ous, server);
        std::fs::write(certs.join(format!("{name}.pem")), cert).unwrap();
        std::fs::write(certs.join(format!("{name}.key")), key).unwrap();
    }
    let c = |n: &str| certs.join(n).display().to_string();
    let (cert, key, ca) = (c("server.pem"), c("server.key"), c("ca.pem"));
    let mut s = Server::launch(
        &tmp.path().join("data"),
        Launch {
            args: &[
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &ca,
                "--grpc-listen",
                "127.0.0.1:0",
            ],
            env: &[("JOBPACK_ADMIN_TOKEN", ADMIN)],
            capture_stderr: false,
        },
    );
    let addr = s.grpc_addr();
    // Stubs from the repository's .proto, by grpcio-tools.
    let stubs = tmp.path().join("gen");
    std::fs::create_dir_all(&stubs).unwrap();
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let st = Command::new(&py)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto.display()))
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg(proto.join("joblet.proto"))
        .status()
        .unwrap();
    assert!(st.success(), "grpc_tools.protoc failed");
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/client.py");
    let out = Command::new(&py)
        .arg(&client)
        .arg(&addr)
        .arg(&certs)
        .arg(&stubs)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "{stdout}\n{stderr}"
    );
}
