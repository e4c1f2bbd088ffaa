//! `--metrics ADDRESS:PORT`: Prometheus scrapes `GET /metrics` over TCP. Like the plugin
//! socket, each connection is read (bounded in size and time) on its own task and only a
//! well-formed request reaches the controller's task.
use std::net::SocketAddr;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};

use super::{Job, REQUEST_TIMEOUT};
use crate::{
    error::{Context, Result},
    frontend::http,
    view::metrics::CONTENT_TYPE,
};

const PATH: &str = "/metrics";
/// Refusals and errors are one line of plain text.
const TEXT: &str = "text/plain; charset=utf-8";

pub(super) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.context(|| format!("cannot serve metrics on {addr}"))
}

pub(super) async fn serve(mut stream: TcpStream, tx: mpsc::Sender<Job>) {
    let (status, content_type, body) =
        match tokio::time::timeout(REQUEST_TIMEOUT, http::read_request(&mut stream)).await {
            Err(_) => (408, TEXT, "request not received in time\n".to_string()),
            Ok(Err(http::Refused { status: None, .. })) => return,
            Ok(Err(http::Refused { status: Some(status), reason })) => (status, TEXT, format!("{reason}\n")),
            Ok(Ok(req)) if req.method != "GET" => (405, TEXT, format!("{PATH} takes GET\n")),
            // A query string (`?name[]=...`) selects nothing here: the whole page is served.
            Ok(Ok(req)) if req.path.split('?').next() != Some(PATH) => {
                (404, TEXT, format!("not found; the metrics are at {PATH}\n"))
            }
            Ok(Ok(_)) => {
                let (reply, answer) = oneshot::channel();
                if tx.send(Job::Metrics(reply)).await.is_err() {
                    return;
                }
                match answer.await {
                    Ok(Ok(page)) => (200, CONTENT_TYPE, page),
                    Ok(Err(e)) => (500, TEXT, format!("{e}\n")),
                    Err(_) => return,
                }
            }
        };
    let reply = http::write_response(&mut stream, status, content_type, body.as_bytes());
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, reply).await;
}
