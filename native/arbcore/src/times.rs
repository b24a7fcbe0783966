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

/// Appends the ISO form of an `epoch_ms` already known to be in 0..=MAX_EPOCH_MS.
pub fn push_iso_ms(out: &mut String, epoch_ms: i64) {
    let (second, milli) = (epoch_ms / 1000, epoch_ms % 1000);
    let (days, rem) = (second / 86_400, second % 86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    use std::fmt::Write;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z"
    );
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
