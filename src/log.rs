//! Minimal leveled logging to stderr, one line per event with a UTC timestamp.
//!
//! The hot path does not log per request; these are for lifecycle events and faults.

use std::time::{SystemTime, UNIX_EPOCH};

/// Severity of a log line.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// Normal lifecycle events.
    Info,
    /// Something degraded but handled.
    Warn,
    /// Something failed.
    Error,
}

/// Writes one log line; use the `info!`/`warn!`/`error!` macros instead.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    let label = match level {
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("main");
    eprintln!("{} ringway[{name}] {label}: {args}", timestamp());
}

/// `YYYY-MM-DDTHH:MM:SSZ` for the current time.
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::http::date::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Logs at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}

/// Logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*)) };
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_iso_8601() {
        let t = super::timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
}
