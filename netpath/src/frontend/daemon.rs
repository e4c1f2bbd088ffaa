//! `netpath daemon`: one long-running process that owns one [`Controller`] on one task
//! (rusqlite is not `Sync`), serves the Docker plugin API on a unix socket and garbage-collects
//! periodically. Connections are served by their own tasks, which only read and parse; every
//! change goes through the controller task over a channel, one at a time. The datapath never
//! depends on this process: it stays pinned and working when the daemon stops or dies.
use std::{
    os::{
        fd::FromRawFd,
        unix::fs::{FileTypeExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use crate::{
    core::controller::Controller, error::Context, error::Error, error::Result, frontend::docker,
    frontend::docker::Refusal, frontend::docker::Request, frontend::docker::http,
};

pub const DEFAULT_DOCKER_SOCKET: &str = "/run/docker/plugins/netpath.sock";
/// A client gets this long to send its whole request; a slow or stuck one is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// systemd passes activated sockets from this descriptor on (`sd_listen_fds`).
const LISTEN_FDS_START: i32 = 3;

pub struct DaemonOptions {
    pub docker_socket: PathBuf,
    pub gc_interval: Duration,
}

/// A parsed request and where its answer goes.
type Job = (Request, oneshot::Sender<Result<Value>>);

pub async fn run(mut ctl: Controller, opts: DaemonOptions) -> Result<()> {
    let (listener, bound) = match activated_listener()? {
        Some(listener) => (listener, None),
        None => (bind(&opts.docker_socket)?, Some(opts.docker_socket.clone())),
    };
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::system("cannot catch SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::system("cannot catch SIGINT", e))?;
    let (tx, mut rx) = mpsc::channel::<Job>(64);
    let acceptor = tokio::spawn(accept(listener, tx));
    let mut gc = tokio::time::interval(opts.gc_interval);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    eprintln!("netpath daemon: serving the Docker plugin API");
    loop {
        tokio::select! {
            Some((req, reply)) = rx.recv() => {
                let answer = docker::handle(&mut ctl, req).await;
                // The client may have gone; its request was carried out all the same.
                let _ = reply.send(answer);
            }
            _ = gc.tick() => periodic_gc(&mut ctl).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    acceptor.abort();
    if let Some(path) = bound {
        let _ = std::fs::remove_file(path);
    }
    eprintln!("netpath daemon: stopped; the datapath stays up");
    Ok(())
}

/// Endpoints whose namespace died (a dockerd that restarted never said Leave). A failure is
/// reported and retried at the next tick. Connections are not walked: the datapath treats
/// those that are over as absent and the LRU reuses their room, so a walk of the whole table
/// would only hold up the requests queued behind it.
async fn periodic_gc(ctl: &mut Controller) {
    match ctl.gc().await {
        Ok(report) if !report.is_empty() => eprintln!("netpath daemon: gc: {}", json!(report)),
        Ok(_) => {}
        Err(e) => eprintln!("netpath daemon: gc: {e}"),
    }
}

/// The socket systemd passed (`LISTEN_PID` is us and `LISTEN_FDS` ≥ 1), if any.
fn activated_listener() -> Result<Option<UnixListener>> {
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
fn bind(path: &Path) -> Result<UnixListener> {
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

async fn accept(listener: UnixListener, tx: mpsc::Sender<Job>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, tx.clone()));
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                eprintln!("netpath daemon: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One request per connection. Garbage, unknown methods and bodies that do not parse get an
/// error answer; a client that hangs up or stalls is dropped. None of it reaches the
/// controller.
async fn serve(mut stream: UnixStream, tx: mpsc::Sender<Job>) {
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
                if tx.send((parsed, reply)).await.is_err() {
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
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, http::write_response(&mut stream, status, &body)).await;
}
