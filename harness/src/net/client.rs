//! The load generator's clients: a small blocking HTTP/1.1 client (one keep-alive connection
//! per worker thread, like wrk; SSE streams read piece by piece as they arrive) and a gRPC
//! client on a per-worker single-threaded runtime. Every failure is a [`NetError`] with a
//! short kind for counting.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The largest answer the client reads (headers and body together): beyond it the request
/// fails as `bad-response` instead of the load generator buffering without bound.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;
/// The longest status, header or chunk-size line.
const MAX_LINE_BYTES: usize = 16 << 10;

#[derive(Debug, Clone)]
pub struct NetError {
    /// `connect`, `timeout`, `io`, `http-503`, `bad-response`, `grpc-unavailable`, ...
    pub kind: String,
    pub message: String,
}

impl NetError {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> NetError {
        NetError {
            kind: kind.into(),
            message: message.into(),
        }
    }

    fn io(e: std::io::Error, what: &str) -> NetError {
        use std::io::ErrorKind::*;
        let kind = match e.kind() {
            WouldBlock | TimedOut => "timeout",
            ConnectionRefused => "connect",
            _ => "io",
        };
        NetError::new(kind, format!("{what}: {e}"))
    }
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// `http://host:port/base` split into what the clients need.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
    /// Path prefix, without a trailing slash ("" for the root).
    pub base: String,
}

impl Target {
    pub fn parse(url: &str, default_port: u16) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("grpc://"))
            .unwrap_or(url);
        if url.starts_with("https://") {
            return Err(format!(
                "{url}: TLS is not supported; use http:// on a trusted network"
            ));
        }
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("{url}: '{p}' is not a port number"))?,
            ),
            _ => (hostport.to_string(), default_port),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host (example: http://127.0.0.1:8000)"));
        }
        let addr = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {host} has no address"))?;
        Ok(Target {
            host,
            port,
            addr,
            base: path.trim_end_matches('/').to_string(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{}{}", self.host, self.port, self.base, path)
    }
}

/// A request, serialized once and sent as is on every call.
pub fn request_bytes(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut full = format!("{}{path}", target.base);
    if !full.starts_with('/') {
        full.insert(0, '/');
    }
    let mut r = format!(
        "{method} {full} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: harness-load\r\n",
        target.host, target.port
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" || !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive HTTP/1.1 connection, reopened when the server closes it.
pub struct Http1 {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    pub reconnects: u64,
}

enum Framing {
    Length(usize),
    Chunked,
    Close,
}

impl Http1 {
    pub fn new(target: &Target, timeout: Duration) -> Http1 {
        Http1 {
            addr: target.addr,
            timeout,
            conn: None,
            reconnects: 0,
        }
    }

    fn connection(&mut self) -> Result<(&mut BufReader<TcpStream>, bool), NetError> {
        let fresh = self.conn.is_none();
        if fresh {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)
                .map_err(|e| NetError::io(e, &format!("connecting to {}", self.addr)))?;
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(self.timeout));
            let _ = s.set_write_timeout(Some(self.timeout));
            self.conn = Some(BufReader::with_capacity(64 * 1024, s));
            self.reconnects += 1;
        }
        Ok((self.conn.as_mut().expect("connection just set"), !fresh))
    }

    /// Sends `request` and reads the whole answer.
    pub fn call(&mut self, request: &[u8]) -> Result<HttpResponse, NetError> {
        let mut body = Vec::new();
        let (status, headers) =
            self.exchange(request, &mut |piece: &[u8]| body.extend_from_slice(piece))?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// Sends `request` and hands each piece of the answer's body to `on_piece` as it is
    /// read (for server-sent events). Returns the status and headers. The whole exchange,
    /// sending included, has the client's timeout: a server that trickles its answer fails
    /// with `timeout` when it runs out, however often it sends a byte.
    pub fn exchange(
        &mut self,
        request: &[u8],
        on_piece: &mut dyn FnMut(&[u8]),
    ) -> Result<(u16, Vec<(String, String)>), NetError> {
        let deadline = Deadline::after(self.timeout);
        for attempt in 0..2 {
            let (conn, reused) = self.connection()?;
            let sent = deadline.arm_write(conn.get_ref()).and_then(|()| {
                conn.get_mut()
                    .write_all(request)
                    .map_err(|e| deadline.io(e, "sending the request"))
            });
            let mut budget = MAX_ANSWER_BYTES;
            let head = match sent {
                Ok(()) => read_head(conn, &deadline, &mut budget),
                Err(e) => Err(e),
            };
            match head {
                Ok(Some((status, headers, framing, close))) => {
                    let r = read_body(conn, framing, &deadline, &mut budget, on_piece);
                    if r.is_err() || close {
                        self.conn = None;
                    }
                    r?;
                    return Ok((status, headers));
                }
                // A kept-alive connection the server had closed: reopen once and resend
                // (never after a timeout: the server is slow, not gone).
                Ok(None) if reused && attempt == 0 => {
                    self.conn = None;
                }
                Err(e) if reused && attempt == 0 && e.kind != "timeout" => {
                    self.conn = None;
                }
                Ok(None) => {
                    self.conn = None;
                    return Err(NetError::new(
                        "io",
                        "the server closed the connection without answering",
                    ));
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        Err(NetError::new(
            "io",
            "the server closed the connection twice",
        ))
    }
}

type Head = (u16, Vec<(String, String)>, Framing, bool);

/// When one exchange must be over.
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    fn expired(&self) -> NetError {
        NetError::new(
            "timeout",
            format!(
                "no complete answer within {} (--timeout)",
                humantime::format_duration(self.timeout)
            ),
        )
    }

    /// The time left, or the timeout error when none is.
    fn left(&self) -> Result<Duration, NetError> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.expired())
        } else {
            Ok(left)
        }
    }

    /// Bounds the next read by the time left.
    fn arm_read(&self, s: &TcpStream) -> Result<(), NetError> {
        let left = self.left()?;
        s.set_read_timeout(Some(left))
            .map_err(|e| NetError::io(e, "setting the read timeout"))
    }

    fn arm_write(&self, s: &TcpStream) -> Result<(), NetError> {
        let left = self.left()?;
        s.set_write_timeout(Some(left))
            .map_err(|e| NetError::io(e, "setting the write timeout"))
    }

    /// An I/O error, said as the timeout when the deadline passed.
    fn io(&self, e: std::io::Error, what: &str) -> NetError {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => self.expired(),
            _ => NetError::io(e, what),
        }
    }
}

