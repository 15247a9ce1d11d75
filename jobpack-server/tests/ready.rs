//! Readiness (`GET /v1/ready`) apart from liveness (`/v1/health`): a real server, each check made
//! to fail for real (a free-space floor above what the disk has; a runtime directory that cannot
//! be created), and ready again once the cause is gone.

mod common;

use common::{Launch, Server, call};

#[tokio::test(flavor = "multi_thread")]
async fn ready_says_which_check_fails_and_recovers_and_health_stays_ok() {
    let c = reqwest::Client::new();
    let tmp = tempfile::tempdir().unwrap();

    // Token authentication: readiness, like liveness, needs no token (a probe has none).
    let s = Server::launch(&tmp.path().join("a"), Launch::default());
    let (st, v) = call(&c, &s, "GET", "/v1/ready", None, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "ready", "{v}");
    for check in ["store", "disk", "executor"] {
        assert_eq!(v["checks"][check]["ok"], true, "{check}: {v}");
    }
    assert!(
        v["checks"]["disk"]["detail"]
            .as_str()
            .unwrap()
            .contains("MiB free"),
        "{v}"
    );
    // The store check commits a write each time it is asked.
    let (st, _) = call(&c, &s, "GET", "/v1/ready", None, None).await;
    assert_eq!(st, 200);
    drop(s);

    // A floor above any disk: not ready (503), the disk check says why; alive all the same.
    let s = Server::start(
        &tmp.path().join("b"),
        &["--ready-min-free-mb", "1000000000000"],
    );
    let (st, v) = call(&c, &s, "GET", "/v1/ready", None, None).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["status"], "not_ready", "{v}");
    assert_eq!(v["checks"]["disk"]["ok"], false, "{v}");
    assert!(
        v["checks"]["disk"]["detail"]
            .as_str()
            .unwrap()
            .contains("floor"),
        "{v}"
    );
    assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
    assert_eq!(v["checks"]["executor"]["ok"], true, "{v}");
    let (st, _) = call(&c, &s, "GET", "/v1/health", None, None).await;
    assert_eq!(st, 200);
    drop(s);

    // The executor's runtime directory cannot be made (a file is where it goes): not ready,
    // until the file is gone.
    let data = tmp.path().join("c");
    let s = Server::start(&data, &[]);
    let run = data.join("run");
    if run.exists() {
        std::fs::remove_dir_all(&run).unwrap();
    }
    std::fs::write(&run, "not a directory").unwrap();
    let (st, v) = call(&c, &s, "GET", "/v1/ready", None, None).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["checks"]["executor"]["ok"], false, "{v}");
    assert!(
        v["checks"]["executor"]["detail"]
            .as_str()
            .unwrap()
            .contains("runtime directory"),
        "{v}"
    );
    std::fs::remove_file(&run).unwrap();
    let (st, v) = call(&c, &s, "GET", "/v1/ready", None, None).await;
    assert_eq!(st, 200, "{v}");
}
