//! Durations as kgateway's CRDs write them (`30s`, `1m30s`, `500ms`).
//!
//! Two different grammars meet here, exactly as on the API server:
//! - the CRD's pattern `^([0-9]{1,5}(h|m|s|ms)){1,4}$`, checked by a CEL `matches()` rule;
//! - CEL's `duration()` conversion, which is Go's `time.ParseDuration` (signs, fractions,
//!   `ns`/`us`/`µs`, a bare `0`), used by the "at least 1 second" style rules.
//!
//! A value can fail the first and still convert with the second (`"0"`, `"-1s"`), and the API
//! server then reports both rules, so both are kept apart here.

use std::sync::LazyLock;

use regex::Regex;

/// The pattern every duration field of the CRD carries.
pub const KUBE_DURATION_PATTERN: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";

static KUBE_DURATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(KUBE_DURATION_PATTERN).expect("the duration pattern compiles"));

pub const NANOS_PER_MILLI: i128 = 1_000_000;
pub const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// Whether `s` matches the CRD's duration pattern `^([0-9]{1,5}(h|m|s|ms)){1,4}$`.
pub fn matches_kube_duration_pattern(s: &str) -> bool {
    KUBE_DURATION.is_match(s)
}

/// CEL's `duration(string)`: Go's `time.ParseDuration`, returning signed nanoseconds, or
/// `None` where Go returns an error (CEL then reports a type conversion error).
///
/// The grammar is `[-+]?([0-9]*(\.[0-9]*)?[unit])+` or a lone `0` (with an optional sign),
/// units `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ms`, `s`, `m`, `h`. Like Go, the result
/// must fit an `int64` of nanoseconds, and fractions are converted through a float64, which
/// is exact to the nanosecond for every value that fits.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    const LIMIT: u64 = 1 << 63;
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let first = rest.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return None;
        }
        // Integer part: an overflow is an error.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut whole: u64 = 0;
        for b in rest[..int_len].bytes() {
            if whole > LIMIT / 10 {
                return None;
            }
            whole = whole * 10 + u64::from(b - b'0');
            if whole > LIMIT {
                return None;
            }
        }
        rest = &rest[int_len..];
        // Fraction: digits past what fits are ignored, as Go does.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_len = 0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for b in after_dot[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                if frac > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = frac * 10 + u64::from(b - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                frac = next;
                scale *= 10.0;
            }
            rest = &after_dot[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return None; // ".s", "-.s"
        }
        // Unit: everything up to the next digit or dot.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return None; // missing unit
        }
        let unit: u64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        if whole > LIMIT / unit {
            return None;
        }
        let mut value = whole * unit;
        if frac > 0 {
            // Go: v += uint64(float64(f) * (float64(unit) / scale))
            value += (frac as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return None;
            }
        }
        total += value;
        if total > LIMIT {
            return None;
        }
    }
    if neg {
        return Some(-i128::from(total));
    }
    if total > LIMIT - 1 {
        return None;
    }
    Some(i128::from(total))
}

/// Whole seconds of a duration given in nanoseconds, the fraction dropped (toward zero).
pub fn nanos_to_whole_seconds(nanos: i128) -> i128 {
    nanos / NANOS_PER_SECOND
}

/// Whole seconds of a duration string, the fraction dropped: `30s` -> 30, `1m30s` -> 90,
/// `1500ms` -> 1. `None` when CEL's `duration()` would not accept the string.
pub fn to_whole_seconds(s: &str) -> Option<i64> {
    parse_go_duration(s)
        .map(nanos_to_whole_seconds)
        .and_then(|secs| i64::try_from(secs).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = NANOS_PER_SECOND;
    const MS: i128 = NANOS_PER_MILLI;

    #[test]
    fn pattern_accepts_the_crd_shapes() {
        for ok in [
            "1s",
            "30s",
            "500ms",
            "1m30s",
            "1h",
            "99999h",
            "1h2m3s4ms",
            "0s",
            "00001s",
        ] {
            assert!(matches_kube_duration_pattern(ok), "{ok}");
        }
    }

    #[test]
    fn pattern_refuses_everything_else() {
        for bad in [
            "",
            "0",
            "1",
            "-1s",
            "+1s",
            "1.5s",
            "1x",
            "abc",
            "1S",
            "100000s",
            "1us",
            "1ns",
            "1h2m3s4ms5s",
            " 1s",
            "1s ",
            "1d",
        ] {
            assert!(!matches_kube_duration_pattern(bad), "{bad:?}");
        }
    }

    #[test]
    fn go_durations_parse_like_time_parse_duration() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("0s", 0),
            ("1s", S),
            ("-1s", -S),
            ("+5s", 5 * S),
            ("1.5s", 1500 * MS),
            (".5s", 500 * MS),
            ("1.s", S),
            ("500ms", 500 * MS),
            ("1m30s", 90 * S),
            ("2h45m", (2 * 3600 + 45 * 60) * S),
            ("1h1h", 2 * 3600 * S),
            ("10ns", 10),
            ("10us", 10_000),
            ("10\u{b5}s", 10_000),
            ("10\u{3bc}s", 10_000),
            ("1.000000001s", S + 1),
            ("0.3333333333333h", 1_199_999_999_999),
            ("9223372036854775807ns", i64::MAX as i128),
            ("-9223372036854775808ns", i64::MIN as i128),
            ("2562047h47m16.854775807s", i64::MAX as i128),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_go_duration(input), Some(want), "{input}");
        }
    }

    #[test]
    fn go_duration_errors() {
        for bad in [
            "",
            "-",
            "+",
            "1",
            "00",
            "1x",
            "abc",
            "a",
            ".s",
            "-.s",
            "s",
            "1s2",
            "1 s",
            "1d",
            "1S",
            "9223372036854775808ns",
            "2562048h",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn whole_seconds_drop_the_fraction() {
        assert_eq!(to_whole_seconds("30s"), Some(30));
        assert_eq!(to_whole_seconds("1m30s"), Some(90));
        assert_eq!(to_whole_seconds("1500ms"), Some(1));
        assert_eq!(to_whole_seconds("999ms"), Some(0));
        assert_eq!(to_whole_seconds("4h"), Some(14400));
        assert_eq!(to_whole_seconds("-1500ms"), Some(-1));
        assert_eq!(to_whole_seconds("1x"), None);
        assert_eq!(nanos_to_whole_seconds(2 * S - 1), 1);
    }
}
