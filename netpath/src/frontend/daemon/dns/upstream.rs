//! The upstream resolvers: the host's (its `resolv.conf`) unless the daemon was given others.
//! Each is asked in turn with a timeout shorter than a client's (glibc waits 5 s), over UDP,
//! and again over TCP when its answer was truncated; when none answers the client gets
//! `SERVFAIL` at once rather than a silence it would wait out.
use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use hickory_proto::op::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use super::answer;

/// At most this many upstreams are asked, as glibc asks at most three.
pub const MAX_UPSTREAMS: usize = 3;
/// How long one upstream gets: three of them stay under a client's five seconds.
const PATIENCE: Duration = Duration::from_millis(1500);
const DNS_PORT: u16 = 53;

/// The IPv4 nameservers of a `resolv.conf`, at most `MAX_UPSTREAMS`.
pub fn from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<Ipv4Addr>().ok())
        .map(|ip| SocketAddr::from((ip, DNS_PORT)))
        .take(MAX_UPSTREAMS)
        .collect()
}

/// The upstreams' answer to `query`, or `SERVFAIL` when none gave one.
pub async fn forward(upstreams: &[SocketAddr], query: &[u8]) -> Vec<u8> {
    let id = answer::id_of(query).unwrap_or(0);
    for upstream in upstreams {
        if let Ok(Some(reply)) = timeout(PATIENCE, ask(*upstream, id, query)).await {
            return reply;
        }
    }
    answer::servfail(query)
}

/// One upstream's answer: over UDP, then over TCP when it was truncated.
async fn ask(upstream: SocketAddr, id: u16, query: &[u8]) -> Option<Vec<u8>> {
    let udp = over_udp(upstream, id, query).await.ok()?;
    if !Message::from_vec(&udp).is_ok_and(|m| m.truncated()) {
        return Some(udp);
    }
    over_tcp(upstream, query).await.ok()
}

async fn over_udp(upstream: SocketAddr, id: u16, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Only the answer to this query: a stray or spoofed datagram is not it.
        if answer::id_of(&buf[..n]) == Some(id) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn over_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    stream.write_all(&[&len.to_be_bytes()[..], query].concat()).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_at_most_three_ipv4_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver ::1\nnameserver  10.0.0.2 \nnameserver bogus\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n";
        let got: Vec<String> = from_resolv_conf(text).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"]);
    }
}
