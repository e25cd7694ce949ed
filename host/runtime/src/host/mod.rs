//! The host side of every WIT interface the `handler` world imports.

mod dataframe;
mod events;
mod log_config;

use sluice_frame::{DType, ErrorCode, FrameError, Scalar};

use crate::bindings::sluice::function::types;
use crate::bindings::{Dtype, GuestError, GuestErrorCode, GuestScalar};
use crate::state::InvocationState;

impl types::Host for InvocationState {}

impl From<FrameError> for GuestError {
    fn from(error: FrameError) -> GuestError {
        let code = match error.code() {
            ErrorCode::InvalidArgument => GuestErrorCode::InvalidArgument,
            ErrorCode::ColumnNotFound => GuestErrorCode::ColumnNotFound,
            ErrorCode::TypeMismatch => GuestErrorCode::TypeMismatch,
            ErrorCode::Parse => GuestErrorCode::Parse,
            ErrorCode::Limit => GuestErrorCode::Limit,
            ErrorCode::Io => GuestErrorCode::Io,
            ErrorCode::Internal => GuestErrorCode::Internal,
        };
        GuestError { code, message: error.to_string() }
    }
}

impl From<GuestScalar> for Scalar {
    fn from(value: GuestScalar) -> Scalar {
        match value {
            GuestScalar::Null => Scalar::Null,
            GuestScalar::Boolean(b) => Scalar::Boolean(b),
            GuestScalar::Int(i) => Scalar::Int(i),
            GuestScalar::Float(f) => Scalar::Float(f),
            GuestScalar::Text(s) => Scalar::Text(s),
        }
    }
}

impl From<Scalar> for GuestScalar {
    fn from(value: Scalar) -> GuestScalar {
        match value {
            Scalar::Null => GuestScalar::Null,
            Scalar::Boolean(b) => GuestScalar::Boolean(b),
            Scalar::Int(i) => GuestScalar::Int(i),
            Scalar::Float(f) => GuestScalar::Float(f),
            Scalar::Text(s) => GuestScalar::Text(s),
        }
    }
}

impl From<Dtype> for DType {
    fn from(value: Dtype) -> DType {
        match value {
            Dtype::Boolean => DType::Boolean,
            Dtype::Int64 => DType::Int64,
            Dtype::Float64 => DType::Float64,
            Dtype::Utf8 => DType::Utf8,
            Dtype::TimestampMs => DType::TimestampMs,
        }
    }
}

impl From<DType> for Dtype {
    fn from(value: DType) -> Dtype {
        match value {
            DType::Boolean => Dtype::Boolean,
            DType::Int64 => Dtype::Int64,
            DType::Float64 => Dtype::Float64,
            DType::Utf8 => Dtype::Utf8,
            DType::TimestampMs => Dtype::TimestampMs,
        }
    }
}
