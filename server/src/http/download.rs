//! `GET /penguindome/v1/download_release?format=deb|rpm|arch`: the newest
//! agent (or, with `package=site`, site) package of that family; with
//! `bootstrap=1`, a shell script that installs the site package (carried
//! inside the script) and then the agent from the site's repository.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;

use super::repo::authorize;
use super::{ApiFailure, AppState};
use crate::release::publish::Manifest;
use crate::release::source::SourceError;
use crate::release::spec::{Family, PackageRecord};

/// Query parameters.
#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    format: String,
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    bootstrap: Option<String>,
}

/// The newest record of `name` in `family`.
fn newest<'a>(
    packages: &'a [PackageRecord],
    family: Family,
    name: &str,
) -> Option<&'a PackageRecord> {
    packages
        .iter()
        .filter(|r| r.family == family && r.name == name)
        .max_by_key(|r| r.release)
}

/// Answers a download.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<DownloadQuery>,
) -> Response {
    if let Err(r) = authorize(&state, "download_release", peer, &headers).await {
        return r;
    }
    answer(&state, peer, &q)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The package (or bootstrap script) the query asks for.
async fn answer(
    state: &AppState,
    peer: SocketAddr,
    q: &DownloadQuery,
) -> Result<Response, ApiFailure> {
    let (family, name) = parse_query(q)?;
    let manifest = current_manifest(state).await?;
    let bootstrap = q
        .bootstrap
        .as_deref()
        .is_some_and(|b| b != "0" && b != "false");
    let wanted = if bootstrap { "penguindome-site" } else { name };
    let Some(record) = newest(&manifest.packages, family, wanted) else {
        return Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {wanted} package for {}", family.as_str()),
        ));
    };
    let (path, bytes) = read_package(state, family, record).await?;
    log::info!(endpoint = "download_release", peer:% = peer.ip(), file:% = record.file_name, bootstrap = bootstrap; "download");
    if bootstrap {
        return bootstrap_response(state, family, record, &path, &bytes).await;
    }
    Ok(package_response(record, bytes))
}

/// The family and package name the query names.
fn parse_query(q: &DownloadQuery) -> Result<(Family, &'static str), ApiFailure> {
    let Ok(family) = q.format.parse::<Family>() else {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "format must be deb, rpm or arch",
        ));
    };
    let name = match q.package.as_deref() {
        None | Some("agent") => "penguindome-agent",
        Some("site") => "penguindome-site",
        Some(_) => {
            return Err(ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "package must be agent or site",
            ));
        }
    };
    Ok((family, name))
}

/// The published release's manifest.
async fn current_manifest(state: &AppState) -> Result<Manifest, ApiFailure> {
    match state.repo.manifest().await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "no_release",
            "nothing is published yet; run `pdome-admin release`",
        )),
        Err(e) => Err(unreadable(&e)),
    }
}

fn unreadable(e: &SourceError) -> ApiFailure {
    log::error!(endpoint = "download_release"; "cannot read the release: {e}");
    ApiFailure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "release_unavailable",
        "the release cannot be read; try again",
    )
}

/// The package file's path in the repository and its bytes.
async fn read_package(
    state: &AppState,
    family: Family,
    record: &PackageRecord,
) -> Result<(String, Bytes), ApiFailure> {
    let path = format!("{}/{}", family.repo_dir(), record.location);
    match state.repo.read(&path).await {
        Ok(Some(bytes)) => Ok((path, bytes)),
        Ok(None) => Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "package file missing",
        )),
        Err(e) => Err(unreadable(&e)),
    }
}

/// The bootstrap script carrying the site package `bytes`.
async fn bootstrap_response(
    state: &AppState,
    family: Family,
    record: &PackageRecord,
    path: &str,
    bytes: &[u8],
) -> Result<Response, ApiFailure> {
    let signature = match family {
        Family::Arch => state
            .repo
            .read(&format!("{path}.sig"))
            .await
            .map_err(|e| unreadable(&e))?,
        _ => None,
    };
    let signing = state.signing.get();
    let Ok(key) = signing.key.public().to_armored() else {
        return Err(ApiFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "no public key",
        ));
    };
    let script = bootstrap_script(
        family,
        record,
        bytes,
        signature.as_deref(),
        &key,
        signing.key.fingerprint(),
    );
    let mut r = (StatusCode::OK, script).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/x-shellscript; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The package file as an attachment.
