//! Seed 004's `package joblet`: the messages, the server traits and the clients generated from
//! `proto/joblet.proto` by `build.rs` (protox + tonic-prost-build), shared by the gRPC door and
//! `jobpack rnx`.

#![allow(clippy::all)]

tonic::include_proto!("joblet");
