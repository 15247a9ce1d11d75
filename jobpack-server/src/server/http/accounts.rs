//! The account endpoints: who am I, usage stats, and (admins) users, tokens, quotas and the
//! audit log. The same operations as `jobpack admin`, over HTTP.

use std::collections::BTreeMap;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::server::http::jobs::rfc3339;
use crate::server::http::problem::{ApiError, ApiResult, internal, problem};
use crate::server::http::schema::{LabelRule, Text, UserNameRule};
use crate::server::service::auth::require;
use crate::server::service::auth::{Action, Caller, Via};
use crate::server::store::Store;
use crate::server::store::accounts::{AccountError, Quota, Role, TokenRow, UserRow};

#[derive(Tags)]
enum AccountTags {
    /// Users, tokens, quotas, usage and the audit log.
    Accounts,
}

pub struct AccountsApi {
    pub store: Store,
}

/// The caller, as the server sees them.
#[derive(Debug, Object)]
pub struct Me {
    pub user: String,
    /// admin, submitter or viewer.
    pub role: String,
    /// token, certificate or none.
    pub auth: String,
    /// The caller's caps (empty: none).
    pub quota: Quota,
}

/// A user's usage.
#[derive(Debug, Object)]
pub struct Stats {
    pub user: String,
    /// Jobs by status.
    pub jobs: BTreeMap<String, u64>,
    pub total: u64,
    /// Jobs that have not ended (counted against `quota.max_concurrent`).
    pub active: u64,
    /// CPU seconds of all the user's runs (as measured by the job's cgroup).
    pub cpu_seconds: f64,
}

