//! Logging in and out. Only a user and password open the view (an address
//! alone never does), checked as the repositories check theirs: PBKDF2,
//! with a bounded queue of checks.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{frame, respond};
use super::session::{cookie, token};
use super::{PAGE_GROUPS, SecureListener};
use crate::access_rules::Decision;
use crate::http::AppState;

/// Where to go after logging in.
#[derive(Debug, Deserialize)]
pub struct Next {
    #[serde(default)]
    next: Option<String>,
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    user: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Only a page of this view, never another site, and nothing a Location
/// header cannot carry.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/web/")
                && !n.contains("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n
        }
        _ => "/web/",
    }
}

fn login_page(next: &str, error: Option<&str>) -> Markup {
    frame(
        "Log in",
        None,
        html! {
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form.login method="post" action="/web/login" {
                input type="hidden" name="next" value=(next);
                label { "User" input name="user" autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// `GET /web/login`.
pub async fn form(Query(q): Query<Next>) -> Response {
    respond(
        StatusCode::OK,
        login_page(safe_next(q.next.as_deref()), None),
    )
}

/// `POST /web/login`.
pub async fn submit(
    State(state): State<Arc<AppState>>,
    secure: Option<axum::Extension<SecureListener>>,
    Form(c): Form<Credentials>,
) -> Response {
    let next = safe_next(c.next.as_deref()).to_string();
    // Any group the user has; an unknown user is checked against the first
    // so that both cost one PBKDF2.
    let group = PAGE_GROUPS
        .into_iter()
        .find(|g| state.access.grants(g, &c.user))
        .unwrap_or(PAGE_GROUPS[0]);
    match state
        .access
        .check_password(group, c.user.clone(), c.password)
        .await
    {
        Decision::Allow => {
            let token = match state.web.sessions.create(&c.user).await {
                Ok(t) => t,
                Err(e) => return super::session::unavailable(&e),
            };
            log::info!(endpoint = "web", user:% = c.user; "logged in");
            let secure = secure.is_some_and(|s| s.0.0);
            let mut r = Redirect::to(&next).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                cookie(&token, secure, state.web.sessions.lifetime()),
            );
            r
        }
        Decision::Challenge => {
            log::info!(endpoint = "web", user:% = c.user; "login refused");
            respond(
                StatusCode::UNAUTHORIZED,
                login_page(
                    &next,
                    Some("Wrong user or password, or this user may not use the web view."),
                ),
            )
        }
        Decision::Busy => {
            let mut r = respond(
                StatusCode::SERVICE_UNAVAILABLE,
                login_page(
                    &next,
                    Some("Too many logins are being checked; try again in a moment."),
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// `POST /web/logout`: ends the login and drops the cookie.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    secure: Option<axum::Extension<SecureListener>>,
    headers: HeaderMap,
) -> Response {
    if let Some(t) = token(&headers)
        && let Err(e) = state.web.sessions.end(&t).await
    {
        return super::session::unavailable(&e);
    }
    let secure = secure.is_some_and(|s| s.0.0);
    let mut r = Redirect::to("/web/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie("", secure, std::time::Duration::ZERO),
    );
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_pages_of_the_view_are_places_to_return_to() {
        for bad in [
            "https://evil.example/",
            "//evil.example/web/",
            "/web//evil",
            "/web/\\evil",
            "/web/\r\nSet-Cookie: x=1",
            "/web/ä",
            "/other",
        ] {
            assert_eq!(super::safe_next(Some(bad)), "/web/", "{bad:?}");
        }
        assert_eq!(
            super::safe_next(Some("/web/clients?q=a&page=2")),
            "/web/clients?q=a&page=2"
        );
        assert_eq!(super::safe_next(None), "/web/");
    }
}
