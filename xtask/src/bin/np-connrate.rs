//! `np-connrate`: the TCP connection rate of a path, measured the way short-lived requests use
//! TCP: connect, send one request, read one response, and the server closes first (so the
//! client's ports never sit in TIME_WAIT and a run is not limited by the ephemeral range).
//!
//! ```text
//! np-connrate server --port PORT [--threads N]
//! np-connrate client --addr IP:PORT --seconds S [--threads N]   # prints one JSON line
//! np-connrate probe  --addr IP:PORT [--timeout-ms MS]           # exit status says
//! ```
//!
//! Only the standard library, so that it builds in seconds and adds nothing of its own to
//! what is measured.
use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// Request and response sizes: a small HTTP request line and status line.
const MESSAGE: usize = 64;
/// A client that cannot connect for this long gives up rather than spin.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => server(&args[1..]),
        Some("client") => client(&args[1..]),
        Some("probe") => probe(&args[1..]),
        _ => {
            Err("usage: np-connrate server|client|probe [--port P] [--addr IP:PORT] [--seconds S] [--threads N]".into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("np-connrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` from the arguments, parsed.
fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: Option<T>) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let value = args.get(i + 1).ok_or(format!("{name} needs a value"))?;
            value.parse().map_err(|_| format!("{name}: cannot parse {value:?}"))
        }
        None => default.ok_or(format!("{name} is required")),
    }
}

fn server(args: &[String]) -> Result<(), String> {
    let port: u16 = flag(args, "--port", None)?;
    let threads: usize = flag(args, "--threads", Some(4))?;
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind port {port}: {e}"))?;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let listener = listener.try_clone().expect("clone listener");
            thread::spawn(move || {
                loop {
                    if let Ok((stream, _)) = listener.accept() {
                        // A broken exchange is the client's business; keep serving.
                        let _ = serve(stream);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// How long the server waits for a request: the conntrack-pressure scenario's connection sits
/// idle through its flood before it sends one.
const REQUEST_WITHIN: Duration = Duration::from_secs(60);

fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_WITHIN))?;
    stream.set_nodelay(true)?;
    let mut request = [0u8; MESSAGE];
    stream.read_exact(&mut request)?;
    stream.write_all(&[b'r'; MESSAGE])
    // Dropping the stream closes it: the server closes first.
}

/// One request/response exchange on a new connection.
fn exchange(addr: &SocketAddr, timeout: Duration) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    stream.write_all(&[b'q'; MESSAGE])?;
    let mut response = Vec::with_capacity(MESSAGE);
    stream.read_to_end(&mut response)?;
    if response.len() != MESSAGE {
        return Err(io::Error::other(format!("response of {} bytes, expected {MESSAGE}", response.len())));
    }
    Ok(())
}

fn client(args: &[String]) -> Result<(), String> {
    let addr: SocketAddr = flag(args, "--addr", None)?;
    let seconds: f64 = flag(args, "--seconds", None)?;
    let threads: usize = flag(args, "--threads", Some(2))?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let failed = failed.clone();
            thread::spawn(move || {
                let (mut done, mut errors, mut last_ok) = (0u64, 0u64, Instant::now());
                let mut first_error = None;
                while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                    match exchange(&addr, Duration::from_secs(2)) {
                        Ok(()) => {
                            done += 1;
                            last_ok = Instant::now();
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e.to_string());
                            if last_ok.elapsed() > GIVE_UP_AFTER {
                                failed.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
                (done, errors, first_error)
            })
        })
        .collect();
    let (mut done, mut errors, mut first_error) = (0, 0, None);
    for w in workers {
        let (d, e, f) = w.join().map_err(|_| "a client thread panicked")?;
        done += d;
        errors += e;
        first_error = first_error.or(f);
    }
    let elapsed = start.elapsed().as_secs_f64();
    if failed.load(Ordering::Relaxed) || done == 0 {
        return Err(format!("no connection to {addr} completed: {}", first_error.unwrap_or_default()));
    }
    println!(
        "{{\"connections\": {done}, \"errors\": {errors}, \"seconds\": {elapsed:.3}, \"per_second\": {:.1}}}",
        done as f64 / elapsed
    );
    Ok(())
}

fn probe(args: &[String]) -> Result<(), String> {
    let addr: SocketAddr = flag(args, "--addr", None)?;
    let timeout: u64 = flag(args, "--timeout-ms", Some(2000))?;
    exchange(&addr, Duration::from_millis(timeout)).map_err(|e| format!("{addr}: {e}"))
}
