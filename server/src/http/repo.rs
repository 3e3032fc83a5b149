//! `GET /penguindome/v1/repo/*`: the published repositories, served from
//! the current release (on this server's disk, or in the database that all
//! servers of a site share).
//!
//! No Last-Modified and no conditional answers: libcurl (pacman) drops a
//! fresh index whose Last-Modified is not newer than its copy, and a
//! republish within the same second would leave clients on stale metadata.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiFailure, AppState};
use penguindome_protocol::token;
use penguindome_protocol::wire::is_valid_client_id;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access_rules::{Decision, parse_basic};
use crate::release::source::RepoFile;
use crate::store::StoreError;

/// Checks a client's own repository credential, then the access rules of
/// `endpoint`; `Err` is the answer to send.
pub async fn authorize(
    state: &AppState,
    endpoint: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let basic = basic_credentials(headers);
    let user = basic.as_ref().map(|(u, _)| u.clone());
    let decision = match own_credential(state, basic.as_ref()).await {
        Ok(Some(true)) => Decision::Allow,
        Ok(Some(false)) => Decision::Challenge,
        Ok(None) => state.access.check(endpoint, peer.ip(), basic).await,
        Err(e) => return Err(ApiFailure::from(e).into_response()),
    };
    refusal(decision, endpoint, peer, user).map_or(Ok(()), Err)
}

/// Checks the access rules of `endpoint` alone: clients' own credentials
/// open the repositories, never anything else.
pub async fn authorize_by_rules(
    state: &AppState,
    endpoint: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let basic = basic_credentials(headers);
    let user = basic.as_ref().map(|(u, _)| u.clone());
    let decision = state.access.check(endpoint, peer.ip(), basic).await;
    refusal(decision, endpoint, peer, user).map_or(Ok(()), Err)
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic)
}

/// What to answer to an access decision that refuses: a challenge or busy.
fn refusal(
    decision: Decision,
    endpoint: &str,
    peer: SocketAddr,
    user: Option<String>,
) -> Option<Response> {
    match decision {
        Decision::Allow => None,
        Decision::Challenge => {
            log::info!(endpoint = endpoint, peer:% = peer.ip(), user:? = user; "access refused");
            let mut r = ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this address and these credentials are not allowed here; see `pdome-admin password`",
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"PenguinDome\", charset=\"UTF-8\""),
            );
            Some(r)
        }
        Decision::Busy => Some(
            ApiFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                "too many password checks are waiting; retry later",
            )
            .retry_after(30)
            .into_response(),
        ),
    }
}

/// Checks a client's own credential (user = its id) or an enrollment
/// token's (user = `pdt1.<id>`, for the bootstrap). `None` when the user is
/// neither: the access rules decide.
async fn own_credential(
    state: &AppState,
    basic: Option<&(String, String)>,
) -> Result<Option<bool>, StoreError> {
    let Some((user, password)) = basic else {
        return Ok(None);
    };
    let presented = hex::encode(Sha256::digest(password.as_bytes()));
    if is_valid_client_id(user) {
        let stored = state.store.repo_credential(user).await?;
        return Ok(Some(stored.is_some_and(|s| {
            bool::from(s.as_bytes().ct_eq(presented.as_bytes()))
        })));
    }
    if let Some(id) = token::id_from_repo_user(user) {
        let stored = state.store.find_token(id).await?;
        return Ok(Some(stored.is_some_and(|t| {
            t.opens_repositories(&presented, chrono::Utc::now())
        })));
    }
    Ok(None)
}

fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("deb") => "application/vnd.debian.binary-package",
        Some("rpm") => "application/x-rpm",
        Some("zst") => "application/zstd",
        Some("gz") => "application/gzip",
        Some("xml") => "application/xml",
        Some("asc") => "application/pgp-keys",
        Some("gpg" | "sig") => "application/pgp-signature",
        Some("json") => "application/json",
        _ if matches!(name, "Release" | "InRelease" | "Packages") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn not_found() -> Response {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such file in the repository",
    )
    .into_response()
}

/// Serves one repository file.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    if let Err(r) = authorize(&state, "repo", peer, &headers).await {
        return r;
    }
    if path == crate::release::publish::MANIFEST {
        // Internal bookkeeping, not for clients.
        return not_found();
    }
    let (body, len) = match state.repo.file(&path).await {
        Ok(Some(RepoFile::Disk { path, len })) => match tokio::fs::File::open(&path).await {
            Ok(f) => (Body::from_stream(tokio_util::io::ReaderStream::new(f)), len),
            Err(_) => return not_found(),
        },
        Ok(Some(RepoFile::Memory(bytes))) => {
            let len = bytes.len() as u64;
            (Body::from(bytes), len)
        }
        Ok(None) => return not_found(),
        Err(e) => {
            log::error!(endpoint = "repo"; "cannot read the release: {e}");
            return ApiFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "release_unavailable",
                "the repository cannot be read; try again",
            )
            .into_response();
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
