//! Packs a spec file into an artifact, printing progress events as JSON lines on stderr.
//!
//! `cargo run -p jobpack-core --example pack -- SPEC.json OUT.tar.gz`

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(spec), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: pack SPEC.{{json,yaml}} OUT.tar.gz");
        std::process::exit(2);
    };
    let spec = jobpack_core::JobSpec::from_path(spec.as_ref())?;
    let packager = jobpack_core::Packager::new(jobpack_core::PackagerConfig::default())?
        .with_progress(Arc::new(|p| {
            eprintln!("{}", serde_json::to_string(&p).unwrap_or_default())
        }));
    let artifact = packager.pack_to(&spec, out.as_ref()).await?;
    println!(
        "{} sha256:{} size {} commit {}",
        artifact.path.display(),
        artifact.sha256,
        artifact.size,
        artifact.commit.as_deref().unwrap_or("-")
    );
    Ok(())
}
