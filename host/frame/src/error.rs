//! Errors of the frame engine.
//!
//! Every variant names the input that was wrong (a column and the columns that do exist, a source
//! and line, a path) because the message travels unchanged to the guest and into the tenant's logs:
//! it is the only thing a handler author sees when their pipeline breaks.

use std::path::PathBuf;

use arrow::error::ArrowError;
use parquet::errors::ParquetError;

/// The class of a [`FrameError`]; mirrors the WIT `error-code` enum one to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    ColumnNotFound,
    TypeMismatch,
    Parse,
    Limit,
    Io,
    Internal,
}

/// Why a frame operation failed.
#[derive(thiserror::Error, Debug)]
pub enum FrameError {
    /// A column was referenced that the frame does not have.
    #[error("column `{name}` not found; available columns: [{}]", .available.join(", "))]
    ColumnNotFound { name: String, available: Vec<String> },

    /// An operation was applied to values of a type it does not accept.
    #[error("type mismatch: {0}")]
    TypeMismatch(String),

    /// Input data could not be parsed; `input` names the source (file path or stream position).
    #[error("{input} line {line}: {message}")]
    Parse { input: String, line: u64, message: String },

    /// A value could not be converted (e.g. a cast of `"abc"` to int64).
    #[error("conversion failed: {0}")]
    Conversion(String),

    /// The call itself was malformed (empty list, mismatched lengths, aggregate misuse, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A size limit of the engine or of Arrow was exceeded.
    #[error("limit exceeded: {0}")]
    Limit(String),

    /// A filesystem operation failed.
    #[error("{op} `{}`: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An Arrow kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),

    /// The Parquet writer or reader failed.
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),

    /// The GPU failed while running an operation (a CUDA driver error).
    #[error("GPU: {0}")]
    Device(String),
}

impl FrameError {
    /// The WIT error code this error is reported under.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::ColumnNotFound { .. } => ErrorCode::ColumnNotFound,
            FrameError::TypeMismatch(_) => ErrorCode::TypeMismatch,
            FrameError::Parse { .. } | FrameError::Conversion(_) => ErrorCode::Parse,
            FrameError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            FrameError::Limit(_) => ErrorCode::Limit,
            FrameError::Io { .. } => ErrorCode::Io,
            FrameError::Arrow(e) => match e {
                ArrowError::CastError(_) | ArrowError::ParseError(_) => ErrorCode::Parse,
                ArrowError::DivideByZero | ArrowError::ArithmeticOverflow(_) => {
                    ErrorCode::InvalidArgument
                }
                ArrowError::OffsetOverflowError(_) | ArrowError::MemoryError(_) => {
                    ErrorCode::Limit
                }
                ArrowError::IoError(..) => ErrorCode::Io,
                _ => ErrorCode::Internal,
            },
            FrameError::Parquet(_) | FrameError::Device(_) => ErrorCode::Internal,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FrameError::Io { op, path: path.into(), source }
    }

    pub(crate) fn column_not_found(name: &str, schema: &arrow::datatypes::Schema) -> Self {
        FrameError::ColumnNotFound {
            name: name.to_string(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_not_found_lists_available_columns() {
        let e = FrameError::ColumnNotFound { name: "x".into(), available: vec!["a".into(), "b".into()] };
        assert_eq!(e.to_string(), "column `x` not found; available columns: [a, b]");
        assert_eq!(e.code(), ErrorCode::ColumnNotFound);
    }

    #[test]
    fn parse_error_names_source_and_line() {
        let e = FrameError::Parse { input: "data/x.jsonl".into(), line: 17, message: "bad".into() };
        assert_eq!(e.to_string(), "data/x.jsonl line 17: bad");
        assert_eq!(e.code(), ErrorCode::Parse);
    }
}