/// Fills the buffer within the deadline; an empty slice means the connection closed.
fn fill<'a>(
    conn: &'a mut BufReader<TcpStream>,
    deadline: &Deadline,
    what: &str,
) -> Result<&'a [u8], NetError> {
    if conn.buffer().is_empty() {
        deadline.arm_read(conn.get_ref())?;
    }
    conn.fill_buf().map_err(|e| deadline.io(e, what))
}

/// Counts `n` more bytes of the answer against its limit.
fn spend(budget: &mut usize, n: usize) -> Result<(), NetError> {
    *budget = budget.checked_sub(n).ok_or_else(|| {
        NetError::new(
            "bad-response",
            format!("the answer is larger than {} MiB", MAX_ANSWER_BYTES >> 20),
        )
    })?;
    Ok(())
}

/// One line (up to and including `\n`), within the deadline and `MAX_LINE_BYTES`; "" when
/// the connection closed before a byte.
fn read_line(
    conn: &mut BufReader<TcpStream>,
    deadline: &Deadline,
    budget: &mut usize,
    what: &str,
) -> Result<String, NetError> {
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = fill(conn, deadline, what)?;
        if buf.is_empty() {
            break;
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE_BYTES {
            return Err(NetError::new(
                "bad-response",
                format!("{what}: a line longer than {} KiB", MAX_LINE_BYTES >> 10),
            ));
        }
        spend(budget, take)?;
        line.extend_from_slice(&buf[..take]);
        conn.consume(take);
        if done {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Reads the status line and headers; None when the connection was closed before a byte.
fn read_head(
    conn: &mut BufReader<TcpStream>,
    deadline: &Deadline,
    budget: &mut usize,
) -> Result<Option<Head>, NetError> {
    let line = read_line(conn, deadline, budget, "reading the answer")?;
    if line.is_empty() {
        return Ok(None);
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/1.") && line.ends_with('\n'))
        .ok_or_else(|| {
            NetError::new(
                "bad-response",
                format!(
                    "not an HTTP/1.x status line: {:?}",
                    line.trim_end().chars().take(120).collect::<String>()
                ),
            )
        })?;
    let mut headers = Vec::new();
    let mut framing = Framing::Close;
    let mut close = line.starts_with("HTTP/1.0");
    loop {
        let line = read_line(conn, deadline, budget, "reading the headers")?;
        if line.is_empty() {
            return Err(NetError::new(
                "bad-response",
                "the connection closed inside the headers",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if headers.len() > 200 {
            return Err(NetError::new("bad-response", "more than 200 headers"));
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.eq_ignore_ascii_case("content-length") {
                let n: usize = v
                    .parse()
                    .map_err(|_| NetError::new("bad-response", format!("Content-Length {v:?}")))?;
                if n > *budget {
                    return Err(NetError::new(
                        "bad-response",
                        format!(
                            "Content-Length {n} is beyond the {} MiB the client reads",
                            MAX_ANSWER_BYTES >> 20
                        ),
                    ));
                }
                framing = Framing::Length(n);
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                framing = Framing::Chunked;
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
            headers.push((k, v));
        }
    }
    if matches!(framing, Framing::Close) {
        close = true;
    }
    Ok(Some((status, headers, framing, close)))
}

/// Reads up to `n` bytes as they arrive, handing each piece over.
fn read_exactly(
    conn: &mut BufReader<TcpStream>,
    mut n: usize,
    deadline: &Deadline,
    budget: &mut usize,
    on_piece: &mut dyn FnMut(&[u8]),
) -> Result<(), NetError> {
    while n > 0 {
        let buf = fill(conn, deadline, "reading the body")?;
        if buf.is_empty() {
            return Err(NetError::new("io", "the connection closed inside the body"));
        }
        let k = buf.len().min(n);
        spend(budget, k)?;
        on_piece(&buf[..k]);
        conn.consume(k);
        n -= k;
    }
    Ok(())
}

fn read_body(
    conn: &mut BufReader<TcpStream>,
    framing: Framing,
    deadline: &Deadline,
    budget: &mut usize,
    on_piece: &mut dyn FnMut(&[u8]),
) -> Result<(), NetError> {
    match framing {
        Framing::Length(n) => read_exactly(conn, n, deadline, budget, on_piece),
        Framing::Close => loop {
            let buf = fill(conn, deadline, "reading the body")?;
            if buf.is_empty() {
                return Ok(());
            }
            let k = buf.len();
            spend(budget, k)?;
            on_piece(buf);
            conn.consume(k);
        },
        Framing::Chunked => loop {
            let line = read_line(conn, deadline, budget, "reading a chunk size")?;
            let size_hex = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
                NetError::new("bad-response", format!("chunk size {:?}", line.trim()))
            })?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let line = read_line(conn, deadline, budget, "reading the trailers")?;
                    if line.trim().is_empty() {
                        return Ok(());
                    }
                }
            }
            if size > *budget {
                spend(budget, size)?;
            }
            read_exactly(conn, size, deadline, budget, on_piece)?;
            let end = read_line(conn, deadline, budget, "reading a chunk end")?;
            if !end.trim().is_empty() {
                return Err(NetError::new(
                    "bad-response",
                    "a chunk does not end with CRLF",
                ));
            }
        },
    }
}

/// A one-off GET (metadata, metrics scrapes): a fresh connection, the whole body as text.
pub fn get(url: &str, timeout: Duration) -> Result<(u16, String), NetError> {
    let t = Target::parse(url, 80).map_err(|e| NetError::new("connect", e))?;
    let mut c = Http1::new(&t, timeout);
    let req = request_bytes(&t, "GET", "", &[("Connection", "close".into())], &[]);
    let r = c.call(&req)?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// Splits server-sent events out of a byte stream as it arrives.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    /// Feeds bytes; returns the `data:` payloads of the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let text = &self.buf;
            let end = find(text, b"\n\n")
                .map(|i| (i, 2))
                .or_else(|| find(text, b"\r\n\r\n").map(|i| (i, 4)));
            let Some((i, sep)) = end else { break };
            let event = String::from_utf8_lossy(&self.buf[..i]).into_owned();
            self.buf.drain(..i + sep);
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_defaults_and_paths() {
        let t = Target::parse("http://127.0.0.1:8000", 80).unwrap();
        assert_eq!((t.port, t.base.as_str()), (8000, ""));
        let t = Target::parse("127.0.0.1/api/", 9000).unwrap();
        assert_eq!((t.port, t.base.as_str()), (9000, "/api"));
        assert!(Target::parse("http://127.0.0.1:x", 80)
            .unwrap_err()
            .contains("not a port"));
        assert!(Target::parse("https://a:1", 80)
            .unwrap_err()
            .contains("TLS"));
        assert!(Target::parse("http://:80", 80).is_err());
    }

    #[test]
    fn sse_events_split_across_pieces() {
        let mut p = SseParser::default();
        assert!(p.feed(b"data: {\"a\"").is_empty());
        assert_eq!(
            p.feed(b":1}\n\ndata: [DONE]\n\n"),
            vec!["{\"a\":1}", "[DONE]"]
        );
        assert_eq!(p.feed(b": comment\r\n\r\ndata:x\r\n\r\n"), vec!["x"]);
    }
}
