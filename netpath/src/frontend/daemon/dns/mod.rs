//! The daemon's resolver: containers ask their gateway (port 53, UDP and TCP) for the names of
//! their networks' endpoints; `dns_steer` hands those queries to two sockets of this process
//! before the kernel's own lookup could pick a host resolver bound to `*:53`. The sockets are
//! bound where nothing else is sent (`LISTEN`), the UDP one on port 53, as its replies must
//! come from there, the TCP one on any port (an accepted connection keeps the address the
//! client dialled). When the daemon stops or dies, sockets and steering go with it, and a
//! container's query meets the kernel: a port unreachable at once, not a timeout.
mod answer;
mod upstream;

use std::{
    io::IoSlice,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd, OwnedFd, RawFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn, bind,
    listen, recvmsg, sendmsg, setsockopt, socket, sockopt,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, Interest},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
    task::JoinHandle,
    time::timeout,
};

pub use upstream::MAX_UPSTREAMS;

use crate::{
    core::{
        Controller,
        resolver::{Answering, Directory},
    },
    error::{Context, Error, Result},
    view::metrics::{DnsQueries, QueryResult},
};
use answer::Outcome;
use hickory_proto::op::{ResponseCode, ResponseCode::ServFail};

/// Where the resolver's sockets are bound: a loopback address no host service uses, so the
/// kernel's own lookup never hands them anything but what `dns_steer` sends.
pub const LISTEN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const DNS_PORT: u16 = 53;
/// Queries handed to the upstreams at once; beyond that a client gets `SERVFAIL` at once, so
/// a container asking in a loop cannot make the daemon hold sockets without bound.
const MAX_FORWARDS: usize = 256;
/// TCP clients served at once, and how long one may take to send a query.
const MAX_TCP_CLIENTS: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The resolver, serving for as long as it lives.
pub struct Resolver {
    _answering: Answering,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// What every query needs: the names, the upstreams, room to forward, and the counts.
struct Service {
    directory: Mutex<Directory>,
    upstreams: Vec<SocketAddr>,
    forwards: Semaphore,
    queries: Arc<DnsQueries>,
}

/// What the directory made of a query.
enum Local {
    /// The reply, if the query deserves one.
    Done(Option<Vec<u8>>),
    /// For the upstreams.
    Forward,
}

impl Service {
    /// The directory's answer, counted; no waiting on anything but the directory.
    fn answer_locally(&self, from: Ipv4Addr, query: &[u8]) -> Local {
        let mut directory = self.directory.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = answer::answer(&mut directory, from, query).unwrap_or_else(|e| {
            eprintln!("netpath daemon: dns: {e}");
            Outcome::Reply(answer::servfail(query))
        });
        drop(directory);
        match outcome {
            Outcome::Reply(reply) => {
                self.queries.record(local_result(&reply));
                Local::Done(Some(reply))
            }
            Outcome::Ignore => {
                self.queries.record(QueryResult::Malformed);
                Local::Done(None)
            }
            Outcome::Forward => Local::Forward,
        }
    }

    /// The upstreams' answer when there is room to ask, counted.
    async fn forward(&self, query: &[u8]) -> Vec<u8> {
        let (reply, result) = match self.forwards.try_acquire() {
            Ok(_permit) => {
                let reply = upstream::forward(&self.upstreams, query).await;
                let failed = rcode(&reply) == Some(ServFail);
                (reply, if failed { QueryResult::UpstreamFailed } else { QueryResult::Forwarded })
            }
            Err(_) => (answer::servfail(query), QueryResult::Busy),
        };
        self.queries.record(result);
        reply
    }

    /// The reply to `query`: the directory's, or the upstreams'.
    async fn reply(&self, from: Ipv4Addr, query: &[u8]) -> Option<Vec<u8>> {
        match self.answer_locally(from, query) {
            Local::Done(reply) => reply,
            Local::Forward => Some(self.forward(query).await),
        }
    }
}

/// The response code of a reply, from its header.
fn rcode(reply: &[u8]) -> Option<ResponseCode> {
    reply.get(3).map(|b| ResponseCode::from_low(b & 0x0f))
}

/// What a reply of the directory's says about the query.
fn local_result(reply: &[u8]) -> QueryResult {
    let answers = reply.get(6..8).map_or(0, |n| u16::from_be_bytes([n[0], n[1]]));
    match rcode(reply) {
        Some(ResponseCode::NoError) if answers > 0 => QueryResult::Answered,
        Some(ResponseCode::NoError) => QueryResult::NoData,
        Some(ResponseCode::NXDomain) => QueryResult::NxDomain,
        Some(ResponseCode::Refused) => QueryResult::Refused,
        _ => QueryResult::Malformed,
    }
}

/// Opens the resolver's sockets, steers containers' queries to them and serves them.
/// `upstreams`: where other names are asked; `None`: the host's `resolv.conf`.
pub async fn start(
    ctl: &mut Controller,
    upstreams: Option<Vec<SocketAddr>>,
    queries: Arc<DnsQueries>,
) -> Result<Resolver> {
    let upstreams = match upstreams {
        Some(given) => given,
        None => upstream::from_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
    };
    let udp = udp_socket()?;
    let tcp = tcp_listener()?;
    let answering = ctl.steer_dns(&udp, &tcp)?;
    let service = Arc::new(Service {
        directory: Mutex::new(Directory::open(ctl.paths())?),
        upstreams,
        forwards: Semaphore::new(MAX_FORWARDS),
        queries,
    });
    let udp = UdpSocket::from_std(std::net::UdpSocket::from(udp)).context(|| "cannot serve DNS over UDP")?;
    let tcp = TcpListener::from_std(std::net::TcpListener::from(tcp)).context(|| "cannot serve DNS over TCP")?;
    let tasks = vec![tokio::spawn(serve_udp(Arc::new(udp), service.clone())), tokio::spawn(serve_tcp(tcp, service))];
    Ok(Resolver { _answering: answering, tasks })
}

/// Bound with `SO_REUSEADDR` (a host dnsmasq on `*:53` sets it too) and `IP_FREEBIND` (the
/// loopback of a namespace may be down), receiving each query's destination (`IP_PKTINFO`).
fn udp_socket() -> Result<OwnedFd> {
    let fd = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
        .context(|| "cannot open the resolver's UDP socket")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context(|| "SO_REUSEADDR")?;
    setsockopt(&fd, sockopt::IpFreebind, &true).context(|| "IP_FREEBIND")?;
    setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).context(|| "IP_PKTINFO")?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(LISTEN, DNS_PORT))).map_err(|e| {
        Error::system(format!("cannot bind the resolver to {LISTEN}:{DNS_PORT} (UDP); is another resolver bound there without SO_REUSEADDR? run the daemon with --no-dns to go without names"), e)
    })?;
    Ok(fd)
}

