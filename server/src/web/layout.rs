//! The frame of every page, and small pieces pages share.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

/// A whole page: title, navigation for `user` (none on the login page),
/// and `body`.
pub fn frame(title: &str, user: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · PenguinDome" }
                link rel="stylesheet" href="/web/style.css";
            }
            body {
                header {
                    span.brand { "PenguinDome" }
                    @if let Some(user) = user {
                        nav {
                            a href="/web/" { "Overview" }
                            a href="/web/clients" { "Clients" }
                            a href="/web/issues" { "Issues" }
                        }
                        form.logout method="post" action="/web/logout" {
                            span.user { (user) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// `markup` as an HTML response with `status`.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// The page for a user not granted `group`.
pub fn forbidden(user: &str, group: &str) -> Response {
    respond(
        StatusCode::FORBIDDEN,
        frame(
            "Not allowed",
            Some(user),
            html! {
                p { "Your account may not see these pages. An administrator can allow it with "
                    code { "pdome-admin access grant " (group) " " (user) } "." }
            },
        ),
    )
}

/// A page saying something failed, for the store's errors.
pub fn failure(user: &str, what: &str) -> Response {
    log::warn!(endpoint = "web"; "{what}");
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        frame(
            "Not available",
            Some(user),
            html! { p { "The server cannot read its store right now; try again shortly." } },
        ),
    )
}

/// A time as people read it, in UTC.
pub fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// How long ago `t` was, roughly.
pub fn ago(t: &DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - *t).num_seconds().max(0);
    match secs {
        0..60 => "just now".into(),
        60..3_600 => format!("{} min ago", secs / 60),
        3_600..86_400 => format!("{} h ago", secs / 3_600),
        _ => format!("{} days ago", secs / 86_400),
    }
}
