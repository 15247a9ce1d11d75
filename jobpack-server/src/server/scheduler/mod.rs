//! Running what was accepted: the runner's slots and cancel switches (`queue`), one job's way
//! through pack -> unpack -> run with every state change recorded (`pipeline`), and the
//! advancement of workflows when a job ends (`workflows`).

mod pipeline;
pub mod queue;
pub mod slots;
pub mod workflows;

pub(crate) use pipeline::write_new;
