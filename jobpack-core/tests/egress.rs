//! The destination policy, for real: downloads and git fetches from a server on 127.0.0.1 with
//! a policy that refuses loopback (the server's default) and one that allows it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use jobpack_core::egress::Destinations;
use jobpack_core::{Error, FetchError, GitError, JobSpec, Packager, PackagerConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn packager(tmp: &std::path::Path, allow: &[&str]) -> Packager {
    let mut c = PackagerConfig {
        work_dir: tmp.join("work"),
        out_dir: tmp.join("out"),
        source_date_epoch: None,
        git_timeout: Duration::from_secs(10),
        ..PackagerConfig::default()
    };
    std::fs::create_dir_all(&c.work_dir).unwrap();
    std::fs::create_dir_all(&c.out_dir).unwrap();
    c.download.retries = 0;
    c.download.destinations = Arc::new(
        Destinations::public(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
    );
    Packager::new(c).unwrap()
}

fn spec(v: serde_json::Value) -> JobSpec {
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_downloads_are_refused_by_name_by_literal_and_after_a_redirect() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataServer::start().await;
    let url = data.route("/secret", Route::Bytes(Arc::new(b"internal".to_vec())));
    let port = data.addr.port();
    let p = packager(tmp.path(), &[]);
    for u in [
        url.clone(),
        format!("http://localhost:{port}/secret"),
        format!("http://[::ffff:127.0.0.1]:{port}/secret"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let err = p
            .pack(&spec(serde_json::json!({"command": "x", "data_url": u})))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Fetch(FetchError::Forbidden { .. })),
            "{u}: {err}"
        );
        assert!(err.to_string().contains("not allowed"), "{err}");
    }
    assert_eq!(
        data.hits("/secret"),
        0,
        "nothing reached the internal server"
    );

    // Allowed by name only: the name passes, a redirect to a literal loopback address does not.
    let to = data.route("/redirect", Route::Redirect(url.clone()));
    let by_name = to.replace("127.0.0.1", "localhost");
    let p = packager(tmp.path(), &["localhost"]);
    let err = p
        .pack(&spec(
            serde_json::json!({"command": "x", "data_url": by_name}),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Fetch(FetchError::Forbidden { .. })),
        "{err}"
    );
    assert_eq!(data.hits("/redirect"), 1);
    assert_eq!(data.hits("/secret"), 0, "the redirect was not followed");

    // Allowed by CIDR: it works.
    let p = packager(tmp.path(), &["127.0.0.0/8"]);
    p.pack(&spec(serde_json::json!({"command": "x", "data_url": url})))
        .await
        .unwrap();
    assert_eq!(data.hits("/secret"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn git_over_http_goes_through_the_checking_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let repos = tmp.path().join("repos");
    let fx = fixture_repo(&repos, "app", true);
    let http = DataServer::start().await;
    http.serve_git(&repos);
    let daemon = GitDaemon::start(&repos);

    let refused = packager(tmp.path(), &[]);
    for url in [http.git_url("app.git"), daemon.url("app.git")] {
        let err = refused
            .pack(&spec(serde_json::json!({
                "git_url": url, "commit_hash": fx.commits[1], "command": "x"})))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Git(GitError::Forbidden { .. })),
            "{url}: {err}"
        );
    }

    let allowed = packager(tmp.path(), &["127.0.0.1/32"]);
    let art = allowed
        .pack(&spec(serde_json::json!({
            "git_url": http.git_url("app.git"), "commit_hash": fx.commits[1], "command": "x"})))
        .await
        .unwrap();
    assert_eq!(art.commit.as_deref(), Some(fx.commits[1].as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_checks_what_it_connects_to() {
    let data = DataServer::start().await;
    let _ = data.route("/x", Route::Bytes(Arc::new(b"ok".to_vec())));
    let target = data.addr;
    async fn ask(proxy: &str, req: String) -> String {
        let addr = proxy.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }
    let refusing =
        jobpack_core::egress::EgressProxy::start(Arc::new(Destinations::public(&[]).unwrap()))
            .await
            .unwrap();
    let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let plain = format!("GET http://{target}/x HTTP/1.1\r\nHost: {target}\r\n\r\n");
    for req in [&connect, &plain] {
        let a = ask(refusing.url(), req.clone()).await;
        assert!(a.starts_with("HTTP/1.1 403"), "{a}");
        assert!(a.contains("loopback"), "{a}");
    }
    let allowing = jobpack_core::egress::EgressProxy::start(Arc::new(
        Destinations::public(&["127.0.0.1".into()]).unwrap(),
    ))
    .await
    .unwrap();
    let a = ask(allowing.url(), plain).await;
    assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("ok"), "{a}");
    assert_eq!(data.hits("/x"), 1);
}
