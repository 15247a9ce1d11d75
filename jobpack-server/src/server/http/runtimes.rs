//! Runtimes over HTTP (`/v1/runtimes`): list and read them (any signed-in caller), install one
//! from an uploaded rootfs tarball, test and remove it (admins). A thin adapter over
//! `service::runtimes`.

use std::sync::Arc;

use futures_util::StreamExt;
use poem::Body;
use poem_openapi::param::Path;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use tokio::io::AsyncWriteExt;

use jobpack_core::rootfs::RuntimeFs;

use crate::server::http::problem::{ApiResult, internal};
use crate::server::service::Service;
use crate::server::service::auth::Caller;

#[derive(Tags)]
enum RuntimeTags {
    /// Runtimes: root file systems pinned by digest, for a spec's `runtime_fs`.
    Runtimes,
}

/// An installed runtime.
#[derive(Debug, Object)]
pub struct RuntimeInfo {
    pub name: String,
    /// `sha256:<hex>` of its canonical layer: what a spec pins (`runtime_fs: NAME@DIGEST`).
    pub digest: String,
    /// `NAME@DIGEST`, ready to paste into a spec.
    pub reference: String,
    /// Its OCI image as the Dockerfile names it.
    pub image: String,
    pub image_digest: String,
    /// Bytes of its layer.
    pub size: u64,
    pub entries: u64,
    /// `PRETTY_NAME` of its os-release (null: it has none).
    #[oai(nullable)]
    pub os_release: Option<String>,
    /// How it was made.
    pub source: String,
}

fn info(rt: RuntimeFs) -> RuntimeInfo {
    RuntimeInfo {
        reference: rt.reference(),
        name: rt.name,
        digest: rt.digest,
        image: rt.image,
        image_digest: rt.image_digest,
        size: rt.size,
        entries: rt.entries,
        os_release: rt.os_release,
        source: rt.source,
    }
}

#[derive(Debug, Object)]
pub struct RuntimeList {
    pub runtimes: Vec<RuntimeInfo>,
}

/// What the probe printed in the runtime.
#[derive(Debug, Object)]
pub struct RuntimeTest {
    pub runtime: RuntimeInfo,
    /// The probe exited 0 in the sandbox on that root.
    pub ok: bool,
    #[oai(nullable)]
    pub exit_code: Option<i32>,
    /// Its os-release name, and python3's version where it has one.
    pub output: String,
}

#[derive(ApiResponse)]
pub enum Installed {
    /// Installed.
    #[oai(status = 201)]
    Created(Json<RuntimeInfo>),
}

pub struct RuntimesApi {
    pub svc: Arc<Service>,
}

#[OpenApi(tag = "RuntimeTags::Runtimes")]
impl RuntimesApi {
    /// The runtimes of this server, by name.
    #[oai(path = "/runtimes", method = "get")]
    async fn list(&self, caller: Caller) -> ApiResult<Json<RuntimeList>> {
        let runtimes = self.svc.list_runtimes(&caller)?;
        Ok(Json(RuntimeList {
            runtimes: runtimes.into_iter().map(info).collect(),
        }))
    }

    /// One runtime (seed 004's GetRuntimeInfo).
    #[oai(path = "/runtimes/:name", method = "get")]
    async fn get(
        &self,
        caller: Caller,
        #[oai(validator(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*$", max_length = 64))] name: Path<
            String,
        >,
    ) -> ApiResult<Json<RuntimeInfo>> {
        Ok(Json(info(self.svc.runtime(&caller, &name)?)))
    }

    /// Install a runtime (admins; seed 004's InstallRuntime): the body is a root file system
    /// as a tar or tar.gz (e.g. `debootstrap` output, or `podman export`). Its digest is that of
    /// the canonical tar of what was unpacked (devices dropped); 409 if the name is taken.
    #[oai(path = "/runtimes/:name", method = "post")]
    async fn install(
        &self,
        caller: Caller,
        #[oai(validator(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*$", max_length = 64))] name: Path<
            String,
        >,
        body: Binary<Body>,
    ) -> ApiResult<Installed> {
        // Refused before the upload is read when the caller may not, or the name is bad.
        crate::server::service::auth::require(
            &caller,
            crate::server::service::auth::Action::Administer,
            "install runtimes",
        )?;
        jobpack_core::rootfs::check_name(&name).map_err(|e| {
            crate::server::service::error::ServiceError::invalid("bad_request", e.to_string())
        })?;
        let tmp = tempfile::Builder::new()
            .prefix("runtime-upload-")
            .tempfile_in(&self.svc.runner.data_dir)
            .map_err(internal)?;
        let mut file = tokio::fs::File::create(tmp.path())
            .await
            .map_err(internal)?;
        // The body is bounded by the server's body limit (the edge) before it gets here.
        let mut stream = body.0.into_bytes_stream();
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.map_err(internal)?)
                .await
                .map_err(internal)?;
        }
        // A scratch file, read once and removed: flushed, never synced.
        file.flush().await.map_err(internal)?;
        drop(file);
        let upload = Box::new(std::io::BufReader::new(tmp.reopen().map_err(internal)?));
        let rt = self.svc.install_runtime(&caller, &name, upload).await?;
        Ok(Installed::Created(Json(info(rt))))
    }

    /// Remove a runtime (admins); 409 while a job runs on it.
    #[oai(path = "/runtimes/:name", method = "delete")]
    async fn remove(
        &self,
        caller: Caller,
        #[oai(validator(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*$", max_length = 64))] name: Path<
            String,
        >,
    ) -> ApiResult<Json<RuntimeInfo>> {
        Ok(Json(info(self.svc.remove_runtime(&caller, &name)?)))
    }

    /// Run a probe in the sandbox on the runtime (admins; seed 004's TestRuntime).
    #[oai(path = "/runtimes/:name/test", method = "post")]
    async fn test(
        &self,
        caller: Caller,
        #[oai(validator(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*$", max_length = 64))] name: Path<
            String,
        >,
    ) -> ApiResult<Json<RuntimeTest>> {
        let t = self.svc.test_runtime(&caller, &name).await?;
        Ok(Json(RuntimeTest {
            runtime: info(t.runtime),
            ok: t.ok,
            exit_code: t.exit_code,
            output: t.output,
        }))
    }
}
