//! Just enough HTTP/1.1 for the daemon's two servers, Docker's plugin client (one POST with a
//! `Content-Length` body) and a Prometheus scraper (one GET): one request per connection,
//! answered with `Connection: close`. Everything else is refused with a status, never a panic:
//! the peer may send garbage, stop half-way or never finish.
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Requests are small JSON documents or bodiless GETs; anything larger is refused.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// Why a request could not be read: an HTTP status to answer with, or `None` when the peer
/// went away and nobody is left to answer.
#[derive(Debug)]
pub struct Refused {
    pub status: Option<u16>,
    pub reason: String,
}

fn refused(status: u16, reason: impl Into<String>) -> Refused {
    Refused { status: Some(status), reason: reason.into() }
}

pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, Refused> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(refused(431, "request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await.map_err(|e| Refused { status: None, reason: e.to_string() })?;
        if n == 0 {
            return Err(Refused { status: None, reason: "connection closed before the request head ended".into() });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| refused(400, "request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path), Some(version), None) = (start.next(), start.next(), start.next(), start.next())
    else {
        return Err(refused(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(refused(505, "only HTTP/1.x is spoken here"));
    }
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| refused(400, "malformed header"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| refused(400, "bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity") {
            return Err(refused(411, "chunked bodies are not accepted; send Content-Length"));
        }
    }
    let (method, path) = (method.to_string(), path.to_string());
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(refused(413, "request body too large"));
    }
    let mut body = buf.split_off(head_end + 4);
    if body.len() > length {
        return Err(refused(400, "more bytes than Content-Length"));
    }
    let have = body.len();
    body.resize(length, 0);
    r.read_exact(&mut body[have..])
        .await
        .map_err(|e| Refused { status: None, reason: format!("body cut short: {e}") })?;
    Ok(Request { method, path, body })
}

pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> Result<Request, Refused> {
        let mut r = raw;
        read_request(&mut r).await
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn requests_and_refusals() {
        block_on(async {
            let ok = parse(b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
            assert_eq!(
                (ok.method.as_str(), ok.path.as_str(), ok.body.as_slice()),
                ("POST", "/Plugin.Activate", &b"{}"[..])
            );
            assert_eq!(parse(b"garbage\r\n\r\n").await.unwrap_err().status, Some(400));
            assert_eq!(parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").await.unwrap_err().status, Some(400));
            assert_eq!(
                parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").await.unwrap_err().status,
                Some(411)
            );
            // Half a request: the peer is gone, nobody to answer.
            assert_eq!(parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}").await.unwrap_err().status, None);
            assert_eq!(parse(b"POST / HT").await.unwrap_err().status, None);
        });
    }
}
