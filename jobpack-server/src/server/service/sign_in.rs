//! Signing in with a password (seed 003's OAuth2 password grant): argon2id password hashes,
//! session JWTs (HS256, signed with the newest key in the store, verified with any kept key,
//! expiring after [`SESSION_SECS`]), and a limit on failed sign-ins per user and per address.
//! A JWT names its user only: the role, and whether the user is disabled, are read at each use,
//! so disabling a user ends their sessions at once.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use crate::server::service::error::{Kind, ServiceError, ServiceResult};
use crate::server::store::Store;
use crate::server::store::accounts::UserRow;

/// How long a session JWT is valid.
pub const SESSION_SECS: u64 = 3600;
/// Failed sign-ins allowed per user, and (for many users behind one address) per address,
/// within [`FAILURE_WINDOW`].
const MAX_FAILURES: usize = 5;
const MAX_FAILURES_PER_ADDRESS: usize = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;

/// An argon2id hash (PHC string, random salt) of a new password.
pub fn hash_password(password: &str) -> ServiceResult<String> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(ServiceError::invalid(
            "bad_request",
            format!("password: {MIN_PASSWORD} to {MAX_PASSWORD} characters, got {n}"),
        ));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| ServiceError::internal(anyhow::anyhow!("no random numbers: {e}")))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| ServiceError::internal(anyhow::anyhow!("{e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::internal(anyhow::anyhow!("cannot hash the password: {e}")))
}

fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
    jti: String,
}

/// A session token as the password grant answers it.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub expires_in: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new session JWT for `user` (a signing key is made on first use).
pub fn issue(store: &Store, user: &str) -> ServiceResult<Session> {
    let keys = store.jwt_keys().map_err(ServiceError::internal)?;
    let key = match keys.into_iter().next() {
        Some(k) => k,
        None => {
            rotate_key(store)?;
            store
                .jwt_keys()
                .map_err(ServiceError::internal)?
                .into_iter()
                .next()
                .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("no signing key")))?
        }
    };
    let now = unix_now();
    let claims = Claims {
        sub: user.to_owned(),
        iat: now,
        exp: now + SESSION_SECS,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(key.id);
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&key.secret),
    )
    .map_err(|e| ServiceError::internal(anyhow::anyhow!("cannot sign a session: {e}")))?;
    Ok(Session {
        access_token: token,
        expires_in: SESSION_SECS,
    })
}

/// A new signing key (32 random bytes); the previous one still verifies until its tokens
/// expire, older ones are dropped. Returns its id.
pub fn rotate_key(store: &Store) -> ServiceResult<String> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| ServiceError::internal(anyhow::anyhow!("no random numbers: {e}")))?;
    store
        .rotate_jwt_key(&secret)
        .map_err(ServiceError::internal)
}

/// Whether `token` looks like a JWT (three dot-separated parts) rather than an API token.
pub fn is_jwt(token: &str) -> bool {
    !token.starts_with("jp_") && token.split('.').count() == 3
}

/// The user a session JWT names, if its signature (by a kept key) and expiry hold; else why not.
pub fn verify(store: &Store, token: &str) -> Result<String, String> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|_| "the token is not valid".to_owned())?;
    let keys = store
        .jwt_keys()
        .map_err(|e| format!("cannot check the token: {e}"))?;
    let key = keys
        .iter()
        .find(|k| header.kid.as_deref() == Some(k.id.as_str()))
        .ok_or("the token is not valid (unknown or rotated signing key)")?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(&key.secret),
        &v,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
            "the session has expired; sign in again".to_owned()
        }
        _ => "the token is not valid".to_owned(),
    })?;
    Ok(data.claims.sub)
}

