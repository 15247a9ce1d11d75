//! Generates the gRPC door's code from `proto/joblet.proto` with protox (a proto compiler in
//! Rust: no protoc on the build machine) and tonic-prost-build (server side only).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/joblet.proto");
    let fds = protox::compile(["proto/joblet.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
