//! The Unix socket administrators on the server host open shells through.
//! Its mode (0600, or 0660 with `[shell] socket_group`) decides who may;
//! the kernel's peer credentials say who did, for the audit trail.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::connect_info::Connected;
use axum::routing::get;
use axum::serve::IncomingStream;
use penguindome_protocol::paths;
use tokio::net::UnixListener;

use crate::http::AppState;

/// Who is on the other end of a Unix connection.
#[derive(Debug, Clone)]
pub struct UnixPeer {
    uid: Option<u32>,
}

impl UnixPeer {
    /// The peer's user name, or `uid N` when it has none.
    pub fn user_name(&self) -> String {
        match self.uid {
            Some(uid) => nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {uid}"), |u| u.name),
            None => "an unknown local user".into(),
        }
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for UnixPeer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Self {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// The serving socket; removed when dropped.
pub struct ShellSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ShellSocket {
    /// Binds `path` (replacing a stale socket there), sets its mode and
    /// group, and serves the administrators' shell endpoint on it.
    pub fn start(path: &Path, group: Option<&str>, state: Arc<AppState>) -> anyhow::Result<Self> {
        let listener = bind(path, group)?;
        let app = Router::new()
            .route(paths::SHELL_ADMIN, get(super::admin_unix))
            .with_state(state)
            .into_make_service_with_connect_info::<UnixPeer>();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                log::error!("the shell socket stopped: {e}");
            }
        });
        Ok(Self {
            path: path.to_path_buf(),
            task,
        })
    }
}

impl Drop for ShellSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory of {}", path.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?,
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; remove it or set [shell] socket elsewhere",
            path.display()
        ),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on the shell socket {}", path.display()))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    if let Some(name) = group {
        let gid = nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .with_context(|| format!("[shell] socket_group {name:?} is not a group here"))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).with_context(|| {
            format!(
                "cannot give {} to group {name}; the server must be a member of it",
                path.display()
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(listener)
}
