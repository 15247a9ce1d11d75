//! Webhooks as stored: the hooks themselves, the outbox of job events the status triggers write
//! (`job_events`), and each delivery with its attempts. A delivery is claimed by moving its
//! `next_at` past a lease before it is sent, so one process never sends it twice at once; one
//! acknowledged is `delivered` and never picked again.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{ACTIVE_SQL, Store, StoreResult, now};

/// A webhook. `scope`: `user` (its owner's jobs, batches, workflows), `server` (everyone's),
/// or `job` / `batch` / `workflow` (the one submission `target_id` names).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookRow {
    pub id: String,
    pub owner: String,
    pub scope: String,
    pub target_id: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub created_at: f64,
}

fn webhook(r: &Row<'_>) -> rusqlite::Result<WebhookRow> {
    let events: String = r.get("events_json")?;
    let headers: String = r.get("headers_json")?;
    Ok(WebhookRow {
        id: r.get("id")?,
        owner: r.get("owner")?,
        scope: r.get("scope")?,
        target_id: r.get("target_id")?,
        url: r.get("url")?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret: r.get("secret")?,
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        created_at: r.get("created_at")?,
    })
}

/// One delivery: `pending` (to send at `next_at`), `delivered`, or `failed` (given up).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    pub subject_id: String,
    #[serde(skip)]
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub next_at: f64,
    pub last_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: f64,
    pub delivered_at: Option<f64>,
}

fn delivery(r: &Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.get("id")?,
        webhook_id: r.get("webhook_id")?,
        event: r.get("event")?,
        subject_id: r.get("subject_id")?,
        body: r.get("body")?,
        status: r.get("status")?,
        attempts: r.get("attempts")?,
        next_at: r.get("next_at")?,
        last_code: r.get("last_code")?,
        last_error: r.get("last_error")?,
        created_at: r.get("created_at")?,
        delivered_at: r.get("delivered_at")?,
    })
}

/// An event of the outbox.
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub seq: i64,
    pub job_id: String,
    pub event: String,
    pub at: f64,
}

/// A delivery's fate after one attempt.
pub enum Attempted<'a> {
    Delivered {
        code: u16,
    },
    /// Try again at `next_at`.
    Retry {
        next_at: f64,
        code: Option<u16>,
        error: &'a str,
    },
    /// Given up.
    Failed {
        code: Option<u16>,
        error: &'a str,
    },
}