/// Failed sign-ins, per user and per address, in the last [`FAILURE_WINDOW`].
#[derive(Debug, Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SignInLimiter {
    fn keys(user: &str, addr: Option<IpAddr>) -> Vec<String> {
        let mut k = vec![format!("user:{user}")];
        if let Some(a) = addr {
            k.push(format!("addr:{a}"));
        }
        k
    }

    /// How long until `keys` may try again, if they are over the limit.
    fn blocked(&self, keys: &[String]) -> Option<Duration> {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut wait = None;
        for k in keys {
            if let Some(q) = f.get_mut(k) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
                {
                    q.pop_front();
                }
                let max = if k.starts_with("addr:") {
                    MAX_FAILURES_PER_ADDRESS
                } else {
                    MAX_FAILURES
                };
                if q.len() >= max {
                    let until = FAILURE_WINDOW.saturating_sub(now.duration_since(q[0]));
                    wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
                }
            }
        }
        f.retain(|_, q| !q.is_empty());
        wait
    }

    fn failed(&self, keys: &[String]) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            f.entry(k.clone()).or_default().push_back(Instant::now());
        }
    }
}

/// Signs `username` in with `password` (from `addr`): a session JWT, or `Unauthenticated` (the
/// same answer for an unknown user, a wrong password, a user without one or a disabled one),
/// or `TooManyJobs`-like throttling (429) after [`MAX_FAILURES`] failures.
pub fn sign_in(
    store: &Store,
    limiter: &SignInLimiter,
    username: &str,
    password: &str,
    addr: Option<IpAddr>,
) -> ServiceResult<(Session, UserRow)> {
    let keys = SignInLimiter::keys(username, addr);
    if let Some(wait) = limiter.blocked(&keys) {
        return Err(ServiceError::new(
            Kind::TooManyJobs,
            "too_many_attempts",
            format!(
                "too many failed sign-ins; try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    let refused = || {
        limiter.failed(&keys);
        ServiceError::new(
            Kind::Unauthenticated,
            "invalid_grant",
            "incorrect username or password",
        )
    };
    let user = store.user(username).map_err(ServiceError::internal)?;
    let hash = store
        .password_hash(username)
        .map_err(ServiceError::internal)?;
    let (Some(user), Some(hash)) = (user, hash) else {
        // The same work as a real check, so timing does not tell which users exist.
        password_matches(DUMMY_HASH, password);
        return Err(refused());
    };
    if !password_matches(&hash, password) || user.disabled {
        return Err(refused());
    }
    Ok((issue(store, username)?, user))
}

/// An argon2id hash of a random string: checked against when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$3r7lP0b5d2QbYgx2s7JvJg7m9l2l8o1b2Q9m2kHf3Yw";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_check() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_matches(&h, "correct horse"));
        assert!(!password_matches(&h, "correct horsf"));
        assert!(hash_password("short").is_err());
        assert!(
            PasswordHash::new(DUMMY_HASH).is_ok(),
            "the dummy hash must cost a real check"
        );
        assert!(!password_matches(DUMMY_HASH, "anything"));
    }

    #[test]
    fn sessions_verify_until_rotated_twice_and_the_limiter_throttles() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let s = issue(&store, "ann").unwrap();
        assert!(is_jwt(&s.access_token));
        assert_eq!(verify(&store, &s.access_token).unwrap(), "ann");
        let mut forged = s.access_token.clone();
        forged.push('x');
        assert!(verify(&store, &forged).is_err());
        rotate_key(&store).unwrap();
        assert_eq!(
            verify(&store, &s.access_token).unwrap(),
            "ann",
            "one rotation: still valid"
        );
        rotate_key(&store).unwrap();
        assert!(
            verify(&store, &s.access_token).is_err(),
            "two rotations: its key is gone"
        );

        let l = SignInLimiter::default();
        let keys = SignInLimiter::keys("ann", Some("127.0.0.1".parse().unwrap()));
        for _ in 0..MAX_FAILURES {
            assert!(l.blocked(&keys).is_none());
            l.failed(&keys);
        }
        assert!(l.blocked(&keys).is_some());
        let other = SignInLimiter::keys("bob", Some("127.0.0.2".parse().unwrap()));
        assert!(l.blocked(&other).is_none());
        // Another user on the same address is not locked out by ann's failures...
        let same_addr = SignInLimiter::keys("carl", Some("127.0.0.1".parse().unwrap()));
        assert!(l.blocked(&same_addr).is_none());
        // ... until the address itself has failed too often.
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            l.failed(&SignInLimiter::keys(
                &format!("u{i}"),
                Some("127.0.0.1".parse().unwrap()),
            ));
        }
        assert!(l.blocked(&same_addr).is_some());
    }
}
