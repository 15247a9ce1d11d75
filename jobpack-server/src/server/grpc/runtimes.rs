//! The seed's `RuntimeService` over the service's runtimes: list and info for every caller,
//! install and test for admins (the same rules as `/v1/runtimes`).

use tonic::{Request, Response, Status};

use jobpack_core::rootfs::RuntimeFs;

use super::pb::runtime_service_server::RuntimeService;
use super::{Door, pb, status_of};

fn info(rt: RuntimeFs) -> pb::RuntimeInfo {
    pb::RuntimeInfo {
        reference: rt.reference(),
        name: rt.name,
        digest: rt.digest,
        image: rt.image,
        size: rt.size.min(i64::MAX as u64) as i64,
        entries: rt.entries.min(i64::MAX as u64) as i64,
        os_release: rt.os_release.unwrap_or_default(),
        source: rt.source,
    }
}

#[tonic::async_trait]
impl RuntimeService for Door {
    async fn install_runtime(
        &self,
        req: Request<pb::InstallRuntimeRequest>,
    ) -> Result<Response<pb::InstallRuntimeResponse>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(
            &caller,
            crate::server::service::auth::Action::Administer,
            "install_runtime",
        )?;
        let r = req.into_inner();
        // The message is within the door's size limit: unpacked from memory as it is.
        let upload = Box::new(std::io::Cursor::new(r.tarball));
        let rt = self
            .svc
            .install_runtime(&caller, &r.name, upload)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::InstallRuntimeResponse {
            runtime: Some(info(rt)),
        }))
    }

    async fn list_runtimes(
        &self,
        req: Request<pb::ListRuntimesRequest>,
    ) -> Result<Response<pb::ListRuntimesResponse>, Status> {
        let caller = self.caller(&req)?;
        let all = self.svc.list_runtimes(&caller).map_err(status_of)?;
        Ok(Response::new(pb::ListRuntimesResponse {
            runtimes: all.into_iter().map(info).collect(),
        }))
    }

    async fn get_runtime_info(
        &self,
        req: Request<pb::GetRuntimeInfoRequest>,
    ) -> Result<Response<pb::GetRuntimeInfoResponse>, Status> {
        let caller = self.caller(&req)?;
        let rt = self
            .svc
            .runtime(&caller, &req.get_ref().name)
            .map_err(status_of)?;
        Ok(Response::new(pb::GetRuntimeInfoResponse {
            runtime: Some(info(rt)),
        }))
    }

    async fn test_runtime(
        &self,
        req: Request<pb::TestRuntimeRequest>,
    ) -> Result<Response<pb::TestRuntimeResponse>, Status> {
        let caller = self.caller(&req)?;
        let t = self
            .svc
            .test_runtime(&caller, &req.get_ref().name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::TestRuntimeResponse {
            success: t.ok,
            output: t.output,
            exit_code: t.exit_code.unwrap_or(-1),
            runtime: Some(info(t.runtime)),
        }))
    }
}
