//! Running what was accepted: the runner's slots and cancel switches (`queue`), one job's way
//! through pack -> unpack -> run with every state change recorded (`pipeline`), and the
//! advancement of workflows when a job ends (`workflows`); what a run leaves besides its status
//! (`results`: kept attempts, receipts, the result cache); a running job's usage samples
//! (`usage`); the log line and metrics of each state change (`observe`).

mod observe;
mod pipeline;
pub mod queue;
mod results;
pub mod slots;
pub mod usage;
pub mod workflows;

pub(crate) use pipeline::write_new;