fn package_response(record: &PackageRecord, bytes: Bytes) -> Response {
    let mut r = (StatusCode::OK, Body::from(bytes)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", record.file_name))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn b64_lines(bytes: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(text.len() + text.len() / 76 + 1);
    for chunk in text.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// A POSIX shell script that installs the embedded site package, which
/// brings the repository definition, key and credentials, and then the
/// agent from the repository, so that upgrades come the same way.
pub fn bootstrap_script(
    family: Family,
    site: &PackageRecord,
    bytes: &[u8],
    signature: Option<&[u8]>,
    key_armored: &str,
    fingerprint: &str,
) -> String {
    let mut s = format!(
        "#!/bin/sh\n# PenguinDome agent bootstrap ({family}): installs {file}, then penguindome-agent\n\
         # from this site's signed repository. Run as root.\n\
         # Everything is inside main(), so a truncated copy runs nothing.\nset -eu\n\n\
         main() {{\n\
         if [ \"$(id -u)\" -ne 0 ]; then echo 'run this as root' >&2; exit 1; fi\n\
         tmp=$(mktemp -d)\ntrap 'rm -rf \"$tmp\"' EXIT\n\
         base64 -d >\"$tmp/{file}\" <<'PENGUINDOME_PACKAGE'\n{package}PENGUINDOME_PACKAGE\n",
        family = family.as_str(),
        file = site.file_name,
        package = b64_lines(bytes),
    );
    match family {
        Family::Deb => s.push_str(&format!(
            "dpkg -i \"$tmp/{file}\"\n\
             apt-get -o Dir::Etc::SourceList=/etc/apt/sources.list.d/penguindome.sources \
             -o Dir::Etc::SourceParts=- -o APT::Get::List-Cleanup=0 update\n\
             DEBIAN_FRONTEND=noninteractive apt-get install -y penguindome-agent\n",
            file = site.file_name
        )),
        Family::Rpm => s.push_str(&format!(
            "cat >\"$tmp/key.asc\" <<'PENGUINDOME_KEY'\n{key_armored}PENGUINDOME_KEY\n\
             rpm --import \"$tmp/key.asc\"\n\
             dnf -y install \"$tmp/{file}\"\n\
             dnf -y --refresh install penguindome-agent\n",
            file = site.file_name
        )),
        Family::Arch => {
            if let Some(sig) = signature {
                s.push_str(&format!(
                    "base64 -d >\"$tmp/{file}.sig\" <<'PENGUINDOME_SIG'\n{sig}PENGUINDOME_SIG\n",
                    file = site.file_name,
                    sig = b64_lines(sig)
                ));
            }
            s.push_str(&format!(
                "cat >\"$tmp/key.asc\" <<'PENGUINDOME_KEY'\n{key_armored}PENGUINDOME_KEY\n\
                 pacman-key --add \"$tmp/key.asc\"\n\
                 pacman-key --lsign-key {fingerprint}\n\
                 pacman -U --noconfirm \"$tmp/{file}\"\n\
                 printf '{conf}' >\"$tmp/pacman.conf\"\n\
                 pacman --config \"$tmp/pacman.conf\" -Sy --noconfirm --needed penguindome-agent\n",
                conf = SITE_ONLY_PACMAN_CONF,
                file = site.file_name
            ));
        }
    }
    s.push_str(
        "echo 'PenguinDome agent installed; see: systemctl status penguindome.timer'\n}\n\n\
         main \"$@\"\n",
    );
    s
}

/// The pacman configuration (as a printf format) that refreshes only the
/// site's repository, which the site package defines: the system's own
/// sync databases stay as they were, so installing the agent never makes a
/// partial upgrade of the rest of the system.
const SITE_ONLY_PACMAN_CONF: &str = "[options]\\nSigLevel = Required DatabaseRequired TrustedOnly\\n\\n\
                                     [penguindome]\\nInclude = /etc/pacman.d/penguindome.conf\\n";
