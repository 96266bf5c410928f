//! Parsers for the human forms users type: sizes (`512m`), durations (`30s`, `1h30m`), CPUs (`1.5`)
//! and `K=V` pairs. Errors name the field.

use std::time::Duration;

use crate::error::{Error, Result};

/// `512m`, `1g`, `100k`, `1048576`, `2GiB`: binary units, case-insensitive.
pub fn size(field: &str, s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let digits_end = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad_size(field, s)),
    };
    let value: f64 = num.parse().map_err(|_| bad_size(field, s))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad_size(field, s));
    }
    Ok(bytes as u64)
}

fn bad_size(field: &str, s: &str) -> Error {
    Error::invalid(
        field,
        format!("{s:?} is not a size; expected a number with an optional unit k, m, g or t (e.g. 512m)"),
    )
}

/// `30s`, `500ms`, `10m`, `1h30m`, `2d`, or a bare number of seconds.
pub fn duration(field: &str, s: &str) -> Result<Duration> {
    let bad = || {
        Error::invalid(
            field,
            format!("{s:?} is not a duration; expected e.g. 500ms, 30s, 10m, 1h30m"),
        )
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(bad())
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(n_end);
        let u_end = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(u_end);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_secs = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        let secs = value * unit_secs;
        if !secs.is_finite() || secs > 1e12 {
            return Err(bad());
        }
        total += Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(total)
}

/// `1.5` CPUs → 1500 millicpus.
pub fn cpus(field: &str, s: &str) -> Result<u32> {
    let bad = || {
        Error::invalid(
            field,
            format!("{s:?} is not a CPU count; expected a positive number like 1.5"),
        )
    };
    let v: f64 = s.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 || v > 4096.0 {
        return Err(bad());
    }
    Ok(((v * 1000.0).round() as u32).max(1))
}

/// `KEY=VALUE` → (key, value). A value may contain `=`.
pub fn key_value(field: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(Error::invalid(field, format!("{s:?}: expected KEY=VALUE"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("memory", "512m").unwrap(), 512 << 20);
        assert_eq!(size("memory", "1G").unwrap(), 1 << 30);
        assert_eq!(size("memory", "2GiB").unwrap(), 2 << 30);
        assert_eq!(size("memory", "100").unwrap(), 100);
        assert_eq!(size("memory", "1.5k").unwrap(), 1536);
        let e = size("memory", "lots").unwrap_err().to_string();
        assert!(e.starts_with("invalid memory: \"lots\" is not a size"), "{e}");
        assert!(size("memory", "-1m").is_err());
        assert!(size("memory", "5x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("ttl", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("ttl", "1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("ttl", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("ttl", "2").unwrap(), Duration::from_secs(2));
        assert!(duration("timeout", "soon")
            .unwrap_err()
            .to_string()
            .starts_with("invalid timeout"));
        assert!(duration("timeout", "").is_err());
        assert!(duration("timeout", "5y").is_err());
    }

    #[test]
    fn cpu_counts() {
        assert_eq!(cpus("cpus", "1.5").unwrap(), 1500);
        assert!(cpus("cpus", "0").is_err());
        assert!(cpus("cpus", "abc").is_err());
    }

    #[test]
    fn pairs() {
        assert_eq!(key_value("env", "A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(key_value("env", "=x").is_err());
        assert!(key_value("env", "novalue").is_err());
    }
}
