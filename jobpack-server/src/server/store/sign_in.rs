//! What signing in with a password needs stored: each user's password hash (argon2id, in PHC
//! form; hashing and checking are the service's) and the keys that sign the session JWTs.

use rusqlite::{OptionalExtension, params};

use crate::server::store::accounts::AccountError;
use crate::server::store::{Store, StoreResult, now};

/// A key that signs (the newest) or verifies (any kept) session JWTs.
#[derive(Debug, Clone)]
pub struct JwtKey {
    pub id: String,
    pub secret: Vec<u8>,
    pub created_at: f64,
}

/// How many keys are kept after a rotation: the new one, and the one before it (whose tokens
/// verify until they expire).
const KEPT_KEYS: usize = 2;

impl Store {
    /// Sets (or with `None` removes) a user's password hash.
    pub fn set_password_hash(&self, user: &str, hash: Option<&str>) -> Result<(), AccountError> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE users SET password_hash = ?2 WHERE name = ?1",
                params![user, hash],
            )
        })?;
        if n == 0 {
            return Err(AccountError::NoUser(user.into()));
        }
        Ok(())
    }

    /// A user's password hash, if they have a password.
    pub fn password_hash(&self, user: &str) -> StoreResult<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT password_hash FROM users WHERE name = ?1",
                [user],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    /// The session keys, newest first.
    pub fn jwt_keys(&self) -> StoreResult<Vec<JwtKey>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, secret_hex, created_at FROM jwt_keys ORDER BY created_at DESC, id",
            )?;
            st.query_map([], |r| {
                let hex_secret: String = r.get(1)?;
                Ok(JwtKey {
                    id: r.get(0)?,
                    secret: hex::decode(hex_secret).unwrap_or_default(),
                    created_at: r.get(2)?,
                })
            })?
            .collect()
        })
    }

    /// Adds a new signing key (`secret`: random bytes from the caller) and drops all but the
    /// newest [`KEPT_KEYS`]. Returns the new key's id.
    pub fn rotate_jwt_key(&self, secret: &[u8]) -> StoreResult<String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO jwt_keys (id, secret_hex, created_at) VALUES (?1, ?2, ?3)",
                params![id, hex::encode(secret), now()],
            )?;
            tx.execute(
                "DELETE FROM jwt_keys WHERE id NOT IN \
                 (SELECT id FROM jwt_keys ORDER BY created_at DESC, id LIMIT ?1)",
                [KEPT_KEYS as i64],
            )?;
            tx.commit()
        })?;
        Ok(id)
    }
}
