//! Users, API tokens, quotas and the audit log, kept in the same SQLite file as the jobs.
//!
//! Tokens are 256-bit random strings (`jp_` + 64 hex digits). Only their SHA-256 is stored: a
//! token that random cannot be guessed from its hash, so a slow password hash would add nothing.

use std::fmt;
use std::str::FromStr;

use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::server::store::{Store, now};

/// What a user may do (see `auth::allowed` for the whole table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: all users' jobs, user and token management, the audit log.
    Admin,
    /// Submits jobs, and reads, cancels and deletes their own.
    Submitter,
    /// Reads their own jobs (get, list, logs, downloads); changes nothing.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Submitter => "submitter",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "submitter" => Ok(Role::Submitter),
            "viewer" => Ok(Role::Viewer),
            _ => Err(format!(
                "unknown role {s:?}: expected admin, submitter or viewer"
            )),
        }
    }
}

/// Per-user caps. A job that asks for more is refused (never silently lowered); a job that asks
/// for nothing gets the cap. `None`: no cap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(rename = "Quota", deny_unknown_fields)]
#[oai(skip_serializing_if_is_none)]
pub struct Quota {
    /// Jobs that have not ended (queued, packing, running) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(
        nullable,
        validator(minimum(value = "0"), maximum(value = "1000000000000000"))
    )]
    pub max_concurrent: Option<u64>,
    /// Largest `limits.timeout`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(nullable, validator(minimum(value = "0", exclusive)))]
    pub max_timeout_secs: Option<f64>,
    /// Largest `limits.memory_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(
        nullable,
        validator(minimum(value = "0"), maximum(value = "1000000000000000"))
    )]
    pub max_memory_bytes: Option<u64>,
    /// Largest `limits.cpu_percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(
        nullable,
        validator(minimum(value = "0"), maximum(value = "4294967295"))
    )]
    pub max_cpu_percent: Option<u32>,
    /// Largest `limits.pids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(
        nullable,
        validator(minimum(value = "0"), maximum(value = "1000000000000000"))
    )]
    pub max_pids: Option<u64>,
    /// Whether the user may ask for `"network": "host"` (the host's network, loopback services
    /// included). Off unless an admin grants it; admins always may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(nullable)]
    pub allow_host_network: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub quota: Quota,
    pub created_at: f64,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub user_name: String,
    pub name: Option<String>,
    pub created_at: f64,
    pub last_used_at: Option<f64>,
    pub revoked_at: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub seq: i64,
    pub at: f64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
}

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no user {0}")]
    NoUser(String),
    #[error(transparent)]
    Db(#[from] anyhow::Error),
}

impl From<crate::server::store::StoreError> for AccountError {
    fn from(e: crate::server::store::StoreError) -> Self {
        AccountError::Db(e.into())
    }
}

/// User names: what a certificate's CN or an admin gives, used as the owner of jobs.
pub fn check_user_name(name: &str) -> Result<(), String> {
    check_name(name, "user name")
}

/// A name (`what`: user name, queue name): 1-64 characters of A-Z a-z 0-9 . _ @ -, starting with a
/// letter or digit.
pub fn check_name(name: &str, what: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {name:?}: 1-64 characters of A-Z a-z 0-9 . _ @ -, starting with a \
             letter or digit"
        ))
    }
}

/// A new random token.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
    Ok(format!("jp_{}", hex::encode(bytes)))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    user_with(r, r.get("name")?, r.get("created_at")?)
}

/// A user from a row's `role`, `disabled` and `quota_json` columns (also in joins, where the
/// name and creation time come from other columns).
fn user_with(r: &Row<'_>, name: String, created_at: f64) -> rusqlite::Result<UserRow> {
    let role: String = r.get("role")?;
    let quota: String = r.get("quota_json")?;
    Ok(UserRow {
        name,
        role: role.parse().unwrap_or(Role::Viewer),
        disabled: r.get::<_, i64>("disabled")? != 0,
        quota: serde_json::from_str(&quota).unwrap_or_default(),
        created_at,
    })
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get("id")?,
        user_name: r.get("user_name")?,
        name: r.get("name")?,
        created_at: r.get("created_at")?,
        last_used_at: r.get("last_used_at")?,
        revoked_at: r.get("revoked_at")?,
    })
}

