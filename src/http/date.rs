//! The `Date` header value (RFC 9110 §5.6.7, IMF-fixdate), formatted by hand from the
//! system clock: a worker refreshes its copy once a second from its tick, so a response
//! costs a 29-byte copy, as nginx's cached time does.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

/// An IMF-fixdate as bytes.
pub type HttpDate = [u8; DATE_LEN];

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Formats `secs` since the Unix epoch as an IMF-fixdate.
pub fn format(secs: u64) -> HttpDate {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[month as usize - 1]);
    let y = year.clamp(0, 9999) as u32;
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    two(&mut out[17..19], (rem / 3600) as u32);
    two(&mut out[20..22], (rem % 3600 / 60) as u32);
    two(&mut out[23..25], (rem % 60) as u32);
    out
}

/// Length of a Common Log Format time: `02/Dec/2026:09:10:11 +0000`.
pub const CLF_LEN: usize = 26;

/// Formats `secs` since the Unix epoch as a Common Log Format time (UTC).
pub fn clf(secs: u64) -> [u8; CLF_LEN] {
    let d = format(secs);
    // From `Sun, 06 Nov 1994 08:49:37 GMT`: day, month, year and time are there.
    let mut out = *b"06/Nov/1994:08:49:37 +0000";
    out[0..2].copy_from_slice(&d[5..7]);
    out[3..6].copy_from_slice(&d[8..11]);
    out[7..11].copy_from_slice(&d[12..16]);
    out[12..20].copy_from_slice(&d[17..25]);
    out
}

/// Length of an ISO 8601 UTC time: `2026-12-02T09:10:11Z`.
pub const ISO_LEN: usize = 20;

/// Formats `secs` since the Unix epoch as ISO 8601 in UTC.
pub fn iso(secs: u64) -> [u8; ISO_LEN] {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut out = *b"1970-01-01T00:00:00Z";
    let y = year.clamp(0, 9999) as u32;
    two(&mut out[0..2], y / 100);
    two(&mut out[2..4], y % 100);
    two(&mut out[5..7], month);
    two(&mut out[8..10], day);
    two(&mut out[11..13], (rem / 3600) as u32);
    two(&mut out[14..16], (rem % 3600 / 60) as u32);
    two(&mut out[17..19], (rem % 60) as u32);
    out
}

fn two(out: &mut [u8], v: u32) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's
/// civil-from-days, valid for the proleptic Gregorian calendar).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_imf_fixdate() {
        assert_eq!(&format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 9110's example.
        assert_eq!(&format(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format(1_798_761_599), b"Thu, 31 Dec 2026 23:59:59 GMT");
        assert_eq!(&clf(784_111_777), b"06/Nov/1994:08:49:37 +0000");
        assert_eq!(&iso(784_111_777), b"1994-11-06T08:49:37Z");
    }
}
