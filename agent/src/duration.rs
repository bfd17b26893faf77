//! Durations on the command line and in config files: `90d`, `1y`, `12h`, `30m`, `45s`.

use std::time::Duration;

use keyward_core::Error;

/// Parses `N` followed by one unit of `s`, `m`, `h`, `d`, `w` or `y` (365 days).
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let bad = |why: &str| {
        Error::InvalidInput(format!(
            "invalid duration '{s}': {why} (examples: 90d, 1y, 12h, 30m)"
        ))
    };
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("missing unit"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        // All digits yet no u64: the number is too large, not missing.
        bad(if num.is_empty() {
            "missing number"
        } else {
            "longer than 100 years"
        })
    })?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad("unknown unit")),
    };
    if n == 0 {
        return Err(bad("must be greater than zero"));
    }
    let total = n
        .checked_mul(secs)
        .filter(|t| *t <= 100 * 365 * 86_400)
        .ok_or_else(|| bad("longer than 100 years"))?;
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(
            parse_duration("1y").unwrap(),
            Duration::from_secs(365 * 86_400)
        );
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
    }

    #[test]
    fn a_number_too_large_for_u64_is_too_long_not_missing() {
        let e = parse_duration("99999999999999999999d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 100 years"), "{e}");
    }

    #[test]
    fn errors_name_the_value() {
        for bad in ["", "d", "10", "10x", "0d", "-1d", "1000y", "1.5d"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }
}
