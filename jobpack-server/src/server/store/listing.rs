//! Listing jobs: the filters, the keyset cursor, and the query (only the filters given, the
//! page's rowids from the `(created_at DESC, id)` index before any row is read).

use super::{JobRow, Store, StoreResult, row};

/// Filters for listing jobs.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Only this user's jobs (`None`: everyone's, for admins).
    pub owner: Option<String>,
    /// Only jobs whose id starts with this (hex digits and dashes only).
    pub id_prefix: Option<String>,
    /// Only the jobs of this batch.
    pub batch_id: Option<String>,
    /// Only the jobs of this workflow.
    pub workflow_id: Option<String>,
    pub status: Option<String>,
    pub name: Option<String>,
    pub limit: u32,
    pub offset: u32,
    /// Keyset pagination: only the jobs after this one in the listing's order (newest first),
    /// its `(created_at, id)`; a page then costs the same at any depth.
    pub after: Option<(f64, String)>,
}

/// The cursor of a listing's row (what `ListFilter::after` takes back): `created_at/id`.
pub fn cursor_of(r: &JobRow) -> String {
    format!("{}/{}", r.created_at, r.id)
}

/// A cursor as [`cursor_of`] writes it, or `None` if it is not one.
pub fn parse_cursor(s: &str) -> Option<(f64, String)> {
    let (t, id) = s.split_once('/')?;
    let t: f64 = t.parse().ok().filter(|t: &f64| t.is_finite())?;
    let id_ok =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    id_ok.then(|| (t, id.to_owned()))
}

impl Store {
    pub fn list(&self, f: &ListFilter) -> StoreResult<(Vec<JobRow>, u64)> {
        use rusqlite::types::Value;
        // Only the filters given, so the planner can use an index for each (a `?1 IS NULL OR
        // status = ?1` form made every listing read every row).
        let mut clauses: Vec<&str> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        let text = |v: &Option<String>| v.clone().map(Value::Text);
        for (clause, value) in [
            ("status = ?", text(&f.status)),
            ("name = ?", text(&f.name)),
            ("owner = ?", text(&f.owner)),
            ("id LIKE ? || '%'", text(&f.id_prefix)),
            ("batch_id = ?", text(&f.batch_id)),
            ("workflow_id = ?", text(&f.workflow_id)),
        ] {
            if let Some(v) = value {
                clauses.push(clause);
                args.push(v);
            }
        }
        let where_ = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        self.with(|c| {
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM jobs {where_}"),
                rusqlite::params_from_iter(&args),
                |r| r.get(0),
            )?;
            let mut page_args = args.clone();
            let keyset = match &f.after {
                Some((t, id)) => {
                    page_args.push(Value::Real(*t));
                    page_args.push(Value::Text(id.clone()));
                    let n = page_args.len();
                    format!(
                        "{} created_at <= ?{} AND (created_at < ?{} OR id > ?{n})",
                        if clauses.is_empty() { "WHERE" } else { "AND" },
                        n - 1,
                        n - 1
                    )
                }
                None => String::new(),
            };
            page_args.push(Value::Integer(f.limit.into()));
            page_args.push(Value::Integer(f.offset.into()));
            // The page's rowids from the index (skipping `offset` entries there, not rows), then
            // those rows only.
            let sql = format!(
                "SELECT * FROM jobs WHERE rowid IN (SELECT rowid FROM jobs {where_} {keyset} \
                 ORDER BY created_at DESC, id LIMIT ? OFFSET ?) ORDER BY created_at DESC, id"
            );
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(&page_args), row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total as u64))
        })
    }
}
