//! `GET /bootstrap?format=deb|rpm|arch`: the token bootstrap script the
//! current release published. It holds nothing secret (the one-liner
//! `pdome-admin tokens create` prints pins it by its SHA-256), so it is
//! served to anyone.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiFailure, AppState};
use crate::release::Family;
use crate::release::bootstrap::published_path;

/// The query: which family.
#[derive(Debug, Deserialize)]
pub struct BootstrapQuery {
    format: String,
}

/// Serves one family's script.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Query(q): Query<BootstrapQuery>,
) -> Result<Response, ApiFailure> {
    let family: Family = q.format.parse().map_err(|_| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "format must be deb, rpm or arch",
        )
    })?;
    let missing = || {
        ApiFailure::new(
            StatusCode::NOT_FOUND,
            "no_release",
            "no release with bootstrap scripts is published; run `pdome-admin release`",
        )
    };
    let script = match state.repo.read(&published_path(family)).await {
        Ok(Some(script)) => script,
        Ok(None) => return Err(missing()),
        Err(e) => {
            log::error!(endpoint = "bootstrap"; "cannot read the release: {e}");
            return Err(ApiFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "release_unavailable",
                "the release cannot be read; try again",
            ));
        }
    };
    let mut r = (StatusCode::OK, script).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/x-shellscript; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}
