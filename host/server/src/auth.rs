//! Bearer tokens: generated from the OS's random source, shown once, stored only as their
//! SHA-256.

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Who a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant(String),
}

/// A new token: `sluice_` and 32 random bytes in hex.
pub fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no random source for a token: {e}")))?;
    Ok(format!("sluice_{}", hex::encode(bytes)))
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The bearer token of a request, or the 401 that refuses it.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let unauthorized = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let value = value.to_str().map_err(|_| unauthorized("the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(unauthorized("the Authorization header must be `Bearer <token>`")),
    }
}

/// Compares two hex digests in time independent of where they differ.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Tenant and function names: what the manifest allows for a function name, at most 64 characters.
pub fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid-name",
            format!("{kind} name `{name}` must be 1 to 64 letters, digits, `-` or `_`"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_compare_exactly() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), "sluice_".len() + 64);
        assert!(same_hash(&token_hash(&a), &token_hash(&a)));
        assert!(!same_hash(&token_hash(&a), &token_hash(&b)));
    }

    #[test]
    fn bearer_headers_are_parsed_and_others_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers).unwrap_err().status, StatusCode::UNAUTHORIZED);
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer(&headers).unwrap_err().message.contains("Bearer"));
        headers.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap(), "tok");
    }

    #[test]
    fn names_with_dots_or_slashes_are_refused() {
        check_name("tenant", "acme-1").unwrap();
        for bad in ["", "..", "a/b", "a.b", &"x".repeat(65)] {
            assert_eq!(check_name("tenant", bad).unwrap_err().cause, "invalid-name", "{bad}");
        }
    }
}
