//! A stand-in for the CoinDesk Bitcoin Price Index `currentprice.json`, which the tutorial
//! polled and which was shut down in 2025.
//!
//! Payloads have exactly the sample's shape: the same keys in the same order, compact, the same
//! field formats (`"56,189.3483"`, `"May 4, 2021 12:45:00 UTC"`, `"... at 13:45 BST"`, HTML
//! entities as symbols). The USD price follows a seeded random walk; GBP and EUR are derived
//! from it with the sample's own conversion ratios. Like the real index, most polls carry no new
//! price, and then the payload, time fields included, is byte-identical to the previous one.
//!
//! The generator is pure: given a seed and the clock readings passed in, its output is fully
//! determined, which is what the tests rely on.

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, TimeZone, Utc, Weekday};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Prices are kept in ten-thousandths of a currency unit, so every value has exactly the four
/// decimals the index printed and no float rounding creeps into the text.
pub const UNITS_PER_CURRENCY: u64 = 10_000;

/// The sample's USD price (56,189.3483), where the walk starts.
pub const SAMPLE_USD_UNITS: u64 = 561_893_483;

/// The largest relative move of one price change (±0.3%), about what the index moved per minute
/// on a lively day.
pub const MAX_STEP: f64 = 0.003;

/// The walk never goes below one dollar, so GBP/EUR never round to zero.
const MIN_USD_UNITS: u64 = UNITS_PER_CURRENCY;
/// Nor above a hundred million dollars per coin, which keeps the numbers plausible.
const MAX_USD_UNITS: u64 = 100_000_000 * UNITS_PER_CURRENCY;

/// GBP per USD as the ratio of the sample's two rates (40,530.3322 / 56,189.3483), so the
/// sample's USD price reproduces the sample's GBP price exactly (≈ 0.7213).
const GBP_PER_USD: (u128, u128) = (405_303_322, 561_893_483);
/// EUR per USD as the ratio of the sample's rates (46,746.8407 / 56,189.3483, ≈ 0.8320).
const EUR_PER_USD: (u128, u128) = (467_468_407, 561_893_483);

const DISCLAIMER: &str = "This data was produced from the CoinDesk Bitcoin Price Index (USD). \
Non-USD currency data converted using hourly conversion rate from openexchangerates.org";

/// The generator's state: the random walk, and the last payload for polls without a new price.
#[derive(Debug, Clone)]
pub struct Synthetic {
    rng: StdRng,
    usd_units: u64,
    change_probability: f64,
    last: Option<Bytes>,
}

impl Synthetic {
    /// A generator starting at the sample's price. `change_probability` (clamped to 0..=1) is
    /// the chance that a poll after the first carries a new price; the same `seed` always gives
    /// the same walk.
    pub fn new(seed: u64, change_probability: f64) -> Self {
        Self::starting_at(seed, change_probability, SAMPLE_USD_UNITS)
    }

    /// Like [`Synthetic::new`], starting from `usd_units` ten-thousandths of a dollar.
    pub fn starting_at(seed: u64, change_probability: f64, usd_units: u64) -> Self {
        let change_probability = if change_probability.is_nan() {
            0.0
        } else {
            change_probability.clamp(0.0, 1.0)
        };
        Self {
            rng: StdRng::seed_from_u64(seed),
            usd_units: usd_units.clamp(MIN_USD_UNITS, MAX_USD_UNITS),
            change_probability,
            last: None,
        }
    }

    /// The payload for a poll at `now`. The first poll always carries the starting price; later
    /// polls carry a new price with the configured probability, stamped with `now` (to the
    /// second), and otherwise return the previous payload unchanged.
    pub fn next_payload(&mut self, now: DateTime<Utc>) -> Bytes {
        if let Some(last) = &self.last {
            if !self.rng.random_bool(self.change_probability) {
                return last.clone();
            }
            self.step();
        }
        let payload = Bytes::from(render(self.usd_units, now));
        self.last = Some(payload.clone());
        payload
    }

    /// The current USD price in ten-thousandths of a dollar.
    pub fn usd_units(&self) -> u64 {
        self.usd_units
    }

    fn step(&mut self) {
        let factor = 1.0 + self.rng.random_range(-MAX_STEP..=MAX_STEP);
        let next = (self.usd_units as f64 * factor).round();
        // `as` saturates for floats; the clamp keeps the walk in its plausible band.
        self.usd_units = (next as u64).clamp(MIN_USD_UNITS, MAX_USD_UNITS);
    }
}

