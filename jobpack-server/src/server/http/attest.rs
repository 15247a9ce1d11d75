//! Signed statements over HTTP: a job's provenance (`/v1/jobs/{id}/provenance`, the DSSE
//! envelope written when it was packed) and the server's public keys (`/v1/keys`) to check it.

use std::sync::Arc;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};

use crate::server::http::downloads::{Packed, packed_json};
use crate::server::http::problem::{ApiError, ApiResult, internal, problem};
use crate::server::service::Service;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::jobs::files_row;
use crate::server::store::documents::Doc;

#[derive(Tags)]
enum AttestTags {
    /// Provenance: what each artifact was packed from, signed.
    Provenance,
}

/// A public key that signs this server's statements.
#[derive(Debug, Object)]
pub struct KeyInfo {
    /// The hex sha256 of its SubjectPublicKeyInfo DER (the envelopes' `keyid`).
    pub keyid: String,
    /// PEM SubjectPublicKeyInfo (ed25519).
    pub public_key_pem: String,
}

#[derive(Debug, Object)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

pub struct AttestApi {
    pub svc: Arc<Service>,
}

#[OpenApi(tag = "AttestTags::Provenance")]
impl AttestApi {
    /// The artifact's provenance: an in-toto Statement v1 with a SLSA provenance v1 predicate
    /// (subject: the artifact's sha256; materials: git commit, data files, base image, templates,
    /// jobpack's version) in a DSSE envelope signed by the server's key (`/v1/keys`). 409 until
    /// the job is packed.
    #[oai(path = "/jobs/:id/provenance", method = "get")]
    async fn provenance(
        &self,
        caller: Caller,
        id: Path<String>,
    ) -> ApiResult<Json<serde_json::Value>> {
        packed_json(&self.svc.runner, &caller, &id, Packed::Provenance).await
    }

    /// The signed receipt of the job's last run: an in-toto statement (subjects: the artifact,
    /// the log and the outputs, each by sha256; predicate: backend, runtime, limits, network,
    /// isolation and outcome, start and end, kernel and CPU model) in a DSSE envelope. 409 until
    /// the job has run.
    #[oai(path = "/jobs/:id/receipt", method = "get")]
    async fn receipt(
        &self,
        caller: Caller,
        id: Path<String>,
    ) -> ApiResult<Json<serde_json::Value>> {
        let r = files_row(&self.svc.runner, &caller, &id)?;
        let bytes = match self.svc.runner.document(&r.id, Doc::Receipt) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && r.finished_at.is_none() => {
                return Err(ApiError::Conflict(problem(
                    409,
                    "not_run",
                    format!("job {} has not finished a run yet ({})", r.id, r.status),
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ApiError::NotFound(problem(
                    404,
                    "no_receipt",
                    format!("job {} ended without a run ({})", r.id, r.status),
                )));
            }
            Err(e) => return Err(internal(e)),
        };
        serde_json::from_slice(&bytes).map(Json).map_err(internal)
    }

    /// The public keys of this server's signatures.
    #[oai(path = "/keys", method = "get")]
    async fn keys(&self, caller: Caller) -> ApiResult<Json<KeyList>> {
        require(&caller, Action::Read, "read keys")?;
        let k = self.svc.runner.signing_key.public();
        Ok(Json(KeyList {
            keys: vec![KeyInfo {
                keyid: k.keyid(),
                public_key_pem: k.to_pem(),
            }],
        }))
    }
}
