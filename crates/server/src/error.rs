//! API errors: every failure is a JSON body `{"error": {"code", "message", "field"}}` with a
//! status that says whose fault it was. Bad input is always a 4xx.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stockade_core::Error;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable kind (`not_found`, `invalid`, `unauthorized`, ...).
    pub code: String,
    /// One line for a human.
    pub message: String,
    /// The request field, path or parameter at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = match &err {
            Error::NotFound(_) | Error::ExecNotFound(_) => StatusCode::NOT_FOUND,
            Error::InvalidSpec { .. } | Error::File { .. } => StatusCode::BAD_REQUEST,
            Error::Unsupported { .. } | Error::CommandNotFound(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::WrongState { .. } | Error::NameTaken(_) => StatusCode::CONFLICT,
            Error::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            Error::Backend { .. } => StatusCode::BAD_GATEWAY,
            Error::Remote { .. } => match err.kind() {
                "not_found" | "exec_not_found" => StatusCode::NOT_FOUND,
                "invalid" | "file" => StatusCode::BAD_REQUEST,
                "unsupported" | "command_not_found" => StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_state" | "name_taken" => StatusCode::CONFLICT,
                "timeout" => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
        };
        let field = match &err {
            Error::InvalidSpec { field, .. } => Some(field.clone()),
            Error::File { path, .. } => Some(path.clone()),
            Error::Remote { field, .. } => field.clone(),
            _ => None,
        };
        ApiError {
            status,
            code: err.kind().to_owned(),
            message: err.to_string(),
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
            ..ApiError::new(status, "invalid", rejection.body_text())
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        ApiError {
            field: Some("body".into()),
            ..ApiError::new(
                rejection.status(),
                "invalid",
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
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", rejection.body_text())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError {
            field: Some("path".into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", rejection.body_text())
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
