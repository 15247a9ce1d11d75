//! The first start's administrator: the user `admin` and its first token.

use super::store::Store;
use super::store::accounts;

/// On the first start with token auth, creates the user `admin` and its first token: the value
/// of `JOBPACK_ADMIN_TOKEN` if set, else a new one printed (once) on stderr. On later starts a
/// `JOBPACK_ADMIN_TOKEN` the database does not know yet is added to `admin` (a revoked one is
/// not brought back).
pub(super) fn bootstrap_admin(store: &Store) -> anyhow::Result<()> {
    use accounts::{Quota, Role, token_hash};
    let from_env = std::env::var("JOBPACK_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if let Some(t) = &from_env
        && (t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        anyhow::bail!(
            "JOBPACK_ADMIN_TOKEN must be at least 16 characters without spaces (new_token-like: \
             jp_ and 64 hex digits)"
        );
    }
    if store.user(ADMIN)?.is_none() {
        if store.user_count()? > 0 && from_env.is_none() {
            return Ok(());
        }
        store.add_user(ADMIN, Role::Admin, &Quota::default())?;
        store.audit(
            "jobpack",
            "user.add",
            Some(ADMIN),
            Some("role=admin (bootstrap)"),
        );
    }
    match from_env {
        Some(t) => match store.token_by_hash(&token_hash(&t))? {
            None => {
                let row =
                    store.add_token_hash(ADMIN, Some("JOBPACK_ADMIN_TOKEN"), &token_hash(&t))?;
                store.audit(
                    "jobpack",
                    "token.create",
                    Some(&row.id),
                    Some("user=admin (JOBPACK_ADMIN_TOKEN)"),
                );
                eprintln!("jobpack: the token in JOBPACK_ADMIN_TOKEN now authenticates user admin");
            }
            Some(row) if row.revoked_at.is_some() => eprintln!(
                "jobpack: warning: JOBPACK_ADMIN_TOKEN was revoked (token {}); it stays refused",
                row.id
            ),
            Some(_) => {}
        },
        None if store.tokens(Some(ADMIN))?.is_empty() => {
            let (row, t) = store.create_token(ADMIN, Some("bootstrap"))?;
            store.audit(
                "jobpack",
                "token.create",
                Some(&row.id),
                Some("user=admin (bootstrap)"),
            );
            eprintln!(
                "jobpack: created user admin; its API token, shown only this once:\n{t}\n\
                 (keep it; `jobpack admin token create admin` makes another)"
            );
        }
        None => {}
    }
    Ok(())
}

/// The user created at the first start.
const ADMIN: &str = "admin";