/// The full payload text for a USD price (in ten-thousandths) updated at `updated`.
pub fn render(usd_units: u64, updated: DateTime<Utc>) -> String {
    let updated = truncate_to_second(updated);
    format!(
        concat!(
            r#"{{"time":{{"updated":"{}","updatedISO":"{}","updateduk":"{}"}},"#,
            r#""disclaimer":"{}","chartName":"Bitcoin","bpi":{{"USD":{},"GBP":{},"EUR":{}}}}}"#
        ),
        format_updated(updated),
        format_updated_iso(updated),
        format_updated_uk(updated),
        DISCLAIMER,
        currency("USD", "&#36;", usd_units, "United States Dollar"),
        currency(
            "GBP",
            "&pound;",
            convert(usd_units, GBP_PER_USD),
            "British Pound Sterling"
        ),
        currency("EUR", "&euro;", convert(usd_units, EUR_PER_USD), "Euro"),
    )
}

fn currency(code: &str, symbol: &str, units: u64, description: &str) -> String {
    format!(
        r#"{{"code":"{code}","symbol":"{symbol}","rate":"{}","description":"{description}","rate_float":{}}}"#,
        format_rate(units),
        format_rate_float(units),
    )
}

/// `units * numerator / denominator`, rounded half up.
fn convert(units: u64, (numerator, denominator): (u128, u128)) -> u64 {
    let value = (u128::from(units) * numerator + denominator / 2) / denominator;
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// A price as the index's `rate` string: thousands separators and four decimals
/// (`12345678900` → `"1,234,567.8900"`).
pub fn format_rate(units: u64) -> String {
    let whole = (units / UNITS_PER_CURRENCY).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3 + 5);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{grouped}.{:04}", units % UNITS_PER_CURRENCY)
}

/// A price as the index's `rate_float` number: four decimals, no separators.
pub fn format_rate_float(units: u64) -> String {
    format!(
        "{}.{:04}",
        units / UNITS_PER_CURRENCY,
        units % UNITS_PER_CURRENCY
    )
}

fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// `time.updated`: `"May 4, 2021 12:45:00 UTC"`.
pub fn format_updated(t: DateTime<Utc>) -> String {
    t.format("%b %-d, %Y %H:%M:%S UTC").to_string()
}

/// `time.updatedISO`: `"2021-05-04T12:45:00+00:00"`.
pub fn format_updated_iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// `time.updateduk`: UK civil time to the minute, `"May 4, 2021 at 13:45 BST"` in summer and
/// `"... GMT"` in winter.
pub fn format_updated_uk(t: DateTime<Utc>) -> String {
    let (local, zone) = if is_british_summer_time(t) {
        (t + ChronoDuration::hours(1), "BST")
    } else {
        (t, "GMT")
    };
    format!("{} {zone}", local.format("%b %-d, %Y at %H:%M"))
}

/// True when the UK is on British Summer Time at instant `t`: from 01:00 UTC on the last
/// Sunday of March until 01:00 UTC on the last Sunday of October (the rule in force since 1996,
/// computed here without a time-zone database).
pub fn is_british_summer_time(t: DateTime<Utc>) -> bool {
    let year = t.year();
    match (bst_start(year), bst_end(year)) {
        (Some(start), Some(end)) => start <= t && t < end,
        _ => false,
    }
}

/// The instant BST begins in `year`: 01:00 UTC on the last Sunday of March.
pub fn bst_start(year: i32) -> Option<DateTime<Utc>> {
    last_sunday_at_one_utc(year, 3)
}

/// The instant BST ends in `year`: 01:00 UTC on the last Sunday of October.
pub fn bst_end(year: i32) -> Option<DateTime<Utc>> {
    last_sunday_at_one_utc(year, 10)
}

