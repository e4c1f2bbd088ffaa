//! `netpath daemon`: one long-running process that owns one [`Controller`] on one task
//! (rusqlite is not `Sync`), serves the Docker plugin API on a unix socket (`plugin`) and,
//! with `--metrics`, Prometheus on TCP (`metrics`), and garbage-collects periodically.
//! Connections are served by their own tasks, which only read and parse; everything that
//! needs the controller goes to its task over a channel, one job at a time. The datapath never
//! depends on this process: it stays pinned and working when the daemon stops or dies.
//!
//! A scrape is a job on that channel too, rather than a second, read-only opening of the pins
//! and the database: the controller already has the maps open and the endpoints' names and
//! networks in its store, and the operation metrics are kept where the operations run. A
//! scrape waits for the operation in progress, and an operation for the scrape in progress;
//! reading the counters costs a few milliseconds, walking full conntrack tables under a second.
pub mod dns;
mod metrics;
mod plugin;

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration, time::Instant};

use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use crate::{
    core::controller::Controller,
    error::Error,
    error::Result,
    frontend::docker,
    frontend::docker::Request,
    view::metrics::{DnsQueries, Operations},
};

pub const DEFAULT_DOCKER_SOCKET: &str = "/run/docker/plugins/netpath.sock";
/// A client gets this long to send its whole request; a slow or stuck one is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct DaemonOptions {
    pub docker_socket: PathBuf,
    pub gc_interval: Duration,
    /// Where to serve Prometheus metrics; `None`: not at all.
    pub metrics: Option<SocketAddr>,
    /// Whether to resolve containers' names (`Some`), and through which upstreams (`None`
    /// inside: the host's).
    pub dns: Option<Option<Vec<SocketAddr>>>,
}

/// What a connection's task asks of the controller's task, and where the answer goes.
enum Job {
    Plugin(Request, oneshot::Sender<Result<Value>>),
    Metrics(oneshot::Sender<Result<String>>),
}

pub async fn run(mut ctl: Controller, opts: DaemonOptions) -> Result<()> {
    // Bound before the plugin socket, so that a metrics address in use leaves nothing behind.
    let scrapes = match opts.metrics {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let queries = Arc::new(DnsQueries::default());
    // Serving before the plugin socket is bound, so that a client that finds the socket finds
    // the names too. Without names the daemon still serves Docker: one line says why.
    let _resolver = match opts.dns {
        Some(upstreams) => match dns::start(&mut ctl, upstreams, queries.clone()).await {
            Ok(resolver) => {
                eprintln!("netpath daemon: answering containers' DNS queries to their gateway");
                Some(resolver)
            }
            Err(e) => {
                eprintln!("netpath daemon: not resolving containers' names: {e}");
                None
            }
        },
        None => None,
    };
    let (listener, bound) = match plugin::activated_listener()? {
        Some(listener) => (listener, None),
        None => (plugin::bind(&opts.docker_socket)?, Some(opts.docker_socket.clone())),
    };
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::system("cannot catch SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::system("cannot catch SIGINT", e))?;
    let (tx, mut rx) = mpsc::channel::<Job>(64);
    let mut acceptors = vec![tokio::spawn(accept(listener, tx.clone(), plugin::serve))];
    if let Some(scrapes) = scrapes {
        acceptors.push(tokio::spawn(accept(scrapes, tx, metrics::serve)));
    }
    let mut operations = Operations::default();
    let mut gc = tokio::time::interval(opts.gc_interval);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    eprintln!("netpath daemon: serving the Docker plugin API");
    if let Some(addr) = opts.metrics {
        eprintln!("netpath daemon: serving metrics at http://{addr}/metrics");
    }
    loop {
        tokio::select! {
            Some(job) = rx.recv() => run_job(&mut ctl, &mut operations, &queries, job).await,
            _ = gc.tick() => periodic_gc(&mut ctl, &mut operations).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    for acceptor in acceptors {
        acceptor.abort();
    }
    if let Some(path) = bound {
        let _ = std::fs::remove_file(path);
    }
    eprintln!("netpath daemon: stopped; the datapath stays up");
    Ok(())
}

async fn run_job(ctl: &mut Controller, operations: &mut Operations, queries: &DnsQueries, job: Job) {
    // The client may have gone; its request was carried out all the same.
    match job {
        Job::Plugin(req, reply) => {
            let operation = req.operation();
            let started = Instant::now();
            let answer = docker::handle(ctl, req).await;
            operations.record(operation, started.elapsed(), answer.as_ref().err());
            let _ = reply.send(answer);
        }
        Job::Metrics(reply) => {
            let _ = reply.send(crate::view::metrics::render(ctl, operations, queries).await);
        }
    }
}

/// Endpoints whose namespace died (a dockerd that restarted never said Leave). A failure is
/// reported and retried at the next tick. Connections are not walked: the datapath treats
/// those that are over as absent and the LRU reuses their room, so a walk of the whole table
/// would only hold up the requests queued behind it.
async fn periodic_gc(ctl: &mut Controller, operations: &mut Operations) {
    let started = Instant::now();
    let result = ctl.gc().await;
    operations.record("gc", started.elapsed(), result.as_ref().err());
    match result {
        Ok(report) if !report.is_empty() => eprintln!("netpath daemon: gc: {}", json!(report)),
        Ok(_) => {}
        Err(e) => eprintln!("netpath daemon: gc: {e}"),
    }
}

/// A listener whose connections are each served on a task of their own.
trait Listener: Send + 'static {
    type Stream: Send + 'static;
    fn next(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn next(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn next(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

async fn accept<L, F>(listener: L, tx: mpsc::Sender<Job>, serve: fn(L::Stream, mpsc::Sender<Job>) -> F)
where
    L: Listener,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.next().await {
            Ok(stream) => {
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
