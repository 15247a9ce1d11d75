//! What authentication costs per request: `cargo bench -p jobpack-server --bench auth`.
//!
//! Starts the real `jobpack serve` four ways (no auth; a token over HTTP; a token over TLS; a
//! client certificate over TLS), submits one pack-only job, then reads it with `GET
//! /v1/jobs/{id}` `BENCH_REQUESTS` times (default 4000) from 8 keep-alive clients, and prints
//! requests per second, p50/p99 latency and each mode's cost relative to no auth.

mod support;

use std::sync::Arc;
use std::time::Instant;

use support::{pct, start_server};

const ADMIN: &str = "jp_bench-admin-token-0123456789abcdef";

/// (requests per second, p50 ms, p99 ms)
async fn measure(
    client: reqwest::Client,
    url: &str,
    token: Option<&str>,
    n: usize,
) -> (f64, f64, f64) {
    let mut r = client
        .post(format!("{url}/v1/jobs"))
        .body(r#"{"command": "true", "run": false}"#)
        .header("content-type", "application/json");
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let v: serde_json::Value = r.send().await.unwrap().json().await.unwrap();
    let path = Arc::new(format!("{url}/v1/jobs/{}", v["job_id"].as_str().unwrap()));
    let token = token.map(str::to_owned);
    let workers = 8;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, path, token) = (client.clone(), path.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..n / workers {
                let t = Instant::now();
                let mut r = client.get(path.as_str());
                if let Some(t) = &token {
                    r = r.bearer_auth(t);
                }
                let resp = r.send().await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rps = all.len() as f64 / t0.elapsed().as_secs_f64();
    (rps, pct(&mut all, 0.5), pct(&mut all, 0.99))
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let tmp = tempfile::tempdir().unwrap();
    // A CA, a server certificate and an admin client certificate.
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |sans: Vec<String>, cn: &str, ou: Option<&str>| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(ou) = ou {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        let k = KeyPair::generate().unwrap();
        (p.signed_by(&k, &issuer).unwrap().pem(), k.serialize_pem())
    };
    let (srv_cert, srv_key) = leaf(vec!["127.0.0.1".into()], "bench server", None);
    let (cli_cert, cli_key) = leaf(vec![], "bench", Some("admin"));
    let f = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (cert, key, ca_file) = (
        f("s.pem", &srv_cert),
        f("s.key", &srv_key),
        f("ca.pem", &ca_pem),
    );
    let tls = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca_file,
    ];
    let ca_cert = || reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let plain = reqwest::Client::new();
    let tls_token = reqwest::Client::builder()
        .tls_certs_only([ca_cert()])
        .build()
        .unwrap();
    let tls_cert = reqwest::Client::builder()
        .tls_certs_only([ca_cert()])
        .identity(
            reqwest::Identity::from_pkcs8_pem(cli_cert.as_bytes(), cli_key.as_bytes()).unwrap(),
        )
        .build()
        .unwrap();

    let modes: [(&str, Vec<&str>, reqwest::Client, Option<&str>); 4] = [
        (
            "no auth (http)",
            vec!["--auth", "none"],
            plain.clone(),
            None,
        ),
        ("token (http)", vec![], plain, Some(ADMIN)),
        ("token (https)", tls.to_vec(), tls_token, Some(ADMIN)),
        ("client certificate (https)", tls.to_vec(), tls_cert, None),
    ];
    println!("GET /v1/jobs/{{id}}, {n} requests from 8 keep-alive clients");
    let mut base = None;
    for (i, (name, mut args, client, token)) in modes.into_iter().enumerate() {
        let data = tmp.path().join(format!("data{i}"));
        args.push("--permissive");
        let (mut child, url) = start_server(&data, &args, &[("JOBPACK_ADMIN_TOKEN", ADMIN)], true);
        // Warm up connections, then measure.
        measure(client.clone(), &url, token, 200).await;
        let (rps, p50, p99) = measure(client, &url, token, n).await;
        let _ = child.kill();
        let _ = child.wait();
        let b = *base.get_or_insert(rps);
        println!(
            "{name:<28} {rps:>8.0} req/s  p50 {p50:.2} ms  p99 {p99:.2} ms  throughput {:.2}x of no auth",
            rps / b
        );
    }
}
