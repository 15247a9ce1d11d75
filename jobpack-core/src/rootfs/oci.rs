//! The OCI side of a runtime: its image (one uncompressed layer, the canonical tar, under a fixed
//! config) so that its digest is a function of the layer alone, and reading an image layout to
//! import one.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::RootfsError;
use crate::io_error::io_err;

pub(crate) const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The annotation naming an image in a layout's index.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// This machine's architecture in OCI's words.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Canonical JSON bytes (sorted keys, no spaces) and their `sha256:` digest.
pub(crate) fn blob(v: &Value) -> (Vec<u8>, String) {
    // serde_json's map is a BTreeMap here (no preserve_order feature): keys come out sorted.
    let bytes = serde_json::to_vec(v).expect("JSON values serialise");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    (bytes, digest)
}

/// The image config and manifest of a runtime whose layer has `layer_digest` and `layer_size`.
/// Nothing in them depends on the time or the machine but the architecture.
pub(crate) fn image(layer_digest: &str, layer_size: u64) -> ((Vec<u8>, String), (Vec<u8>, String)) {
    let epoch = "1970-01-01T00:00:00Z";
    let config = blob(&json!({
        "architecture": architecture(),
        "os": "linux",
        "created": epoch,
        "config": {
            "Env": [format!("PATH={}", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": epoch, "created_by": "jobpack runtime"}],
    }));
    let manifest = blob(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config.1, "size": config.0.len()},
        "layers": [{"mediaType": LAYER_TAR, "digest": layer_digest, "size": layer_size}],
    }));
    (config, manifest)
}

/// The index of a layout holding `images` (name, manifest digest, manifest size), sorted.
pub(crate) fn index(images: &[(String, String, u64)]) -> Vec<u8> {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(name, digest, size)| {
            json!({
                "mediaType": MANIFEST_TYPE,
                "digest": digest,
                "size": size,
                "annotations": {REF_NAME: name},
            })
        })
        .collect();
    let mut v = serde_json::to_vec_pretty(
        &json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}),
    )
    .expect("JSON values serialise");
    v.push(b'\n');
    v
}

/// A layer of an image to import: its blob and the digest the manifest gives it (checked).
pub(crate) struct LayerRef {
    pub path: std::path::PathBuf,
    pub digest: String,
}

fn read_json(path: &Path, max: u64) -> Result<Value, RootfsError> {
    let meta = fs::metadata(path).map_err(io_err("read", path))?;
    if meta.len() > max {
        return Err(RootfsError::BadArchive(format!(
            "{} is larger than {max} bytes",
            path.display()
        )));
    }
    let text = fs::read(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&text)
        .map_err(|e| RootfsError::BadArchive(format!("{} is not JSON: {e}", path.display())))
}

/// A blob of the layout by digest (`sha256:<64 hex>` only: nothing else names a file).
fn blob_path(layout: &Path, digest: &str) -> Result<std::path::PathBuf, RootfsError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| RootfsError::BadArchive(format!("unsupported digest {digest:?}")))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

/// The layers, lowest first, of the image `reference` (its `ref.name`; `None`: the only one) in
/// the OCI image layout at `layout`.
pub(crate) fn layers(layout: &Path, reference: Option<&str>) -> Result<Vec<LayerRef>, RootfsError> {
    let bad = |s: String| RootfsError::BadArchive(s);
    let index = read_json(&layout.join("index.json"), 1 << 20)?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| bad("index.json has no manifests".into()))?;
    let chosen: Vec<&Value> = manifests
        .iter()
        .filter(|m| match reference {
            Some(r) => m["annotations"][REF_NAME].as_str() == Some(r),
            None => true,
        })
        .collect();
    let m = match chosen.as_slice() {
        [one] => *one,
        [] => {
            return Err(bad(format!(
                "the layout has no image {}",
                reference.unwrap_or("at all")
            )));
        }
        _ => {
            return Err(bad(
                "the layout holds several images: name one (LAYOUT:NAME)".into(),
            ));
        }
    };
    let media = m["mediaType"].as_str().unwrap_or(MANIFEST_TYPE);
    if media != MANIFEST_TYPE && media != DOCKER_MANIFEST {
        return Err(bad(format!(
            "{media} is not an image manifest (an index of platforms is not supported: \
             export one platform's image)"
        )));
    }
    let digest = m["digest"].as_str().unwrap_or_default();
    let manifest = read_json(&blob_path(layout, digest)?, 4 << 20)?;
    let mut out = Vec::new();
    for l in manifest["layers"].as_array().into_iter().flatten() {
        let media = l["mediaType"].as_str().unwrap_or_default();
        if ![LAYER_TAR, LAYER_GZIP, DOCKER_LAYER_GZIP].contains(&media) {
            return Err(bad(format!("layers of type {media} are not supported")));
        }
        let digest = l["digest"].as_str().unwrap_or_default().to_owned();
        let path = blob_path(layout, &digest)?;
        out.push(LayerRef { path, digest });
    }
    if out.is_empty() {
        return Err(bad("the image has no layers".into()));
    }
    Ok(out)
}
