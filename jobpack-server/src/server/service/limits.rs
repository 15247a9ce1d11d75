//! Server-wide defaults and maxima of every job limit, so that a job that asks for nothing still
//! has a timeout, a memory, pids, log, file-size and disk limit.
//!
//! Order of application (see [`ServerLimits::apply`]): a limit above the owner's quota or above
//! the server's maximum is refused (422); a limit not given gets the owner's quota cap if they
//! have one, else the server's default. Nothing is ever silently lowered.

use jobpack_core::exec::Limits;
use serde_json::{Map, Value};

/// The limits every job gets unless it asks otherwise, and the most it may ask for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerLimits {
    pub defaults: Limits,
    pub max: Limits,
    /// Most file bytes one `/tarball` download may hold.
    pub tarball_max_bytes: u64,
    /// Where the server may fetch data and git repositories for its callers.
    #[serde(skip)]
    pub destinations: std::sync::Arc<jobpack_core::egress::Destinations>,
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The names of the limits, as in a submission's `limits` object.
pub const LIMIT_NAMES: [&str; 9] = [
    "timeout",
    "memory_bytes",
    "cpu_percent",
    "pids",
    "io_bps",
    "nofile",
    "file_size_bytes",
    "log_bytes",
    "disk_bytes",
];

impl Default for ServerLimits {
    /// The documented defaults (README, "Default limits").
    fn default() -> Self {
        ServerLimits {
            defaults: Limits {
                timeout: Some(std::time::Duration::from_secs(3600)),
                memory_bytes: Some(2 * GIB),
                cpu_percent: None,
                pids: Some(512),
                io_bps: None,
                nofile: Some(4096),
                file_size_bytes: Some(4 * GIB),
                log_bytes: Some(256 * MIB),
                disk_bytes: Some(8 * GIB),
                cpu_cores: None,
            },
            max: Limits {
                timeout: Some(std::time::Duration::from_secs(7 * 86400)),
                memory_bytes: None,
                cpu_percent: None,
                pids: Some(32_768),
                io_bps: None,
                nofile: Some(65_536),
                file_size_bytes: Some(64 * GIB),
                log_bytes: Some(4 * GIB),
                disk_bytes: Some(64 * GIB),
                cpu_cores: None,
            },
            tarball_max_bytes: 8 * GIB,
            destinations: std::sync::Arc::new(jobpack_core::egress::Destinations::public_only()),
        }
    }
}

fn to_map(l: &Limits) -> Map<String, Value> {
    match serde_json::to_value(l) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Parses `NAME=VALUE` pairs (`pids=512`, `memory_bytes=2G`, `timeout=1h`, `disk_bytes=none`)
/// on top of `base`. Sizes take K, M, G, T (powers of 1024); `timeout` takes s, m, h, d.
pub fn parse_pairs(base: &Limits, pairs: &[String]) -> Result<Limits, String> {
    let mut m = to_map(base);
    for pair in pairs
        .iter()
        .flat_map(|p| p.split(','))
        .filter(|p| !p.trim().is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected NAME=VALUE"))?;
        let (k, v) = (k.trim(), v.trim());
        if !LIMIT_NAMES.contains(&k) {
            return Err(format!(
                "{k:?} is not a limit; expected one of {}",
                LIMIT_NAMES.join(", ")
            ));
        }
        if v == "none" {
            m.remove(k);
            continue;
        }
        let n = parse_number(k, v)?;
        m.insert(k.to_owned(), n);
    }
    serde_json::from_value(Value::Object(m)).map_err(|e| e.to_string())
}

fn parse_number(name: &str, v: &str) -> Result<Value, String> {
    let bad = || {
        format!(
            "{name}={v}: expected a number (sizes may end in K, M, G or T; timeout in s, m, h or d)"
        )
    };
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let x: f64 = num.parse().map_err(|_| bad())?;
    let mult = if name == "timeout" {
        match unit {
            "" | "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        }
    } else {
        match unit.to_ascii_uppercase().as_str() {
            "" => 1.0,
            "K" | "KB" | "KIB" => 1024.0,
            "M" | "MB" | "MIB" => 1024.0 * 1024.0,
            "G" | "GB" | "GIB" => GIB as f64,
            "T" | "TB" | "TIB" => GIB as f64 * 1024.0,
            _ => return Err(bad()),
        }
    };
    let x = x * mult;
    if !(x.is_finite() && x > 0.0) {
        return Err(bad());
    }
    Ok(if name == "timeout" {
        serde_json::json!(x)
    } else {
        serde_json::json!(x.round() as u64)
    })
}

impl ServerLimits {
    /// Fills and checks a job's limits: the owner's quota first (`apply_quota`), then these.
    /// `Err` is the message of a 422.
    pub fn apply(&self, limits: &mut Limits) -> Result<(), String> {
        let mut asked = to_map(limits);
        let defaults = to_map(&self.defaults);
        let max = to_map(&self.max);
        for name in LIMIT_NAMES {
            let cap = max.get(name).and_then(Value::as_f64);
            match asked.get(name).and_then(Value::as_f64) {
                Some(a) => {
                    if let Some(c) = cap
                        && a > c
                    {
                        return Err(format!(
                            "limits.{name} is {a}; this server allows at most {c}"
                        ));
                    }
                }
                None => {
                    if let Some(d) = defaults.get(name) {
                        // A default above the maximum is the maximum.
                        let d = match (d.as_f64(), cap) {
                            (Some(dv), Some(c)) if dv > c => max[name].clone(),
                            _ => d.clone(),
                        };
                        asked.insert(name.to_owned(), d);
                    }
                }
            }
        }
        *limits = serde_json::from_value(Value::Object(asked)).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_not_asked_and_maxima_refuse() {
        let s = ServerLimits::default();
        let mut l = Limits {
            pids: Some(20),
            ..Limits::default()
        };
        s.apply(&mut l).unwrap();
        assert_eq!(l.pids, Some(20));
        assert_eq!(l.memory_bytes, Some(2 * GIB));
        assert_eq!(l.disk_bytes, Some(8 * GIB));
        assert_eq!(l.timeout, Some(std::time::Duration::from_secs(3600)));
        let mut l = Limits {
            pids: Some(1_000_000),
            ..Limits::default()
        };
        let e = s.apply(&mut l).unwrap_err();
        assert!(
            e.contains("limits.pids is 1000000; this server allows at most 32768"),
            "{e}"
        );
    }

    #[test]
    fn pairs_parse_units_and_none() {
        let l = parse_pairs(
            &ServerLimits::default().defaults,
            &[
                "pids=64,memory_bytes=512M".into(),
                "timeout=2m".into(),
                "disk_bytes=none".into(),
            ],
        )
        .unwrap();
        assert_eq!(l.pids, Some(64));
        assert_eq!(l.memory_bytes, Some(512 * MIB));
        assert_eq!(l.timeout, Some(std::time::Duration::from_secs(120)));
        assert_eq!(l.disk_bytes, None);
        assert!(parse_pairs(&Limits::default(), &["cpus=2".into()]).is_err());
        assert!(parse_pairs(&Limits::default(), &["pids=lots".into()]).is_err());
    }
}
