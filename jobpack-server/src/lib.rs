//! The `jobpack` program as a library: the command line, the HTTP service and its client, so that
//! the client shares the service's types and tests can run the service in-process.
//!
//! - [`cli`]: the commands (`pack`, `run`, `build`, `serve`, `admin`, and the client's), the only
//!   layer that prints and picks exit codes;
//! - [`server`]: `jobpack serve` (store, queue, rules, front doors);
//! - [`client`]: the HTTP client commands (`submit`, `logs`, `batch`, ...).

pub mod cli;
pub mod client;
pub mod server;
