//! `/v1/webhooks`: standing webhooks (a user's, or the server's for admins), their deliveries
//! with attempts, last response and error, and redelivery. A thin adapter over
//! `service::webhooks`; the secret is shown once, when a webhook is created.

use std::collections::HashMap;
use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};

use crate::server::http::problem::{ApiError, ApiResult, internal, problem};
use crate::server::service::Service;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::webhooks::{self, HookRequest};
use crate::server::store::rfc3339;
use crate::server::store::webhooks::{DeliveryRow, WebhookRow};

#[derive(Tags)]
enum WebhookTags {
    /// Webhooks: signed notifications of job, batch and workflow events.
    Webhooks,
}

/// Whose events a standing webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Scope {
    /// The caller's own jobs, batches and workflows.
    User,
    /// Everyone's (admins).
    Server,
}

/// A new standing webhook.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct WebhookCreate {
    /// Where deliveries are POSTed (http or https; loopback and private addresses only where the
    /// server allows them, `--allow-webhooks-to`).
    #[oai(validator(max_length = 2048))]
    pub url: String,
    /// Any of `job.started`, `job.finished`, `batch.finished`, `workflow.finished`.
    #[oai(validator(max_items = 4))]
    pub events: Vec<String>,
    /// `user` (default) or `server`.
    pub scope: Option<Scope>,
    /// Extra headers sent with each delivery (a receiver's own auth); at most 16.
    pub headers: Option<HashMap<String, String>>,
    /// Sign with the secret of this standing webhook of yours instead of a new one.
    pub secret_ref: Option<String>,
}

/// A webhook as shown (never its secret, except once at creation).
#[derive(Debug, Object)]
pub struct WebhookInfo {
    pub webhook_id: String,
    pub owner: String,
    /// `user`, `server`, or the kind of submission it came with (`job`, `batch`, `workflow`).
    pub scope: String,
    /// The submission it came with, if any.
    #[oai(nullable)]
    pub target_id: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    /// The names of its extra headers (their values are not shown).
    pub headers: Vec<String>,
    pub created_at: String,
    /// `whsec_...`: only in the answer that created it.
    #[oai(skip_serializing_if_is_none)]
    pub secret: Option<String>,
}

pub(crate) fn info(w: WebhookRow, with_secret: bool) -> WebhookInfo {
    WebhookInfo {
        webhook_id: w.id,
        owner: w.owner,
        scope: w.scope,
        target_id: w.target_id,
        url: w.url,
        events: w.events,
        headers: w.headers.into_keys().collect(),
        created_at: rfc3339(w.created_at),
        secret: with_secret.then_some(w.secret),
    }
}

#[derive(Debug, Object)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookInfo>,
}

/// One delivery and its attempts.
#[derive(Debug, Object)]
pub struct DeliveryInfo {
    /// Also its `webhook-id` header (the same on every attempt).
    pub delivery_id: String,
    pub event: String,
    /// The job, batch or workflow it is about.
    pub subject_id: String,
    /// `pending`, `delivered`, or `failed` (given up).
    pub status: String,
    pub attempts: i64,
    /// When it is tried next (pending).
    #[oai(nullable)]
    pub next_attempt_at: Option<String>,
    #[oai(nullable)]
    pub last_response_code: Option<i64>,
    #[oai(nullable)]
    pub last_error: Option<String>,
    pub created_at: String,
    #[oai(nullable)]
    pub delivered_at: Option<String>,
}

fn delivery(d: DeliveryRow) -> DeliveryInfo {
    DeliveryInfo {
        next_attempt_at: (d.status == "pending").then(|| rfc3339(d.next_at)),
        delivery_id: d.id,
        event: d.event,
        subject_id: d.subject_id,
        status: d.status,
        attempts: d.attempts,
        last_response_code: d.last_code,
        last_error: d.last_error,
        created_at: rfc3339(d.created_at),
        delivered_at: d.delivered_at.map(rfc3339),
    }
}

#[derive(Debug, Object)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryInfo>,
}

#[derive(ApiResponse)]
pub enum Created {
    /// Created; `secret` is shown this once.
    #[oai(status = 201)]
    Created(Json<WebhookInfo>),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// The webhook and its deliveries are gone.
    #[oai(status = 204)]
    Deleted,
}

#[derive(ApiResponse)]
pub enum Redelivering {
    /// It is sent again shortly (attempts start over).
    #[oai(status = 202)]
    Accepted,
}

fn default_limit() -> u32 {
    100
}