impl Store {
    pub fn add_user(&self, name: &str, role: Role, quota: &Quota) -> Result<(), AccountError> {
        check_user_name(name).map_err(AccountError::Invalid)?;
        let quota = serde_json::to_string(quota).map_err(anyhow::Error::from)?;
        let n = self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO users (name, role, quota_json, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), quota, now()],
            )
        })?;
        if n == 0 {
            return Err(AccountError::UserExists(name.into()));
        }
        Ok(())
    }

    pub fn user(&self, name: &str) -> crate::server::store::StoreResult<Option<UserRow>> {
        self.with(|c| {
            c.query_row("SELECT * FROM users WHERE name = ?1", [name], user_row)
                .optional()
        })
    }

    pub fn users(&self) -> crate::server::store::StoreResult<Vec<UserRow>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT * FROM users ORDER BY name")?;
            st.query_map([], user_row)?.collect()
        })
    }

    pub fn user_count(&self) -> crate::server::store::StoreResult<u64> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
    }

    /// Disables (or enables again) a user: their tokens and certificates stop working at once.
    pub fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<(), AccountError> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE users SET disabled = ?2 WHERE name = ?1",
                params![name, disabled as i64],
            )
        })?;
        if n == 0 {
            return Err(AccountError::NoUser(name.into()));
        }
        Ok(())
    }

    pub fn set_quota(&self, name: &str, quota: &Quota) -> Result<(), AccountError> {
        let q = serde_json::to_string(quota).map_err(anyhow::Error::from)?;
        let n = self.with(|c| {
            c.execute(
                "UPDATE users SET quota_json = ?2 WHERE name = ?1",
                params![name, q],
            )
        })?;
        if n == 0 {
            return Err(AccountError::NoUser(name.into()));
        }
        Ok(())
    }

    /// Creates a token for `user`; returns its record and the token itself (shown once).
    pub fn create_token(
        &self,
        user: &str,
        name: Option<&str>,
    ) -> Result<(TokenRow, String), AccountError> {
        let token = new_token()?;
        let row = self.add_token_hash(user, name, &token_hash(&token))?;
        Ok((row, token))
    }

    /// Records a token by its hash (for a token chosen outside, as `JOBPACK_ADMIN_TOKEN`).
    pub fn add_token_hash(
        &self,
        user: &str,
        name: Option<&str>,
        hash: &str,
    ) -> Result<TokenRow, AccountError> {
        if self.user(user)?.is_none() {
            return Err(AccountError::NoUser(user.into()));
        }
        let row = TokenRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_name: user.into(),
            name: name.map(str::to_owned),
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        self.with(|c| {
            c.execute(
                "INSERT INTO tokens (id, user_name, name, hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.id, row.user_name, row.name, hash, row.created_at],
            )
        })?;
        Ok(row)
    }

    /// The token with this hash, revoked or not.
    pub fn token_by_hash(&self, hash: &str) -> crate::server::store::StoreResult<Option<TokenRow>> {
        self.with(|c| {
            c.query_row("SELECT * FROM tokens WHERE hash = ?1", [hash], token_row)
                .optional()
        })
    }

    pub fn tokens(&self, user: Option<&str>) -> crate::server::store::StoreResult<Vec<TokenRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT * FROM tokens WHERE (?1 IS NULL OR user_name = ?1) \
                 ORDER BY created_at, id",
            )?;
            st.query_map([user], token_row)?.collect()
        })
    }

    /// Revokes a token by id (or by a unique prefix of it). Returns the token revoked.
    pub fn revoke_token(&self, id: &str) -> Result<TokenRow, AccountError> {
        let matches: Vec<TokenRow> = self
            .tokens(None)?
            .into_iter()
            .filter(|t| t.id.starts_with(id))
            .collect();
        let t = match matches.as_slice() {
            [t] if !id.is_empty() => t.clone(),
            [] | [_] => return Err(AccountError::Invalid(format!("no token {id:?}"))),
            _ => {
                return Err(AccountError::Invalid(format!(
                    "{id:?} matches {} tokens; give more of the id",
                    matches.len()
                )));
            }
        };
        self.with(|c| {
            c.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![t.id, now()],
            )
        })?;
        Ok(t)
    }

    /// The user a presented token belongs to, if the token is known and not revoked. Notes the
    /// use (at most once a minute per token, to keep reads cheap).
    pub fn authenticate_token(
        &self,
        token: &str,
    ) -> crate::server::store::StoreResult<Option<(TokenRow, UserRow)>> {
        // One read on every request: the token and its user together.
        let found = self.with(|c| {
            c.query_row(
                "SELECT t.*, u.role, u.disabled, u.quota_json, u.created_at AS user_created_at \
                 FROM tokens t JOIN users u ON u.name = t.user_name \
                 WHERE t.hash = ?1 AND t.revoked_at IS NULL",
                [token_hash(token)],
                |r| {
                    let t = token_row(r)?;
                    let u = user_with(r, t.user_name.clone(), r.get("user_created_at")?)?;
                    Ok((t, u))
                },
            )
            .optional()
        })?;
        let Some((t, u)) = found else {
            return Ok(None);
        };
        let at = now();
        if t.last_used_at.is_none_or(|l| at - l > 60.0) {
            // Bookkeeping only: a failed write (a full disk) must never deny a valid token. It is
            // reported, and tried again on the token's next use.
            let r = self.with(|c| {
                c.execute(
                    "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
                    params![t.id, at],
                )
            });
            if let Err(e) = r {
                tracing::warn!("cannot record the last use of token {}: {e:#}", t.id);
            }
        }
        Ok(Some((t, u)))
    }

    /// Appends to the audit log. A failure is reported on stderr: the action it records has
    /// already happened and must not be undone by a full disk.
    pub fn audit(&self, actor: &str, action: &str, target: Option<&str>, detail: Option<&str>) {
        let entry = Audit {
            actor,
            action,
            target,
            detail,
        };
        if let Err(e) = self.with(|c| write_audit(c, &entry)) {
            tracing::error!("cannot write the audit log ({actor} {action} {target:?}): {e:#}");
        }
    }

    /// Audit entries after `after` (a `seq`), oldest first, optionally of one actor or target.
    pub fn audit_log(
        &self,
        actor: Option<&str>,
        target: Option<&str>,
        after: i64,
        limit: u32,
    ) -> crate::server::store::StoreResult<Vec<AuditRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT * FROM audit WHERE seq > ?1 AND (?2 IS NULL OR actor = ?2) \
                 AND (?3 IS NULL OR target = ?3) ORDER BY seq LIMIT ?4",
            )?;
            st.query_map(params![after, actor, target, limit], |r| {
                Ok(AuditRow {
                    seq: r.get("seq")?,
                    at: r.get("at")?,
                    actor: r.get("actor")?,
                    action: r.get("action")?,
                    target: r.get("target")?,
                    detail: r.get("detail")?,
                })
            })?
            .collect()
        })
    }
}

/// An audit log entry, for [`Store::audit`] or to be written inside a change's own transaction
/// ([`Store::insert_all`]: a submission and its entry are one commit).
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub detail: Option<&'a str>,
}

pub(super) fn write_audit(c: &rusqlite::Connection, e: &Audit<'_>) -> rusqlite::Result<()> {
    use super::Cached;
    c.exec_cached(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now(), e.actor, e.action, e.target, e.detail],
    )
    .map(drop)
}
