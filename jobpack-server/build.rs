//! Generates the gRPC door's code from `proto/joblet.proto` with protox (a proto compiler in
//! Rust: no protoc on the build machine) and tonic-prost-build (the server, and the client `jobpack rnx` uses).
//!
//! A release build also lays out the binary's code in the order `link-order.txt` gives (see
//! [`link_order`]).

use std::env;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/joblet.proto");
    let fds = protox::compile(["proto/joblet.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    link_order();
    Ok(())
}

/// The functions the server runs as it starts, then those a job runs, then those of `jobpack run`
/// and `pack`, placed first and together in the release binary (lld's `--symbol-ordering-file`;
/// `scripts/link-order.sh` writes the list from a run of the binary). Scattered over 17 MB of
/// code, the start's few thousand functions made the kernel map ~9.6 MB of it (it maps 64 KiB
/// around each page fault); packed, a few megabytes. Functions not named (new ones, or all of them
/// after a toolchain or dependency change renames them) stay where the compiler put them: a stale
/// list costs memory, never correctness.
///
/// Only where the linker is lld: Rust 1.90 and later link x86_64-unknown-linux-gnu with its own
/// lld unless told otherwise; any other linker, or `JOBPACK_LINK_ORDER=0`, links as before.
fn link_order() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=JOBPACK_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let wanted = env::var("JOBPACK_LINK_ORDER").map_or(true, |v| v != "0");
    // A linker or linker flavour chosen by the user may not be lld.
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let own_linker = env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || flags.split('\x1f').any(|f| {
            f.contains("linker") || f.contains("fuse-ld") || f.contains("link-self-contained")
        });
    if !(release && target && wanted && !own_linker && rustc_links_with_lld()) {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let list = std::path::Path::new(&dir).join("link-order.txt");
    if list.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether this rustc (1.90 or later) links the host target with its own lld by default.
fn rustc_links_with_lld() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = std::process::Command::new(rustc).arg("-V").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
