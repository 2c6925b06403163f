//! Go-style duration strings (`30s`, `1h30m`, `500ms`, `0`), as the reference accepts them.

use crate::error::{Error, Result};
use std::time::Duration;

/// Parses a Go duration string (`time.ParseDuration` syntax: an optional sign, then one or more
/// decimal numbers with a unit among `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; bare `0` is allowed).
/// Negative durations are rejected: no field of the resource model takes one.
pub fn parse_duration(input: &str) -> Result<Duration> {
    let s = input.trim();
    let bad = || Error::invalid(format!("invalid duration {input:?}"));
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..num_len];
        rest = &rest[num_len..];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad());
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(Error::invalid(format!(
                    "invalid duration {input:?}: missing unit"
                )));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "invalid duration {input:?}: unknown unit {unit:?}"
                )));
            }
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(bad)?;
        // Fractions: scale digit by digit so `1.5h` is exact.
        let mut scale = unit_nanos;
        for d in frac_part.chars() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(d.to_digit(10).ok_or_else(bad)?) * scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(bad)?;
    }
    // Go caps durations at ~292 years (i64 nanoseconds).
    if total_nanos > i64::MAX as u128 {
        return Err(Error::invalid(format!(
            "invalid duration {input:?}: out of range"
        )));
    }
    if negative && total_nanos != 0 {
        return Err(Error::invalid(format!(
            "invalid duration {input:?}: must not be negative"
        )));
    }
    let secs = (total_nanos / 1_000_000_000) as u64;
    let sub = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// Validates an optional duration field; empty means unset. The error names the field.
pub(crate) fn check_duration(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Ok(());
    }
    parse_duration(value).map(|_| ()).map_err(|e| {
        Error::invalid(format!(
            "{field}: {} (expected a duration such as 30s, 10m, 1h30m)",
            e.message()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        let cases = [
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("24h", Duration::from_secs(86_400)),
            ("1h30m", Duration::from_secs(5_400)),
            ("500ms", Duration::from_millis(500)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("1.5h", Duration::from_secs(5_400)),
            ("2us", Duration::from_micros(2)),
            ("3µs", Duration::from_micros(3)),
            ("7ns", Duration::from_nanos(7)),
            ("1m0.5s", Duration::from_millis(60_500)),
            (" 2s ", Duration::from_secs(2)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s).expect(s), want, "{s}");
        }
    }

    #[test]
    fn rejects_bad_forms() {
        for s in [
            "",
            "10",
            "abc",
            "1x",
            "s",
            "1.2.3s",
            "-1s",
            "1h-2m",
            "99999999999h",
        ] {
            assert!(parse_duration(s).is_err(), "{s} should be rejected");
        }
        let e = check_duration("spec.runtime.timeout", "soon").expect_err("bad duration");
        assert!(
            e.message()
                .starts_with("spec.runtime.timeout: invalid duration \"soon\"")
        );
        assert!(check_duration("x", "").is_ok());
    }
}
