//! Errors as the old service answered them: JSON `{message, state: "failure", error_class,
//! error_type}` with the HTTP status of the error, and a JSON body extractor whose rejections
//! (malformed JSON, wrong types, missing fields, wrong content type, oversized bodies) come out
//! in that shape with a 4xx status instead of axum's plain text.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The error type the old service put in every error it did not classify.
pub const DEFAULT_ERROR_TYPE: &str = "transformation-init-problem";

/// The body of an error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub message: String,
    /// Always `failure`.
    #[schema(example = "failure")]
    pub state: String,
    /// The kind of error, named like the old service's exception classes (`BadRequest`, ...).
    pub error_class: String,
    /// The old service's error type (`transformation-init-problem` unless classified).
    pub error_type: String,
}

/// An error answered as [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with a status, a class and a message.
    pub fn new(status: StatusCode, error_class: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                message: message.into(),
                state: "failure".into(),
                error_class: error_class.into(),
                error_type: DEFAULT_ERROR_TYPE.into(),
            },
        }
    }

    /// 400 with Flask's wording.
    pub fn bad_request(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("400 Bad Request: {detail}"),
        )
    }

    /// 404 for paths that do not exist.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "404 Not Found: The requested URL was not found on the server. If you entered the URL manually \
             please check your spelling and try again.",
        )
    }

    /// 405 for a known path with another method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "405 Method Not Allowed: The method is not allowed for the requested URL.",
        )
    }

    /// 500 for failures of the service itself (Redis down, ...).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            e.to_string(),
        )
    }
}

/// The cause of a server error, attached to its response for the access log (which logs every
/// 5xx with it: CKAN only sees the status and message).
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let cause = self
            .status
            .is_server_error()
            .then(|| ErrorCause(format!("{}: {}", self.body.error_class, self.body.message)));
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(cause) = cause {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let detail = rejection.body_text();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                status,
                "RequestEntityTooLarge",
                "413 Request Entity Too Large: The data value transmitted exceeds the capacity limit.",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                status,
                "UnsupportedMediaType",
                "415 Unsupported Media Type: Did not attempt to load JSON data because the request \
                 Content-Type was not 'application/json'.",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::new(status, "BadRequest", format!("422 Unprocessable Entity: {detail}")),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", format!("400 Bad Request: {detail}")),
        }
    }
}

/// A JSON body that must be an object and must also decode as `T` (the endpoint's contract);
/// the handler gets both: the typed view to read, the original object to enqueue unchanged.
pub struct CheckedJson<T> {
    /// The body as it came.
    pub raw: Value,
    /// The typed view.
    pub typed: T,
}

impl<S, T> FromRequest<S> for CheckedJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(raw) = Json::<Value>::from_request(req, state).await?;
        if !raw.is_object() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "BadRequest",
                "422 Unprocessable Entity: the body must be a JSON object",
            ));
        }
        let typed = serde_json::from_value(raw.clone()).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "BadRequest",
                format!("422 Unprocessable Entity: {e}"),
            )
        })?;
        Ok(CheckedJson { raw, typed })
    }
}

/// `Path` whose rejections come out in the old error shape.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// `Query` whose rejections come out in the old error shape.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// The rejections of a JSON body (and of a missing bearer token), for the OpenAPI description
/// of every endpoint that takes one.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum JsonBodyErrors {
    /// Malformed JSON.
    #[response(status = 400, description = "Malformed JSON")]
    Malformed(ErrorBody),
    /// No or a wrong bearer token.
    #[response(status = 401, description = "Missing or wrong bearer token")]
    Unauthorized(ErrorBody),
    /// Over `HDX_JOBS_MAX_BODY_BYTES`.
    #[response(status = 413, description = "Body too large")]
    TooLarge(ErrorBody),
    /// Not `application/json`.
    #[response(status = 415, description = "Not JSON")]
    NotJson(ErrorBody),
    /// Wrong types or missing fields.
    #[response(status = 422, description = "Wrong types or missing fields")]
    Invalid(ErrorBody),
}
