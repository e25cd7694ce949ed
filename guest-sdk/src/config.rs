//! The `[config]` table of the function's manifest.
//!
//! ```no_run
//! use sluice_sdk::prelude::*;
//!
//! # fn run() -> Result<()> {
//! let sink = config::get_or("sink", "metrics");
//! let top: u32 = config::parse_or("top", 10)?;
//! # Ok(())
//! # }
//! ```

use std::fmt::Display;
use std::str::FromStr;

use crate::bindings::sluice::function::config as wit;
use crate::error::{Error, ErrorCode, Result};

/// The value of `key`, if the manifest sets it.
pub fn get(key: &str) -> Option<String> {
    wit::get(key)
}

/// The value of `key`, or `default` if the manifest does not set it.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}

/// The value of `key` parsed as `T`, or `default` if the manifest does not set it; a value that
/// does not parse is an `invalid-argument` error naming the key.
pub fn parse_or<T>(key: &str, default: T) -> Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    match get(key) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|error| {
            Error::new(
                ErrorCode::InvalidArgument,
                format!("config key `{key}` = {value:?}: {error}"),
            )
        }),
    }
}

/// Every key and value of the table.
pub fn entries() -> Vec<(String, String)> {
    wit::entries()
}