/// 01:00 UTC on the last Sunday of a 31-day `month`.
fn last_sunday_at_one_utc(year: i32, month: u32) -> Option<DateTime<Utc>> {
    let last_day = NaiveDate::from_ymd_opt(year, month, 31)?;
    let back = last_day.weekday().num_days_from_sunday();
    let sunday = last_day - ChronoDuration::days(i64::from(back));
    debug_assert_eq!(sunday.weekday(), Weekday::Sun);
    let at_one = sunday.and_hms_opt(1, 0, 0)?;
    Some(Utc.from_utc_datetime(&at_one))
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    const SAMPLE: &str = include_str!("../testdata/coindesk-bpi-sample.json");

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The whole payload as one anchored pattern: key order, compactness and every field format.
    fn payload_pattern() -> Regex {
        let month = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
        let rate = r"(\d{1,3}(?:,\d{3})*\.\d{4})";
        let float = r"(\d+\.\d{4})";
        let cur = |code: &str, symbol: &str, description: &str| {
            format!(
                r#"\{{"code":"{code}","symbol":"{}","rate":"{rate}","description":"{description}","rate_float":{float}\}}"#,
                regex::escape(symbol)
            )
        };
        let pattern = format!(
            r#"^\{{"time":\{{"updated":"({month} [1-9]\d?, \d{{4}} \d{{2}}:\d{{2}}:\d{{2}}) UTC","updatedISO":"(\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}:\d{{2}}:\d{{2}})\+00:00","updateduk":"{month} [1-9]\d?, \d{{4}} at \d{{2}}:\d{{2}} (?:BST|GMT)"\}},"disclaimer":"{}","chartName":"Bitcoin","bpi":\{{"USD":{},"GBP":{},"EUR":{}\}}\}}$"#,
            regex::escape(DISCLAIMER),
            cur("USD", "&#36;", "United States Dollar"),
            cur("GBP", "&pound;", "British Pound Sterling"),
            cur("EUR", "&euro;", "Euro"),
        );
        Regex::new(&pattern).unwrap()
    }

    #[test]
    fn reproduces_the_sample_byte_for_byte() {
        let mut generator = Synthetic::new(1, 0.5);
        let payload = generator.next_payload(at("2021-05-04T12:45:00.731Z"));
        assert_eq!(std::str::from_utf8(&payload).unwrap(), SAMPLE);
        assert_eq!(payload.len(), 677);
    }

    #[test]
    fn the_sample_matches_the_format_pattern() {
        assert!(payload_pattern().is_match(SAMPLE));
    }

    #[test]
    fn every_payload_has_the_sample_format() {
        let pattern = payload_pattern();
        let mut generator = Synthetic::new(42, 1.0);
        let mut t = at("2021-01-01T00:00:00Z");
        for _ in 0..2000 {
            t += ChronoDuration::minutes(397);
            let payload = generator.next_payload(t);
            let text = std::str::from_utf8(&payload).unwrap();
            let caps = pattern.captures(text).unwrap_or_else(|| panic!("{text}"));
            // updated and updatedISO name the same instant: the poll time, to the second.
            let iso = format!("{}+00:00", &caps[2]);
            assert_eq!(at(&iso), truncate_to_second(t));
            assert_eq!(format_updated(t), format!("{} UTC", &caps[1]));
            // Each rate string is its rate_float with separators.
            for (rate, float) in [(3, 4), (5, 6), (7, 8)] {
                assert_eq!(caps[rate].replace(',', ""), caps[float]);
            }
            // Valid JSON whose numbers equal the strings.
            let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let usd = value["bpi"]["USD"]["rate_float"].as_f64().unwrap();
            assert!((usd - caps[4].parse::<f64>().unwrap()).abs() < 1e-9);
            // GBP and EUR follow USD at fixed ratios near the sample's.
            let gbp = value["bpi"]["GBP"]["rate_float"].as_f64().unwrap();
            let eur = value["bpi"]["EUR"]["rate_float"].as_f64().unwrap();
            assert!((gbp / usd - 0.72131).abs() < 1e-3, "{gbp} / {usd}");
            assert!((eur / usd - 0.83195).abs() < 1e-3, "{eur} / {usd}");
        }
    }

    #[test]
    fn thousands_separators_and_four_decimals() {
        assert_eq!(format_rate(0), "0.0000");
        assert_eq!(format_rate(5), "0.0005");
        assert_eq!(format_rate(9_999_999), "999.9999");
        assert_eq!(format_rate(10_000_000), "1,000.0000");
        assert_eq!(format_rate(561_893_483), "56,189.3483");
        assert_eq!(format_rate(12_345_678_900), "1,234,567.8900");
        assert_eq!(format_rate(1_000_000_000_000), "100,000,000.0000");
        assert_eq!(format_rate_float(12_345_678_900), "1234567.8900");
        assert_eq!(format_rate_float(561_893_483), "56189.3483");
        let big = render(12_345_678_900, at("2021-05-04T12:45:00Z"));
        assert!(big.contains(r#""rate":"1,234,567.8900""#), "{big}");
        assert!(big.contains(r#""rate_float":1234567.8900}"#), "{big}");
    }

    #[test]
    fn without_a_new_price_the_payload_is_byte_identical() {
        let mut generator = Synthetic::new(7, 0.0);
        let first = generator.next_payload(at("2021-05-04T12:45:00Z"));
        for minutes in 1..50 {
            let later = at("2021-05-04T12:45:00Z") + ChronoDuration::minutes(minutes);
            assert_eq!(generator.next_payload(later), first);
        }
    }

    #[test]
    fn with_a_new_price_the_time_fields_move() {
        let mut generator = Synthetic::new(7, 1.0);
        let first = generator.next_payload(at("2021-05-04T12:45:00Z"));
        let second = generator.next_payload(at("2021-05-04T12:46:05Z"));
        assert_ne!(first, second);
        let text = std::str::from_utf8(&second).unwrap();
        assert!(
            text.contains(r#""updated":"May 4, 2021 12:46:05 UTC""#),
            "{text}"
        );
        assert!(text.contains(r#""updatedISO":"2021-05-04T12:46:05+00:00""#));
        assert!(text.contains(r#""updateduk":"May 4, 2021 at 13:46 BST""#));
    }

    #[test]
    fn change_probability_sets_the_share_of_new_prices() {
        let mut generator = Synthetic::new(3, 0.2);
        let mut t = at("2021-05-04T12:45:00Z");
        let mut previous = generator.next_payload(t);
        let mut changes = 0;
        for _ in 0..5000 {
            t += ChronoDuration::seconds(5);
            let payload = generator.next_payload(t);
            if payload != previous {
                changes += 1;
            }
            previous = payload;
        }
        assert!((800..1200).contains(&changes), "{changes}");
    }

    #[test]
    fn the_walk_is_reproducible_from_its_seed() {
        let run = |seed| {
            let mut generator = Synthetic::new(seed, 0.5);
            let mut t = at("2021-05-04T12:45:00Z");
            (0..100)
                .map(|_| {
                    t += ChronoDuration::seconds(5);
                    generator.next_payload(t)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn the_walk_moves_in_small_steps_and_stays_in_band() {
        let mut generator = Synthetic::starting_at(5, 1.0, MIN_USD_UNITS);
        let mut t = at("2021-05-04T12:45:00Z");
        let mut previous = generator.usd_units();
        for _ in 0..10_000 {
            t += ChronoDuration::seconds(5);
            generator.next_payload(t);
            let now = generator.usd_units();
            assert!((MIN_USD_UNITS..=MAX_USD_UNITS).contains(&now));
            let ratio = now as f64 / previous as f64;
            assert!(
                (ratio - 1.0).abs() <= MAX_STEP + 1e-3,
                "{previous} -> {now}"
            );
            previous = now;
        }
    }

    #[test]
    fn uk_summer_time_switch_dates() {
        // (year, last Sunday of March, last Sunday of October)
        for (year, march, october) in [
            (2021, 28, 31),
            (2022, 27, 30),
            (2023, 26, 29),
            (2024, 31, 27),
            (2025, 30, 26),
            (2026, 29, 25),
        ] {
            let start = bst_start(year).unwrap();
            let end = bst_end(year).unwrap();
            assert_eq!(
                start.to_rfc3339(),
                format!("{year}-03-{march}T01:00:00+00:00")
            );
            assert_eq!(
                end.to_rfc3339(),
                format!("{year}-10-{october}T01:00:00+00:00")
            );
            let second = ChronoDuration::seconds(1);
            assert!(!is_british_summer_time(start - second));
            assert!(is_british_summer_time(start));
            assert!(is_british_summer_time(end - second));
            assert!(!is_british_summer_time(end));
        }
    }

    #[test]
    fn updateduk_across_the_switches() {
        let cases = [
            ("2021-03-28T00:59:59Z", "Mar 28, 2021 at 00:59 GMT"),
            ("2021-03-28T01:00:00Z", "Mar 28, 2021 at 02:00 BST"),
            ("2021-10-31T00:59:59Z", "Oct 31, 2021 at 01:59 BST"),
            ("2021-10-31T01:00:00Z", "Oct 31, 2021 at 01:00 GMT"),
            ("2021-01-15T09:05:00Z", "Jan 15, 2021 at 09:05 GMT"),
            ("2021-12-31T23:59:59Z", "Dec 31, 2021 at 23:59 GMT"),
            ("2021-05-04T12:45:00Z", "May 4, 2021 at 13:45 BST"),
            // Summer evening in UTC is already the next day in London.
            ("2021-06-30T23:30:00Z", "Jul 1, 2021 at 00:30 BST"),
        ];
        for (instant, expected) in cases {
            assert_eq!(format_updated_uk(at(instant)), expected, "{instant}");
        }
    }

    #[test]
    fn utc_fields_have_unpadded_days_and_padded_times() {
        let t = at("2024-02-09T03:04:05.999Z");
        assert_eq!(format_updated(t), "Feb 9, 2024 03:04:05 UTC");
        assert_eq!(format_updated_iso(t), "2024-02-09T03:04:05+00:00");
        assert_eq!(
            format_updated(at("2024-11-30T23:00:00Z")),
            "Nov 30, 2024 23:00:00 UTC"
        );
    }
}
