//! Reading an artifact back for comparison: each entry's path with a digest of everything the
//! archive says of it (kind, mode, size, mtime, link target, content), and one entry's bytes.
//! For `jobpack verify --rebuild`, which names the first entry two artifacts differ in.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::io_error::{IoError, io_err};

/// Every entry of the `.tar.gz` at `path`, in archive order: (path, digest of its header
/// fields and content).
pub fn entry_digests(path: &Path) -> Result<Vec<(String, String)>, IoError> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = Vec::new();
    for e in ar.entries().map_err(io_err("read", path))? {
        let mut e = e.map_err(io_err("read", path))?;
        let name = e
            .path()
            .map_err(io_err("read", path))?
            .to_string_lossy()
            .into_owned();
        let h = e.header();
        let mut d = Sha256::new();
        d.update(format!(
            "{:?} {:o} {} {} {:?}\n",
            h.entry_type(),
            h.mode().unwrap_or(0),
            h.size().unwrap_or(0),
            h.mtime().unwrap_or(0),
            h.link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().into_owned()),
        ));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = e.read(&mut buf).map_err(io_err("read", path))?;
            if n == 0 {
                break;
            }
            d.update(&buf[..n]);
        }
        out.push((name, hex::encode(d.finalize())));
    }
    Ok(out)
}

/// The bytes of the entry `name` of the `.tar.gz` at `path` (at most `max` of them), if it has
/// one.
pub fn read_entry(path: &Path, name: &str, max: u64) -> Result<Option<Vec<u8>>, IoError> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for e in ar.entries().map_err(io_err("read", path))? {
        let e = e.map_err(io_err("read", path))?;
        if e.path().map_err(io_err("read", path))?.to_string_lossy() == name {
            let mut b = Vec::new();
            e.take(max)
                .read_to_end(&mut b)
                .map_err(io_err("read", path))?;
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// The first path where two entry lists differ (by content, or present in one only).
pub fn first_difference(a: &[(String, String)], b: &[(String, String)]) -> Option<String> {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return Some(if x.0 == y.0 {
                x.0.clone()
            } else {
                x.0.clone().min(y.0.clone())
            });
        }
    }
    match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Greater => Some(a[b.len()].0.clone()),
        std::cmp::Ordering::Less => Some(b[a.len()].0.clone()),
        std::cmp::Ordering::Equal => None,
    }
}
