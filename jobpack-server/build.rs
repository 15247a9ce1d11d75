//! Generates the gRPC door's code from `proto/joblet.proto` with protox (a proto compiler in
//! Rust: no protoc on the build machine) and tonic-prost-build (the server, and the client `jobpack rnx` uses).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/joblet.proto");
    let fds = protox::compile(["proto/joblet.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