pub struct WebhooksApi {
    pub svc: Arc<Service>,
}

impl WebhooksApi {
    fn visible(&self, caller: &Caller, id: &str) -> ApiResult<WebhookRow> {
        require(caller, Action::Read, "read webhooks")?;
        self.svc
            .runner
            .store
            .webhook(id)
            .map_err(internal)?
            .filter(|w| caller.sees(&w.owner))
            .ok_or_else(|| {
                ApiError::NotFound(problem(404, "not_found", format!("no webhook {id}")))
            })
    }
}

#[OpenApi(tag = "WebhookTags::Webhooks")]
impl WebhooksApi {
    /// Register a standing webhook for your events (`scope: user`) or, admins, everyone's
    /// (`server`). Deliveries are JSON `{type, timestamp, data}` signed by the Standard Webhooks
    /// scheme (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,...`).
    #[oai(path = "/webhooks", method = "post")]
    async fn create(&self, caller: Caller, body: Json<WebhookCreate>) -> ApiResult<Created> {
        let b = body.0;
        let scope = match b.scope.unwrap_or(Scope::User) {
            Scope::User => "user",
            Scope::Server => "server",
        };
        let req = HookRequest {
            url: b.url,
            events: b.events,
            headers: b.headers.unwrap_or_default().into_iter().collect(),
            secret_ref: b.secret_ref,
        };
        let store = &self.svc.runner.store;
        let w = webhooks::create(
            store,
            &self.svc.webhooks,
            &caller,
            &caller.user,
            &req,
            scope,
            None,
        )?;
        store.audit(
            &caller.user,
            "webhook.create",
            Some(&w.id),
            Some(&format!("scope={scope}")),
        );
        Ok(Created::Created(Json(info(w, true))))
    }

    /// Standing webhooks: yours (admins: everyone's).
    #[oai(path = "/webhooks", method = "get")]
    async fn list(&self, caller: Caller) -> ApiResult<Json<WebhookList>> {
        require(&caller, Action::Read, "read webhooks")?;
        let rows = self
            .svc
            .runner
            .store
            .webhooks(caller.owner_filter().as_deref())
            .map_err(internal)?;
        Ok(Json(WebhookList {
            webhooks: rows.into_iter().map(|w| info(w, false)).collect(),
        }))
    }

    /// One webhook (standing, or one a submission carried).
    #[oai(path = "/webhooks/:id", method = "get")]
    async fn get(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<WebhookInfo>> {
        Ok(Json(info(self.visible(&caller, &id)?, false)))
    }

    /// Delete a webhook; its pending deliveries are dropped.
    #[oai(path = "/webhooks/:id", method = "delete")]
    async fn delete(&self, caller: Caller, id: Path<String>) -> ApiResult<Deleted> {
        require(&caller, Action::Delete, "delete webhooks")?;
        let w = self.visible(&caller, &id)?;
        let store = &self.svc.runner.store;
        store.delete_webhook(&w.id).map_err(internal)?;
        store.audit(&caller.user, "webhook.delete", Some(&w.id), None);
        Ok(Deleted::Deleted)
    }

    /// A webhook's deliveries, newest first: status, attempts, last response code and error.
    #[oai(path = "/webhooks/:id/deliveries", method = "get")]
    async fn deliveries(
        &self,
        caller: Caller,
        id: Path<String>,
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
    ) -> ApiResult<Json<DeliveryList>> {
        let w = self.visible(&caller, &id)?;
        let rows = self
            .svc
            .runner
            .store
            .deliveries(&w.id, limit.0)
            .map_err(internal)?;
        Ok(Json(DeliveryList {
            deliveries: rows.into_iter().map(delivery).collect(),
        }))
    }

    /// Send a delivery again now (the same `webhook-id`; its attempts start over).
    #[oai(
        path = "/webhooks/:id/deliveries/:delivery_id/redeliver",
        method = "post"
    )]
    async fn redeliver(
        &self,
        caller: Caller,
        id: Path<String>,
        delivery_id: Path<String>,
    ) -> ApiResult<Redelivering> {
        require(&caller, Action::Submit, "redeliver webhooks")?;
        let w = self.visible(&caller, &id)?;
        let found = self
            .svc
            .runner
            .store
            .redeliver(&w.id, &delivery_id)
            .map_err(internal)?;
        if !found {
            return Err(ApiError::NotFound(problem(
                404,
                "not_found",
                format!("no delivery {} of webhook {}", delivery_id.0, w.id),
            )));
        }
        Ok(Redelivering::Accepted)
    }
}
