//! A tiny HTTP/1.1 client over `std::net::TcpStream` for the agents' HTTP endpoints: one
//! request per connection (`Connection: close`), as HAProxy's checks and probes do.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Header lines as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The body (empty for HEAD and OPTIONS).
    pub body: String,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("body is not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` to `addr` (host:port) and reads the whole answer, within 5 s (40 s for
/// methods that change something).
pub fn request(addr: &str, method: &str, path: &str) -> Result<Answer, String> {
    request_with(addr, method, path, &[], "")
}

/// `request` with extra header lines (name, value) and a body (sent with its length).
pub fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, String> {
    // Calls that change something answer when the change is done (a switchover: up to 30 s).
    let timeout = Duration::from_secs(if matches!(method, "GET" | "HEAD" | "OPTIONS") { 5 } else { 40 });
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pgquorum-tests\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read from {addr}: {e}"))?;
    parse(&raw, method == "HEAD")
}

/// `GET path` on `addr`.
pub fn get(addr: &str, path: &str) -> Result<Answer, String> {
    request(addr, "GET", path)
}

fn parse(raw: &[u8], head: bool) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(raw);
    let (head_part, rest) =
        text.split_once("\r\n\r\n").ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head_part.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if head {
        String::new()
    } else if chunked {
        dechunk(rest)?
    } else {
        rest.to_string()
    };
    Ok(Answer { status, headers, body })
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk size")?;
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size:?}"))?;
        if n == 0 {
            return Ok(out);
        }
        let chunk = after.get(..n).ok_or("truncated chunk")?;
        out.push_str(chunk);
        rest = after.get(n + 2..).ok_or("truncated chunk end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_length_or_chunks_and_head_has_no_body() {
        let a = parse(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n{\"a\":1}",
            false,
        )
        .expect("parses");
        assert_eq!((a.status, a.header("content-type")), (503, Some("application/json")));
        assert_eq!(a.json().expect("json")["a"], 1);
        let c = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            false,
        )
        .expect("parses");
        assert_eq!(c.body, "abcde");
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true).expect("head").body, "");
        assert!(parse(b"garbage", false).is_err());
    }
}
