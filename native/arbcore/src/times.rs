//! `schemas/times.py`'s `iso_ms`: UTC epoch milliseconds as ISO 8601 with a `Z`.

use crate::error::{Raised, Res};

/// 9999-12-31T23:59:59.999Z, `schemas.times.MAX_EPOCH_MS`.
pub const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

/// `iso_ms(epoch_ms)`: `2026-12-04T03:09:22.700Z`; the same ValueError outside 0..MAX.
pub fn iso_ms(epoch_ms: i64) -> Res<String> {
    if !(0..=MAX_EPOCH_MS).contains(&epoch_ms) {
        return Err(Raised::new(
            "ValueError",
            format!("{epoch_ms} is outside 0..{MAX_EPOCH_MS} (1970 to 9999, UTC ms)"),
        ));
    }
    let mut out = String::with_capacity(24);
    push_iso_ms(&mut out, epoch_ms);
    Ok(out)
}

/// Appends the ISO form of an `epoch_ms` already known to be in 0..=MAX_EPOCH_MS. Digits by
/// hand: this runs for every output record, and `write!` costs more than the rest of it.
pub fn push_iso_ms(out: &mut String, epoch_ms: i64) {
    let (second, milli) = (epoch_ms / 1000, epoch_ms % 1000);
    let (days, rem) = (second / 86_400, second % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for k in (at..at + width).rev() {
            buf[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, milli);
    out.push_str(std::str::from_utf8(&buf).expect("ASCII digits"));
}

/// Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day since 1970-01-01,
/// what `time.gmtime` gives for the years 1970 to 9999.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_python() {
        assert_eq!(iso_ms(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso_ms(1_764_892_800_005).unwrap(),
            "2025-12-05T00:00:00.005Z"
        );
        assert_eq!(iso_ms(951_782_400_000).unwrap(), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_ms(MAX_EPOCH_MS).unwrap(), "9999-12-31T23:59:59.999Z");
        assert!(iso_ms(-1).is_err() && iso_ms(MAX_EPOCH_MS + 1).is_err());
    }
}
