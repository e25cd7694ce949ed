//! Structured logs. The host tags every line with tenant, function and invocation, so messages
//! need only say what happened.
//!
//! ```no_run
//! # let (rows, groups) = (0, 0);
//! sluice_sdk::info!("aggregated {rows} rows into {groups} groups");
//! ```

pub use crate::bindings::sluice::function::log::Level;

/// Writes one log line at `level`; the macros [`info!`](crate::info) and friends format and call this.
pub fn write(level: Level, message: &str) {
    crate::bindings::sluice::function::log::write(level, message);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::write($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at trace level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::__log!(Trace, $($arg)+) };
}

/// Logs a `format!`-style message at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::__log!(Debug, $($arg)+) };
}

/// Logs a `format!`-style message at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::__log!(Info, $($arg)+) };
}

/// Logs a `format!`-style message at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::__log!(Warn, $($arg)+) };
}

/// Logs a `format!`-style message at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::__log!(Error, $($arg)+) };
}
