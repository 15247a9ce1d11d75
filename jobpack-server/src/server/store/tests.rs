//! The schema's indexes serve the queries that need them (migration 0016 took the status out of
//! indexes that did not need it): each query's plan, as SQLite makes it, names its index.

use super::Store;

/// The details of SQLite's plan for `sql`, its parameters bound to text (the plan is made
/// before they are bound, as it is for the store's own statements).
fn plan(store: &Store, sql: &str) -> String {
    store
        .with(|c| {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let params = vec!["x"; st.parameter_count()];
            let rows = st.query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .join("; ")
}

#[test]
fn the_status_queries_batches_and_the_result_cache_each_use_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("jobpack.db")).unwrap();
    for (sql, index) in [
        // The runner's recovery at start, the counts by status, the claim of a queued job.
        (
            "SELECT id FROM jobs WHERE status = ?1 ORDER BY created_at",
            "jobs_claim",
        ),
        (
            "SELECT id FROM jobs WHERE status IN ('queued', 'running')",
            "jobs_claim",
        ),
        (
            "SELECT id FROM jobs WHERE status = 'queued' AND worker IS NULL \
             ORDER BY priority DESC, created_at, id LIMIT 1",
            "jobs_claim",
        ),
        // A batch's jobs (its counters, its listing).
        (
            "SELECT COUNT(*) FROM jobs WHERE batch_id = ?1",
            "jobs_batch",
        ),
        (
            "SELECT id FROM jobs WHERE batch_id = ?1 AND status = 'running'",
            "jobs_batch",
        ),
        // The result cache's candidates.
        (
            "SELECT * FROM jobs WHERE artifact_sha256 = ?1 AND status = 'completed' \
             AND collected_at IS NULL AND id != ?2 ORDER BY finished_at DESC LIMIT 20",
            "jobs_artifact",
        ),
    ] {
        let p = plan(&store, sql);
        assert!(p.contains(index), "{sql}: {p}");
        assert!(!p.starts_with("SCAN jobs"), "{sql}: {p}");
    }
    // The indexes the migration removed are gone; the partial ones hold only their rows.
    let indexes: Vec<(String, String)> = store
        .with(|c| {
            let mut st = c.prepare(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' \
                 AND sql IS NOT NULL",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .unwrap();
    assert!(
        !indexes.iter().any(|(n, _)| n == "jobs_status"),
        "{indexes:?}"
    );
    let sql_of = |name: &str| {
        indexes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    assert!(sql_of("jobs_batch").contains("WHERE batch_id IS NOT NULL"));
    assert!(sql_of("jobs_artifact").contains("WHERE status = 'completed'"));
}
