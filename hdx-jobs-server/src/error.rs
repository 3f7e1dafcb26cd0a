//! Errors as the old service answered them: JSON `{message, state: "failure", error_class,
//! error_type}` with the HTTP status of the error, and a JSON body extractor whose rejections
//! (malformed JSON, wrong types, missing fields, wrong content type, oversized bodies) come out
//! in that shape with a 4xx status instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
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

/// The 415 of a body that is not declared JSON (Flask's words).
fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        "415 Unsupported Media Type: Did not attempt to load JSON data because the request \
         Content-Type was not 'application/json'.",
    )
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "413 Request Entity Too Large: The data value transmitted exceeds the capacity limit.",
            ),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("400 Bad Request: {}", rejection.body_text()),
            ),
        }
    }
}

/// `application/json` or any `application/*+json`, parameters allowed (axum's rule).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// A JSON body that must be an object and must also decode as `T` (the endpoint's contract);
/// the handler gets both: the typed view to read, the body's text to enqueue unchanged.
///
/// The body is never built as a `serde_json::Value`: `T` is read straight from the bytes (the
/// endpoints' types skip the big parts with [`AnyObject`]), and the text goes on to
/// `JobSpec::json_arg`, which writes it into the job's pickle as it parses it. Building,
/// pickling and dropping the tree of a change-events body (tens of kilobytes) was most of the
/// endpoint's cost.
///
/// Errors: a body that is not JSON is a 400; JSON that is not an object, or an object that is
/// not a `T` (a field missing, of the wrong type, or given twice), a 422.
pub struct CheckedJson<T> {
    /// The body's text: one JSON object.
    pub text: String,
    /// The typed view.
    pub typed: T,
}

impl<T> CheckedJson<T> {
    /// The body as a JSON value, for a handler that enqueues it inside another value.
    pub fn value(&self) -> Result<Value, ApiError> {
        serde_json::from_str(&self.text).map_err(ApiError::internal)
    }
}

impl<S, T> FromRequest<S> for CheckedJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state).await?;
        let not_json = |e: serde_json::Error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("400 Bad Request: Failed to parse the request body as JSON: {e}"),
            )
        };
        // A syntax error anywhere is a 400, even after a field that is wrong for `T`.
        let check_syntax = || serde_json::from_slice::<IgnoredAny>(&bytes).map_err(not_json);
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            check_syntax()?;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "BadRequest",
                "422 Unprocessable Entity: the body must be a JSON object",
            ));
        }
        let typed = match serde_json::from_slice::<T>(&bytes) {
            Ok(typed) => typed,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                check_syntax()?;
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "BadRequest",
                    format!("422 Unprocessable Entity: {e}"),
                ));
            }
            Err(e) => return Err(not_json(e)),
        };
        // Valid JSON, so valid UTF-8 (serde_json checks strings, and all else is ASCII).
        let text = String::from_utf8(bytes.into()).map_err(ApiError::internal)?;
        Ok(CheckedJson { text, typed })
    }
}

/// A JSON object that a request must carry, checked without being copied (the handler enqueues
/// the raw body, which holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_as_axum_and_flask_do() {
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert(CONTENT_TYPE, value.parse().expect("header"));
            map
        };
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.api+json",
        ] {
            assert!(is_json(&headers(yes)), "{yes}");
        }
        for no in [
            "text/plain",
            "text/json",
            "application/jsonx",
            "application/+json",
            "json",
        ] {
            assert!(!is_json(&headers(no)), "{no}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn any_object_takes_objects_only() {
        assert!(serde_json::from_str::<AnyObject>(r#"{"a": [1, {"b": null}]}"#).is_ok());
        for not_an_object in ["[]", "1", "\"x\"", "null"] {
            assert!(serde_json::from_str::<AnyObject>(not_an_object).is_err());
        }
    }
}
