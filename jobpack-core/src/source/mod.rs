//! Where a job's code comes from: a git repository at an exact commit ([`git`]), or a local
//! directory such as extracted uploads ([`local`]).

pub mod git;
pub mod local;