#[derive(Debug, Object)]
pub struct User {
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub quota: Quota,
    pub created_at: String,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> Self {
        User {
            name: u.name,
            role: u.role.to_string(),
            disabled: u.disabled,
            quota: u.quota,
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct NewUser {
    pub name: Text<UserNameRule>,
    /// admin, submitter or viewer.
    pub role: RoleName,
    #[oai(default, nullable)]
    pub quota: Option<Quota>,
}

/// A role, as a request names it.
#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum RoleName {
    Admin,
    Submitter,
    Viewer,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Role {
        match r {
            RoleName::Admin => Role::Admin,
            RoleName::Submitter => Role::Submitter,
            RoleName::Viewer => Role::Viewer,
        }
    }
}

/// A token as listed (the token itself is never shown again after creation).
#[derive(Debug, Object)]
pub struct Token {
    pub token_id: String,
    pub user: String,
    #[oai(nullable)]
    pub name: Option<String>,
    pub created_at: String,
    #[oai(nullable)]
    pub last_used_at: Option<String>,
    #[oai(nullable)]
    pub revoked_at: Option<String>,
}

impl From<TokenRow> for Token {
    fn from(t: TokenRow) -> Self {
        Token {
            token_id: t.id,
            user: t.user_name,
            name: t.name,
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct NewToken {
    /// A label (where the token is used).
    #[oai(nullable)]
    pub name: Option<Text<LabelRule>>,
}

/// A new token: `token` is shown here once and stored only as a hash.
#[derive(Debug, Object)]
pub struct CreatedToken {
    pub token_id: String,
    pub user: String,
    pub token: String,
}

#[derive(Debug, Object)]
pub struct AuditEntry {
    /// Increasing; pass the last one seen as `after` to page on.
    pub seq: i64,
    pub at: String,
    /// Who did it (user name; `jobpack` for the server, `cli:<user>` for `jobpack admin`).
    pub actor: String,
    /// job.submit, job.cancel, job.delete, user.add, user.disable, user.enable, user.quota,
    /// token.create, token.revoke.
    pub action: String,
    /// The job id, user name or token id acted on.
    #[oai(nullable)]
    pub target: Option<String>,
    #[oai(nullable)]
    pub detail: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreatedUser {
    #[oai(status = 201)]
    Created(Json<User>),
}

#[derive(ApiResponse)]
pub enum CreatedTokenResponse {
    #[oai(status = 201)]
    Created(Json<CreatedToken>),
}

#[derive(ApiResponse)]
pub enum Revoked {
    /// Revoked (requests with it get 401 from now on).
    #[oai(status = 204)]
    Revoked,
}

pub(crate) fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::Invalid(m) => ApiError::BadRequest(problem(400, "bad_request", m)),
        AccountError::UserExists(_) => ApiError::Conflict(problem(409, "exists", e.to_string())),
        AccountError::NoUser(_) => ApiError::NotFound(problem(404, "not_found", e.to_string())),
        AccountError::Db(e) => internal(e),
    }
}

impl AccountsApi {
    fn stats_of(&self, user: &str) -> ApiResult<Stats> {
        let jobs: BTreeMap<String, u64> = self
            .store
            .counts(Some(user))
            .map_err(internal)?
            .into_iter()
            .collect();
        Ok(Stats {
            user: user.into(),
            total: jobs.values().sum(),
            jobs,
            active: self.store.active_count(user).map_err(internal)?,
            cpu_seconds: self.store.cpu_seconds(user).map_err(internal)?,
        })
    }

    fn set_disabled(&self, caller: &Caller, name: &str, disabled: bool) -> ApiResult<Json<User>> {
        require(caller, Action::Administer, "manage users")?;
        if disabled && name == caller.user {
            return Err(ApiError::Conflict(problem(
                409,
                "self",
                "you cannot disable yourself",
            )));
        }
        self.store
            .set_user_disabled(name, disabled)
            .map_err(account_error)?;
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        self.store.audit(&caller.user, action, Some(name), None);
        self.user_of(name)
    }

    fn user_of(&self, name: &str) -> ApiResult<Json<User>> {
        let u = self.store.user(name).map_err(internal)?;
        u.map(|u| Json(u.into()))
            .ok_or_else(|| account_error(AccountError::NoUser(name.into())))
    }
}

#[OpenApi(tag = "AccountTags::Accounts")]
impl AccountsApi {
    /// The caller: user name, role, how they authenticated, their quota.
    #[oai(path = "/me", method = "get")]
    async fn me(&self, caller: Caller) -> ApiResult<Json<Me>> {
        let quota = self
            .store
            .user(&caller.user)
            .map_err(internal)?
            .map(|u| u.quota)
            .unwrap_or_default();
        Ok(Json(Me {
            user: caller.user,
            role: caller.role.to_string(),
            auth: caller.via.as_str().into(),
            quota,
        }))
    }

    /// Usage of the caller (or, for admins, of `user`): jobs by status and CPU seconds.
    #[oai(path = "/stats", method = "get")]
    async fn stats(&self, caller: Caller, user: Query<Option<String>>) -> ApiResult<Json<Stats>> {
        require(&caller, Action::Read, "read stats")?;
        let user = match user.0 {
            Some(u) if u != caller.user => {
                require(&caller, Action::Administer, "read other users' stats")?;
                u
            }
            _ => caller.user.clone(),
        };
        self.stats_of(&user).map(Json)
    }

    /// Every user's usage (admins).
    #[oai(path = "/stats/users", method = "get")]
    async fn stats_all(&self, caller: Caller) -> ApiResult<Json<Vec<Stats>>> {
        require(&caller, Action::Administer, "read other users' stats")?;
        let mut names: Vec<String> = self
            .store
            .users()
            .map_err(internal)?
            .into_iter()
            .map(|u| u.name)
            .collect();
        for o in self.store.owners().map_err(internal)? {
            if !names.contains(&o) {
                names.push(o);
            }
        }
        names.sort();
        names
            .iter()
            .map(|n| self.stats_of(n))
            .collect::<ApiResult<_>>()
            .map(Json)
    }

    /// All users (admins).
    #[oai(path = "/users", method = "get")]
    async fn users(&self, caller: Caller) -> ApiResult<Json<Vec<User>>> {
        require(&caller, Action::Administer, "manage users")?;
        let users = self.store.users().map_err(internal)?;
        Ok(Json(users.into_iter().map(User::from).collect()))
    }

    /// Add a user (admins). Give them a token with `POST /users/{name}/tokens`.
    #[oai(path = "/users", method = "post")]
    async fn add_user(&self, caller: Caller, body: Json<NewUser>) -> ApiResult<CreatedUser> {
        require(&caller, Action::Administer, "manage users")?;
        let role: Role = body.role.into();
        let quota = body.quota.clone().unwrap_or_default();
        let name = &body.name.0;
        self.store
            .add_user(name, role, &quota)
            .map_err(account_error)?;
        self.store.audit(
            &caller.user,
            "user.add",
            Some(name),
            Some(&format!("role={role}")),
        );
        Ok(CreatedUser::Created(self.user_of(name)?))
    }

    /// One user (admins).
    #[oai(path = "/users/:name", method = "get")]
    async fn user(&self, caller: Caller, name: Path<String>) -> ApiResult<Json<User>> {
        require(&caller, Action::Administer, "manage users")?;
        self.user_of(&name)
    }

    /// Disable a user: their tokens and certificates are refused from now on (admins).
    #[oai(path = "/users/:name/disable", method = "post")]
    async fn disable(&self, caller: Caller, name: Path<String>) -> ApiResult<Json<User>> {
        self.set_disabled(&caller, &name, true)
    }

    /// Enable a disabled user again (admins).
    #[oai(path = "/users/:name/enable", method = "post")]
    async fn enable(&self, caller: Caller, name: Path<String>) -> ApiResult<Json<User>> {
        self.set_disabled(&caller, &name, false)
    }

    /// Replace a user's quota (admins).
    #[oai(path = "/users/:name/quota", method = "put")]
    async fn set_quota(
        &self,
        caller: Caller,
        name: Path<String>,
        body: Json<Quota>,
    ) -> ApiResult<Json<User>> {
        require(&caller, Action::Administer, "manage users")?;
        self.store.set_quota(&name, &body).map_err(account_error)?;
        let detail = serde_json::to_string(&body.0).map_err(internal)?;
        self.store
            .audit(&caller.user, "user.quota", Some(&name), Some(&detail));
        self.user_of(&name)
    }

    /// Create a token for a user (admins). The token is in this answer only.
    #[oai(path = "/users/:name/tokens", method = "post")]
    async fn create_token(
        &self,
        caller: Caller,
        name: Path<String>,
        body: Json<NewToken>,
    ) -> ApiResult<CreatedTokenResponse> {
        require(&caller, Action::Administer, "manage tokens")?;
        let (row, token) = self
            .store
            .create_token(&name, body.name.as_ref().map(|t| t.0.as_str()))
            .map_err(account_error)?;
        self.store.audit(
            &caller.user,
            "token.create",
            Some(&row.id),
            Some(&format!("user={}", row.user_name)),
        );
        Ok(CreatedTokenResponse::Created(Json(CreatedToken {
            token_id: row.id,
            user: row.user_name,
            token,
        })))
    }

    /// Tokens (admins), of one user or all; never the tokens themselves.
    #[oai(path = "/tokens", method = "get")]
    async fn tokens(
        &self,
        caller: Caller,
        user: Query<Option<String>>,
    ) -> ApiResult<Json<Vec<Token>>> {
        require(&caller, Action::Administer, "manage tokens")?;
        let rows = self.store.tokens(user.0.as_deref()).map_err(internal)?;
        Ok(Json(rows.into_iter().map(Token::from).collect()))
    }

    /// Revoke a token (admins), by id or a unique prefix of it.
    #[oai(path = "/tokens/:id", method = "delete")]
    async fn revoke(&self, caller: Caller, id: Path<String>) -> ApiResult<Revoked> {
        require(&caller, Action::Administer, "manage tokens")?;
        if let Via::Token(mine) = &caller.via
            && mine.starts_with(id.as_str())
            && !id.is_empty()
        {
            return Err(ApiError::Conflict(problem(
                409,
                "self",
                "you cannot revoke the token this request is made with; revoke it with another",
            )));
        }
        let t = self.store.revoke_token(&id).map_err(|e| match e {
            AccountError::Invalid(m) => ApiError::NotFound(problem(404, "not_found", m)),
            e => account_error(e),
        })?;
        self.store.audit(
            &caller.user,
            "token.revoke",
            Some(&t.id),
            Some(&format!("user={}", t.user_name)),
        );
        Ok(Revoked::Revoked)
    }

    /// The audit log (admins), oldest first: who submitted, cancelled and deleted what, and
    /// every change to users and tokens.
    #[oai(path = "/audit", method = "get")]
    async fn audit(
        &self,
        caller: Caller,
        actor: Query<Option<String>>,
        target: Query<Option<String>>,
        #[oai(default)] after: Query<i64>,
        #[oai(
            default = "default_audit_limit",
            validator(minimum(value = "1"), maximum(value = "10000"))
        )]
        limit: Query<u32>,
    ) -> ApiResult<Json<Vec<AuditEntry>>> {
        require(&caller, Action::Administer, "read the audit log")?;
        let rows = self
            .store
            .audit_log(actor.0.as_deref(), target.0.as_deref(), after.0, limit.0)
            .map_err(internal)?;
        Ok(Json(
            rows.into_iter()
                .map(|a| AuditEntry {
                    seq: a.seq,
                    at: rfc3339(a.at),
                    actor: a.actor,
                    action: a.action,
                    target: a.target,
                    detail: a.detail,
                })
                .collect(),
        ))
    }
}

fn default_audit_limit() -> u32 {
    1000
}
