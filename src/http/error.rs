use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// Every error answer: a status and a JSON body `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn method_not_allowed(allowed: &[Method]) -> Self {
        let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("allowed: {}", list.join(", ")),
        )
    }

    /// The code of [`ApiError::unavailable`].
    pub(crate) const UNAVAILABLE: &'static str = "unavailable";

    /// The store failed: the request was not taken, so the sender should try again.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, Self::UNAVAILABLE, message)
    }

    pub(crate) fn into_response(self) -> Response {
        let mut r = super::json(
            self.status,
            &serde_json::json!({"error": {"code": self.code, "message": self.message}}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                warp::http::header::WWW_AUTHENTICATE,
                warp::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::unavailable("the store is unavailable; try again")
    }
}

impl From<crate::commands::CommandError> for ApiError {
    fn from(e: crate::commands::CommandError) -> Self {
        use crate::commands::CommandError::*;
        match e {
            Invalid { code, message } => ApiError::bad_request(code, message),
            NotFound(message) => ApiError::not_found(message),
            Conflict { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            Store(e) => e.into(),
        }
    }
}
