//! `np-blindack`: whether an established, idle TCP connection survives a flood of spoofed
//! SYNs, each followed by a blind ACK (one that acknowledges nothing the server sent), for the
//! bench's conntrack-pressure scenario. Bounded in tuples and in time, whichever ends first;
//! sends only to the address it is given, from inside the bench's own namespace.
//!
//! ```text
//! np-blindack --addr IP:PORT --iface NAME --dst-mac MAC --spoof A.B.C --tuples N --seconds S --idle S
//! ```
//!
//! It connects to `IP:PORT` (an np-connrate server), leaves the connection idle for `--idle`
//! seconds, floods `IP:PORT` from sources `A.B.C.100`-`A.B.C.107` (raw frames on `--iface` to
//! `--dst-mac`; nobody answers for them) and then sends its request on the idle connection. It
//! prints one JSON line: tuples flooded, how long that took, their rate, and whether the idle
//! connection still got its response (`survived`, and `error` when it did not).
//!
//! The flood goes in bursts: a burst's SYNs, a pause for the server's SYN-ACKs to pass, then
//! the burst's ACKs. A burst's connections fit a table of unanswered opens; what the ACKs do
//! to them decides whether the whole flood fits.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::ExitCode,
    time::{Duration, Instant},
};

const BURST: u32 = 2048;
const PAUSE: Duration = Duration::from_millis(30);
/// np-connrate's request and response size.
const MESSAGE: usize = 64;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

fn main() -> ExitCode {
    match run(&std::env::args().skip(1).collect::<Vec<_>>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("np-blindack: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` from the arguments, parsed.
fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Result<T, String> {
    let i = args.iter().position(|a| a == name).ok_or(format!("{name} is required"))?;
    let value = args.get(i + 1).ok_or(format!("{name} needs a value"))?;
    value.parse().map_err(|_| format!("{name}: cannot parse {value:?}"))
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = s.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.try_into().map_err(|_| format!("--dst-mac: {s:?} is not a MAC address"))
}

struct Flood {
    wire: Wire,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    spoof: [u8; 3],
    to: SocketAddr,
}

fn run(args: &[String]) -> Result<(), String> {
    let to: SocketAddr = flag(args, "--addr")?;
    let iface: String = flag(args, "--iface")?;
    let dst_mac = parse_mac(&flag::<String>(args, "--dst-mac")?)?;
    let spoof: Ipv4Addr =
        format!("{}.0", flag::<String>(args, "--spoof")?).parse().map_err(|_| "--spoof takes A.B.C")?;
    let tuples: u32 = flag(args, "--tuples")?;
    let seconds: u64 = flag(args, "--seconds")?;
    let idle: u64 = flag(args, "--idle")?;
    if seconds == 0 || seconds > 120 || idle > 60 || tuples > 1_000_000 {
        return Err("--seconds 1 to 120, --idle at most 60, --tuples at most 1000000".into());
    }
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| format!("connect {to}: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    let wire = Wire::open(&iface)?;
    let [a, b, c, _] = spoof.octets();
    let flood = Flood { src_mac: wire.mac, wire, dst_mac, spoof: [a, b, c], to };
    std::thread::sleep(Duration::from_secs(idle));
    let started = Instant::now();
    let sent = flood.run(tuples, started + Duration::from_secs(seconds));
    let secs = started.elapsed().as_secs_f64();
    let outcome = exchange(&mut conn);
    let error = outcome.as_ref().err().map_or("null".into(), |e| format!("{e:?}"));
    println!(
        "{{\"tuples\":{sent},\"seconds\":{secs:.3},\"per_second\":{:.0},\"survived\":{},\"error\":{error}}}",
        f64::from(sent) / secs,
        outcome.is_ok()
    );
    Ok(())
}

/// The request and its response on the connection that sat through the flood.
fn exchange(conn: &mut TcpStream) -> Result<(), String> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    conn.write_all(&[b'q'; MESSAGE]).map_err(|e| format!("request: {e}"))?;
    let mut response = [0u8; MESSAGE];
    conn.read_exact(&mut response).map_err(|e| format!("response: {e}"))
}

impl Flood {
    /// Floods up to `tuples` tuples until `deadline`; the tuples whose SYN and ACK both went.
    fn run(&self, tuples: u32, deadline: Instant) -> u32 {
        let mut n = 0;
        while n < tuples && Instant::now() < deadline {
            let burst = n..(n + BURST).min(tuples);
            burst.clone().for_each(|m| self.wire.send(&self.frame(m, blind(m), 0, TCP_SYN)));
            std::thread::sleep(PAUSE);
            burst.clone().for_each(|m| self.wire.send(&self.frame(m, blind(m).wrapping_add(1), blind(m), TCP_ACK)));
            n = burst.end;
        }
        n
    }

    /// A segment of tuple `n`: source `A.B.C.(100 + n / 60000 % 8)`, port `1024 + n % 60000`.
    fn frame(&self, n: u32, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
        let [a, b, c] = self.spoof;
        let src = Ipv4Addr::new(a, b, c, 100 + (n / 60_000 % 8) as u8);
        let SocketAddr::V4(to) = self.to else { unreachable!("--addr is parsed as IPv4 by the caller") };
        let sport = 1024 + (n % 60_000) as u16;
        let mut tcp = Vec::with_capacity(20);
        tcp.extend(sport.to_be_bytes());
        tcp.extend(to.port().to_be_bytes());
        tcp.extend(seq.to_be_bytes());
        tcp.extend(ack.to_be_bytes());
        tcp.extend([5 << 4, flags]);
        tcp.extend(64240u16.to_be_bytes());
        tcp.extend([0, 0, 0, 0]);
        let pseudo = [&src.octets()[..], &to.ip().octets(), &[0, 6], &20u16.to_be_bytes()].concat();
        let sum = checksum(&[&pseudo, &tcp]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 40, (n >> 8) as u8, n as u8, 0x40, 0, 64, 6, 0, 0];
        ip.extend(src.octets());
        ip.extend(to.ip().octets());
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        [&self.dst_mac[..], &self.src_mac, &[0x08, 0x00], &ip, &tcp].concat()
    }
}

/// An acknowledgement number no answer carries (the server's initial sequence numbers are
/// random: one in 2^32 would match).
fn blind(n: u32) -> u32 {
    n.wrapping_mul(2_654_435_761) ^ 0x5a5a_5a5a
}

/// The Internet checksum of the concatenated parts (each of even length but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        for pair in part.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw `AF_PACKET` socket bound to one interface, and that interface's MAC.
struct Wire {
    fd: OwnedFd,
    ifindex: i32,
    mac: [u8; 6],
}

impl Wire {
    fn open(iface: &str) -> Result<Self, String> {
        let name = std::ffi::CString::new(iface).map_err(|_| "--iface: a name without NUL")?;
        // SAFETY: plain system calls on a socket this function owns.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(format!("AF_PACKET socket: {}", std::io::Error::last_os_error()));
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(format!("no interface {iface} here"));
        }
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
            return Err(format!("{iface}'s MAC: {}", std::io::Error::last_os_error()));
        }
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let mac = [hw[0], hw[1], hw[2], hw[3], hw[4], hw[5]].map(|b| b as u8);
        Ok(Self { fd, ifindex, mac })
    }

    /// Sends one frame, waiting while the socket's queue is full.
    fn send(&self, frame: &[u8]) {
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        let addr = (&to as *const libc::sockaddr_ll).cast();
        // SAFETY: `frame` and `to` are alive for the call.
        while unsafe { libc::sendto(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0, addr, len) } < 0 {
            std::thread::yield_now();
        }
    }
}
