//! The rules every front door shares: who the caller is and what they may do (`auth`), the
//! server's default and maximum limits (`limits`), and the one submission flow for jobs, batches
//! and workflows (`submit`: validation, ownership, quota, secrets, destinations, one
//! transaction, audit).

pub mod auth;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod submit;
