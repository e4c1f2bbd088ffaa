//! The Docker plugin API's unix socket: bound by the daemon or handed over by systemd, one
//! request per connection, each parsed here and carried out on the controller's task.
use std::{
    os::{
        fd::FromRawFd,
        unix::fs::{FileTypeExt, PermissionsExt},
    },
    path::Path,
};

use serde_json::json;
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::{Job, REQUEST_TIMEOUT};
use crate::{error::Context, error::Error, error::Result, frontend::docker, frontend::docker::Refusal, frontend::http};

/// systemd passes activated sockets from this descriptor on (`sd_listen_fds`).
const LISTEN_FDS_START: i32 = 3;

/// The socket systemd passed (`LISTEN_PID` is us and `LISTEN_FDS` ≥ 1), if any.
pub(super) fn activated_listener() -> Result<Option<UnixListener>> {
    let ours = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
    // Children must not take them for theirs.
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        unsafe { std::env::remove_var(var) };
    }
    if !ours || count < 1 {
        return Ok(None);
    }
    // Safety: systemd's protocol hands descriptor 3 to this process, and nothing else owns it.
    let std = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FDS_START) };
    std.set_nonblocking(true).map_err(|e| Error::system("activated socket", e))?;
    let listener = UnixListener::from_std(std).map_err(|e| Error::system("activated socket", e))?;
    Ok(Some(listener))
}

/// Binds the socket itself: a stale socket file is replaced, a live daemon's is not.
pub(super) fn bind(path: &Path) -> Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::conflict(format!("{} exists and is not a socket; remove it", path.display())));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::conflict(format!("{} is served by a running daemon; stop it first", path.display())));
        }
        std::fs::remove_file(path).context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    }
    let listener = UnixListener::bind(path).context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(listener)
}

/// One request per connection. Garbage, unknown methods and bodies that do not parse get an
/// error answer; a client that hangs up or stalls is dropped. None of it reaches the
/// controller.
pub(super) async fn serve(mut stream: UnixStream, tx: mpsc::Sender<Job>) {
    let (status, answer) = match tokio::time::timeout(REQUEST_TIMEOUT, http::read_request(&mut stream)).await {
        Err(_) => (408, json!({ "Err": "request not received in time" })),
        Ok(Err(http::Refused { status: None, .. })) => return,
        Ok(Err(http::Refused { status: Some(status), reason })) => (status, json!({ "Err": reason })),
        Ok(Ok(req)) if req.method != "POST" => (405, json!({ "Err": "the plugin API takes POST" })),
        Ok(Ok(req)) => match docker::parse(&req.path, &req.body) {
            Err(Refusal::UnknownMethod(m)) => (404, json!({ "Err": format!("unknown method '{m}'") })),
            Err(Refusal::Invalid(why)) => (400, json!({ "Err": why })),
            Ok(parsed) => {
                let (reply, answer) = oneshot::channel();
                if tx.send(Job::Plugin(parsed, reply)).await.is_err() {
                    return;
                }
                match answer.await {
                    Ok(Ok(value)) => (200, value),
                    Ok(Err(e)) => (500, json!({ "Err": e.render(&docker::option) })),
                    Err(_) => return,
                }
            }
        },
    };
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    let reply = http::write_response(&mut stream, status, docker::CONTENT_TYPE, &body);
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, reply).await;
}
