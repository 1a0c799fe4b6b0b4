//! Go `time.ParseDuration` syntax (`768h`, `1500ms`, `1h30m`, `2.5s`), which vault-db-injector's
//! configuration uses for `tokenTTL` and `nri.fetchTimeout`.

use std::time::Duration;

/// Why a string is not a Go duration vdbi accepts (the input is quoted: configuration values,
/// never secrets).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("invalid number in duration {0:?}")]
    InvalidNumber(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("duration {0:?} is out of range")]
    OutOfRange(String),
}

/// Parses a Go duration string. Negative durations are refused (none of vdbi's settings allows one).
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(DurationError::Negative(input.to_string()));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| DurationError::MissingUnit(input.to_string()))?;
        if num_len == 0 {
            return Err(DurationError::Invalid(input.to_string()));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| DurationError::InvalidNumber(input.to_string()))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_string(),
                    input: input.to_string(),
                })
            }
        };
        total += value * nanos_per_unit;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(DurationError::OutOfRange(input.to_string()));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Formats a duration the way Go prints it (`768h0m0s`, `1.5s`), for `check-config` output.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let total_ms = d.as_millis();
    if d < Duration::from_secs(1) {
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            return format!("{total_ms}ms");
        }
        return format!("{}ns", d.as_nanos());
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let frac = d.subsec_millis();
    let sec_str = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{sec_str}")
    } else if m > 0 {
        format!("{m}m{sec_str}")
    } else {
        sec_str
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        assert_eq!(
            parse_go_duration("768h").unwrap(),
            Duration::from_secs(768 * 3600)
        );
        assert_eq!(
            parse_go_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("2.5s").unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_go_duration("10us").unwrap(),
            Duration::from_micros(10)
        );
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in ["", "10", "h", "5x", "-1s", "1.2.3s", "s5"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(
            format_go_duration(Duration::from_secs(768 * 3600)),
            "768h0m0s"
        );
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_go_duration(Duration::from_secs(300)), "5m0s");
    }
}
