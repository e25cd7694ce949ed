use std::fmt;

use crate::bindings::sluice::function::types;

pub use types::ErrorCode;

/// The result of every fallible SDK call and of a handler; the error type defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed host call or a handler's own failure.
///
/// Host errors keep the host's [`ErrorCode`] and its message, which names the bad input (column,
/// sink, file and line). A handler that returns an `Error` fails its batch; the host logs both
/// parts and retries or dead-letters the batch.
///
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn check(frame: &Frame) -> Result<()> {
///     if frame.num_rows() == 0 {
///         return Err(Error::msg("the batch had no rows"));
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    code: ErrorCode,
    message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    /// A handler's own failure, reported with code `internal`.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::new(ErrorCode::Internal, message.to_string())
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<types::Error> for Error {
    fn from(error: types::Error) -> Self {
        Error::new(error.code, error.message)
    }
}

impl From<Error> for types::Error {
    fn from(error: Error) -> Self {
        types::Error {
            code: error.code,
            message: error.message,
        }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::msg(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::msg(message)
    }
}

impl ErrorCode {
    /// The code's name in the WIT contract, e.g. `column-not-found`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::ColumnNotFound => "column-not-found",
            ErrorCode::TypeMismatch => "type-mismatch",
            ErrorCode::Parse => "parse",
            ErrorCode::Limit => "limit",
            ErrorCode::Io => "io",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_code_and_message() {
        let error = Error::new(ErrorCode::ColumnNotFound, "no column `cpu`");
        assert_eq!(error.to_string(), "column-not-found: no column `cpu`");
    }

    #[test]
    fn round_trips_through_the_wit_error() {
        let host = types::Error {
            code: ErrorCode::TypeMismatch,
            message: "utf8 + int64".to_owned(),
        };
        let error = Error::from(host.clone());
        assert_eq!(error.code(), ErrorCode::TypeMismatch);
        assert_eq!(types::Error::from(error), host);
    }

    #[test]
    fn a_message_is_an_internal_error() {
        let error: Error = "handler gave up".into();
        assert_eq!(error.code(), ErrorCode::Internal);
        assert_eq!(error.message(), "handler gave up");
    }
}
