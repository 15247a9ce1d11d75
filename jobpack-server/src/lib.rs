//! The `jobpack` program as a library: the command line, the HTTP service and its client, so that
//! the client shares the service's types and tests can run the service in-process.
//!
//! - [`cli`]: the commands (`pack`, `run`, `build`, `serve`, `admin`, and the client's), the only
//!   layer that prints and picks exit codes;
//! - [`server`]: `jobpack serve` (store, queue, rules, front doors);
//! - [`client`]: the client commands (`submit`, `logs`, `batch`, ..., and `rnx` over HTTP or gRPC);
//! - [`proto`]: the gRPC messages, server and client of `proto/joblet.proto` (generated at build
//!   time), shared by the gRPC door and `jobpack rnx`.

pub mod cli;
pub mod client;
pub mod server;

pub mod proto;