fn tcp_listener() -> Result<OwnedFd> {
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
        .context(|| "cannot open the resolver's TCP socket")?;
    setsockopt(&fd, sockopt::IpFreebind, &true).context(|| "IP_FREEBIND")?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(LISTEN, 0)))
        .context(|| format!("cannot bind the resolver's TCP socket to {LISTEN}"))?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN)).context(|| "cannot listen for DNS over TCP")?;
    Ok(fd)
}

/// One datagram per query; the reply leaves from the address the query was sent to (the
/// gateway, `IP_PKTINFO`), port 53.
async fn serve_udp(socket: Arc<UdpSocket>, service: Arc<Service>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let received = socket.async_io(Interest::READABLE, || receive(socket.as_raw_fd(), &mut buf)).await;
        let Ok((len, from, to)) = received else {
            pause_after_error().await;
            continue;
        };
        // Names of netpath's are answered on the spot; only a forward waits, on a task.
        match service.answer_locally(*from.ip(), &buf[..len]) {
            Local::Done(Some(reply)) => reply_udp(&socket, reply, from, to).await,
            Local::Done(None) => {}
            Local::Forward => {
                let query = buf[..len].to_vec();
                let (socket, service) = (socket.clone(), service.clone());
                tokio::spawn(async move { reply_udp(&socket, service.forward(&query).await, from, to).await });
            }
        }
    }
}

async fn reply_udp(socket: &UdpSocket, reply: Vec<u8>, to: SocketAddrV4, from: Ipv4Addr) {
    let reply = answer::for_udp(reply);
    let _ = socket.async_io(Interest::WRITABLE, || send(socket.as_raw_fd(), &reply, to, from)).await;
}

/// A socket that fails again at once (out of file descriptors or memory) would otherwise
/// spin the daemon's only thread.
async fn pause_after_error() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// A datagram, who sent it and where to.
fn receive(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddrV4, Ipv4Addr)> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(libc::in_pktinfo);
    let msg = recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut space), MsgFlags::empty())?;
    let from = msg.address.map(SocketAddrV4::from).ok_or(std::io::ErrorKind::InvalidData)?;
    let to = msg
        .cmsgs()?
        .find_map(|c| match c {
            ControlMessageOwned::Ipv4PacketInfo(info) => Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
            _ => None,
        })
        .ok_or(std::io::ErrorKind::InvalidData)?;
    Ok((msg.bytes, from, to))
}

fn send(fd: RawFd, reply: &[u8], to: SocketAddrV4, from: Ipv4Addr) -> std::io::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr { s_addr: u32::from(from).to_be() },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let iov = [IoSlice::new(reply)];
    Ok(sendmsg(fd, &iov, &[ControlMessage::Ipv4PacketInfo(&info)], MsgFlags::empty(), Some(&SockaddrIn::from(to)))?)
}

async fn serve_tcp(listener: TcpListener, service: Arc<Service>) {
    let clients = Arc::new(Semaphore::new(MAX_TCP_CLIENTS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            pause_after_error().await;
            continue;
        };
        let SocketAddr::V4(peer) = peer else { continue };
        // A client over the limit is closed at once rather than queued.
        let Ok(permit) = clients.clone().try_acquire_owned() else { continue };
        let service = service.clone();
        tokio::spawn(async move {
            let _ = serve_connection(stream, *peer.ip(), &service).await;
            drop(permit);
        });
    }
}

/// Queries on one connection, each with its two-byte length, until the client stops.
async fn serve_connection(mut stream: TcpStream, from: Ipv4Addr, service: &Service) -> std::io::Result<()> {
    loop {
        let len = match timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(len) => len?,
            Err(_) => return Ok(()),
        };
        let mut query = vec![0u8; usize::from(len)];
        timeout(TCP_IDLE, stream.read_exact(&mut query)).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
        let Some(reply) = service.reply(from, &query).await else { return Ok(()) };
        let len = u16::try_from(reply.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
        stream.write_all(&[&len.to_be_bytes()[..], &reply].concat()).await?;
    }
}