impl Store {
    pub fn insert_webhook(&self, w: &WebhookRow) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO webhooks (id, owner, scope, target_id, url, events_json, secret, \
                 headers_json, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    w.id,
                    w.owner,
                    w.scope,
                    w.target_id,
                    w.url,
                    serde_json::to_string(&w.events).unwrap_or_else(|_| "[]".into()),
                    w.secret,
                    serde_json::to_string(&w.headers).unwrap_or_else(|_| "{}".into()),
                    w.created_at
                ],
            )
            .map(drop)
        })
    }

    pub fn webhook(&self, id: &str) -> StoreResult<Option<WebhookRow>> {
        self.with(|c| {
            c.query_row("SELECT * FROM webhooks WHERE id = ?1", [id], webhook)
                .optional()
        })
    }

    /// Standing webhooks (scope `user` or `server`): `owner`'s, or everyone's.
    pub fn webhooks(&self, owner: Option<&str>) -> StoreResult<Vec<WebhookRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT * FROM webhooks WHERE scope IN ('user', 'server') \
                 AND (?1 IS NULL OR owner = ?1) ORDER BY created_at, id",
            )?;
            st.query_map([owner], webhook)?.collect()
        })
    }

    /// Removes a webhook and its deliveries.
    pub fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?1", [id])?;
            let n = tx.execute("DELETE FROM webhooks WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    /// The webhooks an event about a job (of `owner`, in batch/workflow) may go to.
    pub fn webhooks_for(
        &self,
        owner: &str,
        subjects: &[(&str, Option<&str>)],
    ) -> StoreResult<Vec<WebhookRow>> {
        self.with(|c| {
            let mut out: Vec<WebhookRow> = Vec::new();
            let mut st = c.prepare(
                "SELECT * FROM webhooks WHERE scope = 'server' OR (scope = 'user' AND owner = ?1)",
            )?;
            out.extend(
                st.query_map([owner], webhook)?
                    .collect::<Result<Vec<_>, _>>()?,
            );
            let mut st = c.prepare("SELECT * FROM webhooks WHERE scope = ?1 AND target_id = ?2")?;
            for (scope, id) in subjects {
                if let Some(id) = id {
                    out.extend(
                        st.query_map(params![scope, id], webhook)?
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
            }
            Ok(out)
        })
    }

    /// The next events of the outbox, oldest first.
    pub fn job_events(&self, limit: u32) -> StoreResult<Vec<JobEvent>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT seq, job_id, event, at FROM job_events ORDER BY seq LIMIT ?1")?;
            st.query_map([limit], |r| {
                Ok(JobEvent {
                    seq: r.get(0)?,
                    job_id: r.get(1)?,
                    event: r.get(2)?,
                    at: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// Stores the deliveries of one event (those already there are kept as they are: an event
    /// is delivered once per webhook) and takes the event off the outbox, in one transaction.
    pub fn enqueue_deliveries(
        &self,
        seq: i64,
        deliveries: &[(String, String, String, String, String)],
    ) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for (id, webhook_id, event, subject_id, body) in deliveries {
                tx.execute(
                    "INSERT OR IGNORE INTO webhook_deliveries (id, webhook_id, event, subject_id, \
                     body, status, attempts, next_at, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)",
                    params![id, webhook_id, event, subject_id, body, now()],
                )?;
            }
            tx.execute("DELETE FROM job_events WHERE seq = ?1", [seq])?;
            tx.commit()
        })
    }

    /// Takes events that make no delivery off the outbox, all in one transaction.
    pub fn drop_job_events(&self, seqs: &[i64]) -> StoreResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut st = tx.prepare_cached("DELETE FROM job_events WHERE seq = ?1")?;
                for seq in seqs {
                    st.execute([seq])?;
                }
            }
            tx.commit()
        })
    }

    /// Whether every job of the batch (or workflow) has ended.
    pub fn group_finished(&self, column: &str, id: &str) -> StoreResult<bool> {
        let column = match column {
            "batch_id" => "batch_id",
            _ => "workflow_id",
        };
        self.with(|c| {
            c.query_row(
                &format!("SELECT COUNT(*) FROM jobs WHERE {column} = ?1 AND {ACTIVE_SQL}"),
                [id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n == 0)
        })
    }

    /// Claims up to `limit` pending deliveries that are due: their `next_at` moves `lease`
    /// seconds ahead (a crash mid-send retries them then).
    pub fn claim_deliveries(&self, limit: u32, lease: f64) -> StoreResult<Vec<DeliveryRow>> {
        self.with(|c| {
            let t = now();
            let mut st = c.prepare(
                "UPDATE webhook_deliveries SET next_at = ?2 WHERE id IN (SELECT id FROM \
                 webhook_deliveries WHERE status = 'pending' AND next_at <= ?1 ORDER BY next_at \
                 LIMIT ?3) RETURNING *",
            )?;
            st.query_map(params![t, t + lease, limit], delivery)?
                .collect()
        })
    }

    /// Records one attempt of a delivery.
    pub fn record_attempt(&self, id: &str, a: &Attempted<'_>) -> StoreResult<()> {
        self.with(|c| {
            match a {
                Attempted::Delivered { code } => c.execute(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, \
                     last_code = ?2, last_error = NULL, delivered_at = ?3 WHERE id = ?1",
                    params![id, code, now()],
                ),
                Attempted::Retry {
                    next_at,
                    code,
                    error,
                } => c.execute(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?2, \
                     last_code = ?3, last_error = ?4 WHERE id = ?1",
                    params![id, next_at, code, error],
                ),
                Attempted::Failed { code, error } => c.execute(
                    "UPDATE webhook_deliveries SET status = 'failed', attempts = attempts + 1, \
                     last_code = ?2, last_error = ?3 WHERE id = ?1",
                    params![id, code, error],
                ),
            }
            .map(drop)
        })
    }

    /// A webhook's deliveries, newest first.
    pub fn deliveries(&self, webhook_id: &str, limit: u32) -> StoreResult<Vec<DeliveryRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT * FROM webhook_deliveries WHERE webhook_id = ?1 \
                 ORDER BY created_at DESC, id LIMIT ?2",
            )?;
            st.query_map(params![webhook_id, limit], delivery)?
                .collect()
        })
    }

    /// Sends a delivery again, now (its attempts start over); `false` if there is none.
    pub fn redeliver(&self, webhook_id: &str, id: &str) -> StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_at = ?3, \
                 created_at = ?3, delivered_at = NULL WHERE id = ?2 AND webhook_id = ?1",
                params![webhook_id, id, now()],
            )
            .map(|n| n > 0)
        })
    }
}

/// Removes the webhooks a deleted job carried, with their deliveries (those of its batch or
/// workflow stay).
pub(super) fn delete_job_hooks(c: &rusqlite::Connection, id: &str) -> rusqlite::Result<()> {
    c.execute(
        "DELETE FROM webhook_deliveries WHERE webhook_id IN \
         (SELECT id FROM webhooks WHERE scope = 'job' AND target_id = ?1)",
        [id],
    )?;
    c.execute(
        "DELETE FROM webhooks WHERE scope = 'job' AND target_id = ?1",
        [id],
    )?;
    Ok(())
}
