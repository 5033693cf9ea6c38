//! The request head, read and checked by the server before hyper sees it.
//!
//! hyper answers what it cannot parse itself (an oversized head: 431, a
//! malformed request: 400) with an empty body and offers no hook to change
//! that. Since keep-alive is off and the API takes no request body, a
//! connection carries exactly one request head: the server reads it here,
//! within `[api] header_timeout` and [`MAX_HEAD`] bytes, parses it with
//! httparse (hyper's own parser), and checks what hyper would refuse
//! (URI, body framing). Every refusal is a JSON-array error like the
//! routes'; hyper only ever gets a head it accepts, replayed through
//! [`super::io::Prefixed`].
//!
//! Parsing runs only when a read completes the request line or brings a
//! blank line, so a client sending its head byte by byte costs a bounded
//! amount of work, not a parse per byte.

use axum::http::{Method, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::errors::ApiFailure;

/// Largest request head accepted, in bytes (the token is its largest part,
/// at most 16 KiB).
pub const MAX_HEAD: usize = 64 * 1024;

/// Most header fields in a head (hyper's default).
pub const MAX_HEADERS: usize = 100;

/// Leading blank lines tolerated before the request line (RFC 9112 §2.2).
const MAX_LEADING_BLANK: usize = 16;

/// Why no head was obtained.
#[derive(Debug)]
pub enum HeadError {
    /// The client closed or failed before sending anything worth answering.
    Gone,
    /// The head is refused; the failure is the answer.
    Refused(ApiFailure),
}

/// What one look at the bytes received so far concludes.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A complete, acceptable head.
    Complete,
    /// More bytes are needed.
    Partial,
}

/// Reads one request head from `s`; returns every byte read (the head and
/// anything the client sent after it).
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut line_checked = false;
    loop {
        let room = MAX_HEAD - buf.len();
        if room == 0 {
            return Err(HeadError::Refused(too_large()));
        }
        let before = buf.len();
        buf.resize(before + room.min(16 * 1024), 0);
        let n = match s.read(&mut buf[before..]).await {
            Ok(n) => n,
            Err(_) => return Err(HeadError::Gone),
        };
        buf.truncate(before + n);
        if n == 0 {
            return Err(if before == 0 {
                HeadError::Gone
            } else {
                HeadError::Refused(ApiFailure::malformed(
                    "Connection closed before the request head was complete",
                ))
            });
        }
        let Some(start) = buf.iter().position(|b| !matches!(b, b'\r' | b'\n')) else {
            if buf.len() > MAX_LEADING_BLANK {
                return Err(HeadError::Refused(ApiFailure::malformed(
                    "Blank lines instead of a request",
                )));
            }
            continue;
        };
        // A blank line after the request line ends the head; only the new
        // bytes (and two before them) can hold a new one.
        let from = start.max(before.saturating_sub(2));
        let ends = has_blank_line(&buf[from..]);
        let new_line = !line_checked && buf[start..].contains(&b'\n');
        if ends || new_line {
            line_checked |= new_line;
            if check(&buf)? == Verdict::Complete {
                return Ok(buf);
            }
        }
    }
}

fn has_blank_line(b: &[u8]) -> bool {
    b.windows(2).any(|w| w == b"\n\n") || b.windows(3).any(|w| w == b"\n\r\n")
}

fn too_large() -> ApiFailure {
    ApiFailure::head_too_large(format!(
        "Request head larger than {} KiB or with more than {MAX_HEADERS} fields",
        MAX_HEAD / 1024
    ))
}

/// Parses what was received; refuses what hyper or the routes would.
fn check(buf: &[u8]) -> Result<Verdict, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let refuse = |f: ApiFailure| Err(HeadError::Refused(f));
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(Verdict::Partial),
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return refuse(too_large()),
        Err(e) => return refuse(ApiFailure::malformed(format!("Malformed request ({e})"))),
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return refuse(ApiFailure::malformed("Malformed request line"));
    };
    if method != Method::GET.as_str() && method != Method::HEAD.as_str() {
        return refuse(ApiFailure::method_not_allowed());
    }
    if path.parse::<Uri>().is_err() {
        return refuse(ApiFailure::malformed("Malformed request target"));
    }
    for h in req.headers.iter() {
        let body = if h.name.eq_ignore_ascii_case("transfer-encoding") {
            true
        } else if h.name.eq_ignore_ascii_case("content-length") {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                != Some(0)
        } else {
            false
        };
        if body {
            return refuse(ApiFailure::bad_parameter("Request body not accepted"));
        }
    }
    Ok(Verdict::Complete)
}

/// Writes `failure` as a complete HTTP/1.1 response and closes the write
/// side. Errors are ignored: the client may be gone, and the connection
/// ends here either way.
pub async fn answer<S: AsyncWrite + Unpin>(s: &mut S, failure: &ApiFailure) {
    let body = failure.body();
    let status: StatusCode = failure.status;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
         content-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        out.push_str("allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    let _ = s.write_all(out.as_bytes()).await;
    let _ = s.flush().await;
    let _ = s.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn feed(chunks: &[&[u8]]) -> Result<Vec<u8>, HeadError> {
        let (mut a, mut b) = tokio::io::duplex(256 * 1024);
        for c in chunks {
            a.write_all(c).await.unwrap();
        }
        drop(a);
        read_head(&mut b).await
    }

    fn status(r: Result<Vec<u8>, HeadError>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(HeadError::Gone) => 0,
            Err(HeadError::Refused(f)) => f.status.as_u16(),
        }
    }

    #[tokio::test]
    async fn heads() {
        let ok = b"GET /x?a=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\n\r\n";
        assert_eq!(feed(&[ok]).await.unwrap(), ok.to_vec());
        // Byte by byte, with leading blank lines and bare LF.
        let chunks: Vec<&[u8]> = b"\r\nGET / HTTP/1.1\nHost: a\n\n".chunks(1).collect();
        assert_eq!(status(feed(&chunks).await), 200);
        assert_eq!(status(feed(&[]).await), 0);
        assert_eq!(status(feed(&[b"GET / HT"]).await), 400);
        assert_eq!(status(feed(&[b"GARBAGE\r\n"]).await), 400);
        assert_eq!(status(feed(&[b"GET / HTTP/9.9\r\n\r\n"]).await), 400);
        assert_eq!(
            status(feed(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).await),
            400
        );
        assert_eq!(status(feed(&[b"\r\n".repeat(20).as_slice()]).await), 400);
        assert_eq!(status(feed(&[b"POST / HTTP/1.1\r\n\r\n"]).await), 405);
        let cl = b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n";
        assert_eq!(status(feed(&[cl]).await), 400);
        let te = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(feed(&[te]).await), 400);
        let zero = b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(status(feed(&[zero]).await), 200);
        // A head over the limit, and too many fields.
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100 * 1024));
        assert_eq!(status(feed(&[big.as_bytes()]).await), 431);
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(150));
        assert_eq!(status(feed(&[many.as_bytes()]).await), 431);
    }

    #[tokio::test]
    async fn answers_are_json_arrays() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        answer(&mut a, &too_large()).await;
        drop(a);
        let mut out = String::new();
        b.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v[0]["error"], "Request header fields too large");
    }
}
