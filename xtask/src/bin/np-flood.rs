//! `np-flood`: unsolicited 64-byte UDP datagrams at full speed, for the bench's flood scenario.
//! Bounded in packets and in time, whichever ends first; sends only to the address it is given,
//! from inside the bench's own namespace.
//!
//! ```text
//! np-flood --addr IP --ports FIRST-LAST --packets N --seconds S   # prints one JSON line
//! ```
//!
//! The line holds what was sent and when the flood began and ended (Unix time, seconds), so
//! the bench can tell whether the flood lasted the whole measurement it was meant to load.
//!
//! Datagrams go out in batches of `BATCH` with `sendmmsg`, each to the next port of the range,
//! so a receiver sees many flows, none of them asked for.
use std::{
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd,
    process::ExitCode,
    time::{Duration, Instant},
};

const PAYLOAD: usize = 64;
const BATCH: usize = 64;

fn main() -> ExitCode {
    match run(&std::env::args().skip(1).collect::<Vec<_>>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("np-flood: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` from the arguments.
fn flag<'a>(args: &'a [String], name: &str) -> Result<&'a str, String> {
    let i = args.iter().position(|a| a == name).ok_or(format!("{name} is required"))?;
    args.get(i + 1).map(String::as_str).ok_or(format!("{name} needs a value"))
}

fn parse<T: std::str::FromStr>(args: &[String], name: &str) -> Result<T, String> {
    let value = flag(args, name)?;
    value.parse().map_err(|_| format!("{name}: cannot parse {value:?}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let addr: Ipv4Addr = parse(args, "--addr")?;
    let (first, last) = flag(args, "--ports")?.split_once('-').ok_or("--ports takes FIRST-LAST")?;
    let first: u16 = first.parse().map_err(|_| "--ports: bad first port")?;
    let last: u16 = last.parse().map_err(|_| "--ports: bad last port")?;
    let packets: u64 = parse(args, "--packets")?;
    let seconds: u64 = parse(args, "--seconds")?;
    if first == 0 || last < first || seconds == 0 || seconds > 600 {
        return Err("--ports must be FIRST-LAST with 0 < FIRST <= LAST, --seconds 1 to 600".into());
    }
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| format!("bind: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let payload = [0x5au8; PAYLOAD];
    let span = u32::from(last - first) + 1;
    let (mut sent, mut next) = (0u64, 0u32);
    let (started, began) = (Instant::now(), unix_now());
    while sent < packets && Instant::now() < deadline {
        let batch = (packets - sent).min(BATCH as u64) as usize;
        let mut dests = [unsafe { std::mem::zeroed::<libc::sockaddr_in>() }; BATCH];
        let mut iovs = [libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: PAYLOAD }; BATCH];
        let mut msgs = [unsafe { std::mem::zeroed::<libc::mmsghdr>() }; BATCH];
        for i in 0..batch {
            dests[i].sin_family = libc::AF_INET as libc::sa_family_t;
            dests[i].sin_port = (first + (next % span) as u16).to_be();
            dests[i].sin_addr.s_addr = u32::from(addr).to_be();
            next = next.wrapping_add(1);
            msgs[i].msg_hdr.msg_name = (&mut dests[i] as *mut libc::sockaddr_in).cast();
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` points into `dests`, `iovs` and `payload`, all alive for the call.
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), batch as u32, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // A full queue or an ICMP error reported back: the flood goes on.
            if !matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED)) {
                return Err(format!("sendmmsg: {e}"));
            }
            continue;
        }
        sent += n as u64;
    }
    let (secs, ended) = (started.elapsed().as_secs_f64(), unix_now());
    println!(
        "{{\"sent\":{sent},\"seconds\":{secs:.3},\"per_second\":{:.0},\"began\":{began:.3},\"ended\":{ended:.3}}}",
        sent as f64 / secs
    );
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
