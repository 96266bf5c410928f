//! API errors: every failure is a JSON body `{"error": {"code", "message", "field"}}` with a
//! status that says whose fault it was. Bad input is always a 4xx.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stockade_core::{Error, ErrorKind};

pub use stockade_api::{ErrorBody, ErrorDetail};

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorKind,
    pub message: String,
    pub field: Option<String>,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    /// An error of `code` with its usual status.
    pub fn of(code: ErrorKind, message: impl Into<String>) -> Self {
        ApiError::new(status_of(code), code, message)
    }

    /// An error of `code` with a status of its own (413 for an invalid body that is too big).
    pub fn new(status: StatusCode, code: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.into()),
            ..ApiError::of(ErrorKind::Invalid, message)
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::of(ErrorKind::Unauthorized, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::of(ErrorKind::Internal, message.to_string())
    }
}

/// The status of a kind, as `stockade-api` defines it.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(stockade_api::http_status(kind)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let ErrorDetail { code, message, field } = ErrorBody::of(&err).error;
        ApiError {
            status: status_of(code),
            code,
            message,
            field,
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(err: crate::db::DbError) -> Self {
        ApiError::internal(err)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match &rejection {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            field: Some("body".into()),
            ..ApiError::new(status, ErrorKind::Invalid, rejection.body_text())
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        ApiError {
            field: Some("body".into()),
            ..ApiError::new(
                rejection.status(),
                ErrorKind::Invalid,
                format!(
                    "{} (the limit is {} MiB)",
                    rejection.body_text(),
                    crate::MAX_BODY >> 20
                ),
            )
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError {
            field: Some("query".into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::Invalid, rejection.body_text())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError {
            field: Some("path".into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::Invalid, rejection.body_text())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}
