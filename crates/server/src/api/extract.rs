//! Path and query-string extractors whose rejections use the API error shape and name the
//! parameter at fault (`details: {"parameter": "limit", "in": "query"}`), instead of axum's
//! `400 text/plain`.
//!
//! Handlers import [`Path`] and [`Query`] from here in place of axum's; the JSON body extractor
//! is [`crate::api::error::Json`].

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::api::error::{ApiError, Code, Details};

/// Path parameters, deserialized into `T`; a bad one is a `400 malformed_request` naming it.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_rejection(parts, &rejection)),
        }
    }
}

fn path_rejection(parts: &Parts, rejection: &PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind;
    let PathRejection::FailedToDeserializePathParams(failure) = rejection else {
        // Only a handler mounted on a route without parameters gets here: a bug, not bad input.
        return ApiError::new(Code::Internal, "internal error; see the server log");
    };
    let name = match failure.kind() {
        ErrorKind::ParseErrorAtKey { key, .. }
        | ErrorKind::InvalidUtf8InPathParam { key }
        | ErrorKind::DeserializeError { key, .. } => Some(key.clone()),
        // A single parameter deserialized as a plain value: its name is the route's only one.
        _ => only_parameter(parts),
    };
    let reason = match failure.kind() {
        ErrorKind::InvalidUtf8InPathParam { .. } => "is not valid UTF-8 once percent-decoded".to_owned(),
        ErrorKind::ParseErrorAtKey { value, expected_type, .. }
        | ErrorKind::ParseErrorAtIndex { value, expected_type, .. }
        | ErrorKind::ParseError { value, expected_type } => {
            format!("{value:?} is not a valid {}", friendly_type(expected_type))
        }
        ErrorKind::DeserializeError { value, message, .. } => format!("{value:?}: {message}"),
        other => other.to_string(),
    };
    parameter_error(name.as_deref().unwrap_or("path"), "path", &reason)
}

/// The name of the matched route's one parameter (`/api/v1/flags/{key}` → `key`).
fn only_parameter(parts: &Parts) -> Option<String> {
    let route = parts.extensions.get::<MatchedPath>()?.as_str();
    let mut names = route.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'));
    let first = names.next()?;
    names.next().is_none().then(|| first.trim_start_matches('*').to_owned())
}

/// Query-string parameters, deserialized into `T`; a bad one is a `400 malformed_request`
/// naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Deserializes a query string, keeping the path to the failing parameter.
pub(crate) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        // A missing parameter fails at the level above it: serde names it in the message.
        let name = if path == "." || path.is_empty() { backticked(&message).unwrap_or("query") } else { &path };
        parameter_error(name, "query", &tidy(&message))
    })
}

/// A `400 malformed_request` about one parameter.
fn parameter_error(name: &str, location: &'static str, reason: &str) -> ApiError {
    ApiError::new(Code::MalformedRequest, format!("{location} parameter {name}: {reason}"))
        .with_details(Details::Parameter { parameter: name.to_owned(), location })
}

/// The first name serde quotes in backticks ("missing field `env`" → `env`).
fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// serde's words for the people reading them ("invalid digit found in string" stays; "field"
/// becomes "parameter").
fn tidy(message: &str) -> String {
    message.replace("missing field", "missing parameter").replace("duplicate field", "repeated parameter")
}

fn friendly_type(rust: &str) -> &str {
    match rust.rsplit("::").next().unwrap_or(rust) {
        "u8" | "u16" | "u32" | "u64" | "usize" => "non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "isize" => "integer",
        "f32" | "f64" => "number",
        "bool" => "boolean (true or false)",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code, reason = "fields only deserialized")]
    struct Page {
        env: String,
        limit: Option<u32>,
    }

    fn details(e: &ApiError) -> (String, &'static str) {
        match &e.details {
            Some(Details::Parameter { parameter, location }) => (parameter.clone(), location),
            other => panic!("unexpected details {other:?}"),
        }
    }

    #[test]
    fn a_bad_number_names_its_parameter() {
        let e = parse_query::<Page>("env=production&limit=ten").unwrap_err();
        assert_eq!(e.code, Code::MalformedRequest);
        assert_eq!(details(&e), ("limit".to_owned(), "query"));
        assert!(e.message.contains("limit"), "{}", e.message);
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let e = parse_query::<Page>("limit=3").unwrap_err();
        assert_eq!(details(&e), ("env".to_owned(), "query"));
        assert!(e.message.contains("missing parameter"), "{}", e.message);
    }

    #[test]
    fn a_repeated_parameter_is_named() {
        let e = parse_query::<Page>("env=a&env=b").unwrap_err();
        assert_eq!(details(&e).1, "query");
        assert!(e.message.contains("env"), "{}", e.message);
    }

    #[test]
    fn good_queries_parse() {
        let page = parse_query::<Page>("env=production&limit=3").unwrap();
        assert_eq!((page.env.as_str(), page.limit), ("production", Some(3)));
    }
}
