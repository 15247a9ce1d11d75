//! Where a job's code comes from. Today: a git repository at an exact commit ([`git`]).

pub mod git;
