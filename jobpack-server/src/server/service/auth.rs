//! Who is calling, and what they may do.
//!
//! A caller is identified by an API token (`Authorization: Bearer jp_...`), or, when the server
//! asks for client certificates (`--tls-client-ca`), by a certificate signed by that CA: its CN is
//! the user name and its OU the role, as in the gRPC job service jobpack replaces. A token wins
//! when both are presented. With `--auth none` every caller is the admin `local`.
//!
//! Answers: no or bad credentials -> 401; a role that may not do this -> 403; a job of another
//! user -> 404, exactly as if it did not exist.

use crate::server::service::error::{ServiceError, ServiceResult};
use crate::server::service::sign_in;
use crate::server::store::Store;
use crate::server::store::accounts::{Role, check_user_name};
use crate::server::tls::PeerIdentity;

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// API tokens (and client certificates with `--tls-client-ca`).
    Token,
    /// No authentication: every caller is the admin `local` (loopback only unless forced).
    None,
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// An API token (its id).
    Token(String),
    /// A client certificate.
    Certificate,
    /// A session JWT from signing in with a password.
    Session,
    /// `--auth none`.
    Nothing,
}

impl Via {
    pub fn as_str(&self) -> &'static str {
        match self {
            Via::Token(_) => "token",
            Via::Certificate => "certificate",
            Via::Session => "session",
            Via::Nothing => "none",
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    pub via: Via,
}

/// Everything an endpoint may need permission for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create jobs.
    Submit,
    /// Get, list, logs, streams, downloads, own stats.
    Read,
    Cancel,
    Delete,
    /// Users, tokens, quotas, the audit log, other users' stats, metrics.
    Administer,
}

/// The whole permission table. Ownership is checked separately (`Caller::sees`).
pub fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::Admin => true,
        Role::Submitter => matches!(action, Submit | Read | Cancel | Delete),
        Role::Viewer => action == Read,
    }
}

impl Caller {
    pub fn may(&self, action: Action) -> bool {
        allowed(self.role, action)
    }

    /// Whether this caller may see a job of `owner` (admins see everyone's).
    pub fn sees(&self, owner: &str) -> bool {
        self.reads_all() || self.user == owner
    }

    /// Admins and viewers read every user's jobs, batches and workflows (viewers only read;
    /// secrets stay masked); submitters read their own.
    pub fn reads_all(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Viewer)
    }

    /// The owner to restrict listings to: the caller's own, unless they read everyone's.
    pub fn owner_filter(&self) -> Option<String> {
        (!self.reads_all()).then(|| self.user.clone())
    }
}

/// Refused (`Forbidden`) unless the caller's role allows `action`; `what` says what was asked.
pub fn require(caller: &Caller, action: Action, what: &str) -> ServiceResult<()> {
    if caller.may(action) {
        return Ok(());
    }
    Err(ServiceError::forbidden(
        "forbidden",
        format!("role {} may not {what}", caller.role),
    ))
}

pub struct Authenticator {
    pub mode: AuthMode,
    pub store: Store,
}

impl Authenticator {
    /// The caller who presented `authorization` (the value of an `Authorization` header, or a
    /// gRPC `authorization` metadata entry) and/or a client certificate, or why they are
    /// refused (a 401 over HTTP).
    pub fn identify(
        &self,
        authorization: Option<&str>,
        peer: Option<&PeerIdentity>,
    ) -> Result<Caller, String> {
        if self.mode == AuthMode::None {
            return Ok(Caller {
                user: "local".into(),
                role: Role::Admin,
                via: Via::Nothing,
            });
        }
        if let Some(h) = authorization {
            let token = h
                .strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or("the Authorization header must be \"Bearer <token>\"")?;
            if sign_in::is_jwt(token) {
                let name = sign_in::verify(&self.store, token)?;
                return match self.store.user(&name) {
                    Ok(Some(u)) if u.disabled => Err(format!("user {} is disabled", u.name)),
                    Ok(Some(u)) => Ok(Caller {
                        user: u.name,
                        role: u.role,
                        via: Via::Session,
                    }),
                    Ok(None) => Err("the token is not valid (no such user)".into()),
                    Err(e) => Err(format!("cannot check the token: {e:#}")),
                };
            }
            let found = self
                .store
                .authenticate_token(token)
                .map_err(|e| format!("cannot check the token: {e:#}"))?;
            let Some((t, u)) = found else {
                return Err("the token is not valid (unknown or revoked)".into());
            };
            if u.disabled {
                return Err(format!("user {} is disabled", u.name));
            }
            return Ok(Caller {
                user: u.name,
                role: u.role,
                via: Via::Token(t.id),
            });
        }
        if let Some(peer) = peer {
            return self.certificate_caller(peer);
        }
        Err(
            "authentication required: send \"Authorization: Bearer <token>\" or a client \
             certificate"
                .into(),
        )
    }

    fn certificate_caller(&self, peer: &PeerIdentity) -> Result<Caller, String> {
        let cn = peer
            .common_name
            .as_deref()
            .ok_or("the client certificate has no CN")?;
        check_user_name(cn).map_err(|e| format!("client certificate CN: {e}"))?;
        let roles: Vec<Role> = peer
            .organizational_units
            .iter()
            .filter_map(|ou| ou.parse().ok())
            .collect();
        let role = match roles.as_slice() {
            [r] => *r,
            [] => {
                return Err(format!(
                    "the client certificate of {cn} has no OU naming a role (admin, submitter, \
                     viewer): {:?}",
                    peer.organizational_units
                ));
            }
            _ => {
                return Err(format!(
                    "the client certificate of {cn} names several roles: {:?}",
                    peer.organizational_units
                ));
            }
        };
        match self.store.user(cn) {
            Ok(Some(u)) if u.disabled => Err(format!("user {cn} is disabled")),
            Ok(_) => Ok(Caller {
                user: cn.to_owned(),
                role,
                via: Via::Certificate,
            }),
            Err(e) => Err(format!("cannot check user {cn}: {e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table() {
        use Action::*;
        let all = [Submit, Read, Cancel, Delete, Administer];
        let may = |role| {
            all.iter()
                .filter(|a| allowed(role, **a))
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(may(Role::Admin), all);
        assert_eq!(may(Role::Submitter), [Submit, Read, Cancel, Delete]);
        assert_eq!(may(Role::Viewer), [Read]);
        let c = |role| Caller {
            user: "ann".into(),
            role,
            via: Via::Nothing,
        };
        assert!(c(Role::Submitter).sees("ann") && !c(Role::Submitter).sees("bob"));
        assert!(c(Role::Admin).sees("bob") && c(Role::Viewer).sees("bob"));
        assert_eq!(c(Role::Submitter).owner_filter().as_deref(), Some("ann"));
        assert_eq!(c(Role::Viewer).owner_filter(), None);
        assert_eq!(c(Role::Admin).owner_filter(), None);
    }
}
