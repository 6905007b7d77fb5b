//! Value parsers for command-line flags that every binary shares, so a size or a duration
//! means the same thing (and is range-checked the same way) on every tier.

use std::time::Duration;

/// A count or size that must be at least 1 (a zero-length queue or limit could never work).
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(error) => Err(format!("not a whole number: {error}")),
    }
}

/// A duration such as `10s`, `500ms` or `2m`, between 1 ms and 60 minutes.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{text}' has no unit: write 10s, 500ms or 2m"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' does not start with a whole number"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("'{unit}' is not a unit: use ms, s or m")),
    };
    if duration < Duration::from_millis(1) || duration > Duration::from_secs(3600) {
        return Err(format!("'{text}' is out of range: 1ms to 60m"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_range_checked() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        for bad in [
            "",
            "10",
            "s",
            "0s",
            "61m",
            "99999999999999999999s",
            "5h",
            "-1s",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_must_be_positive() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("x").is_err());
    }
}
