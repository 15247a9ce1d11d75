//! The rules of reading and acting on jobs that every door shares: who may see which job.

use crate::server::scheduler::queue::Runner;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::error::{ServiceError, ServiceResult};
use crate::server::store::JobRow;

/// The job `id` if `caller` may read it; another user's job is "not found", as a missing one.
pub fn visible_row(runner: &Runner, caller: &Caller, id: &str) -> ServiceResult<JobRow> {
    require(caller, Action::Read, "read jobs")?;
    runner
        .store
        .get(id)
        .map_err(ServiceError::internal)?
        .filter(|r| caller.sees(&r.owner))
        .ok_or_else(|| ServiceError::not_found(format!("no job {id}")))
}
