//! The dashboard's login: a form that takes the token and keeps it in an
//! HttpOnly, SameSite=Strict cookie, so the pages' script never sees it and
//! it never appears in a URL. Without a token configured there is nothing
//! to log into.
//!
//! The cookie has no `Secure` attribute: dts serves plain HTTP (usually on
//! loopback), where a browser would drop a `Secure` cookie. Put a TLS proxy
//! in front of dts to keep the cookie off the network.

use super::pages;
use crate::AppState;
use crate::access::{constant_time_eq, holds_token};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The name of the cookie that holds the token.
pub(crate) const TOKEN_COOKIE: &str = "dts_token";
/// Where a page sends a browser that has not logged in.
const LOGIN: &str = "/ui/login";

/// The token in the request's `dts_token` cookie, if there is one. The
/// value is percent-encoded (a token may hold `;` or spaces).
pub(crate) fn token_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .and_then(|(_, value)| percent_decode_str(value).decode_utf8().ok())
        .map(|value| value.into_owned())
}

/// With a token configured, a page asked for without it (cookie or bearer)
/// answers 303 to the login form.
pub(crate) async fn require_login(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &state.auth_token {
        if !holds_token(request.headers(), expected) {
            return Redirect::to(LOGIN).into_response();
        }
    }
    next.run(request).await
}

/// `GET /ui/login`: the form; without a token configured, straight to `/`.
pub(crate) async fn form(State(state): State<AppState>) -> Response {
    if state.auth_token.is_none() {
        return Redirect::to("/").into_response();
    }
    pages::login(None).into_response()
}

/// `POST /ui/login` with the form's `token`: sets the cookie and goes to
/// `/` when it is right; 401 with the form and an error when not.
pub(crate) async fn login(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(expected) = &state.auth_token else {
        return Redirect::to("/").into_response();
    };
    let given = form_field(&body, "token").unwrap_or_default();
    if given.is_empty() {
        let page = pages::login(Some("Enter the server's token."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        let page = pages::login(Some("That token is not the server's token."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let cookie = format!(
        "{TOKEN_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        utf8_percent_encode(&given, NON_ALPHANUMERIC)
    );
    with_cookie(Redirect::to("/").into_response(), &cookie)
}

/// `GET` or `POST /ui/logout`: clears the cookie, then the login form.
pub(crate) async fn logout() -> Response {
    let cookie = format!("{TOKEN_COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/");
    with_cookie(Redirect::to(LOGIN).into_response(), &cookie)
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    match HeaderValue::from_str(cookie) {
        Ok(value) => {
            response.headers_mut().insert(header::SET_COOKIE, value);
            response
        }
        // Percent-encoding leaves only visible ASCII: cannot happen.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The value of `field` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], field: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == field)
        .and_then(|(_, value)| {
            let value = value.replace('+', " ");
            percent_decode_str(&value)
                .decode_utf8()
                .ok()
                .map(|v| v.into_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; dts_token=s%3Bcr%20t; b=2"),
        );
        assert_eq!(token_cookie(&headers).as_deref(), Some("s;cr t"));
        headers.insert(header::COOKIE, HeaderValue::from_static("xdts_token=1"));
        assert_eq!(token_cookie(&headers), None);
    }

    #[test]
    fn the_form_field_is_url_decoded() {
        assert_eq!(
            form_field(b"x=1&token=a+b%26c", "token").as_deref(),
            Some("a b&c")
        );
        assert_eq!(form_field(b"x=1", "token"), None);
    }
}
