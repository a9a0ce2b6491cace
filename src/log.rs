//! The event log: leveled lines on stderr, one per event, with a UTC timestamp and the
//! thread's name. `[log] level` sets the least severe level written.
//!
//! The hot path does not log per request (that is the access log's job, `access`);
//! these are for lifecycle events and faults.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity of a log line, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Normal lifecycle events.
    Info,
    /// Something degraded but handled.
    Warn,
    /// Something failed.
    Error,
}

/// The least severe level written (a `Level` as `u8`); set from the config.
static MIN_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Writes lines of `level` and more severe ones only.
pub fn set_level(level: Level) {
    MIN_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Writes one log line; use the `info!`/`warn!`/`error!` macros instead.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    if (level as u8) < MIN_LEVEL.load(Ordering::Relaxed) {
        return;
    }
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
