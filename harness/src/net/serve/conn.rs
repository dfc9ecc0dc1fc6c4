//! Guards on each accepted connection: a deadline for a connection's first bytes, and JSON
//! reasons for the answers hyper writes by itself.
//!
//! hyper answers some malformed HTTP/1 requests on its own, before any handler runs: 400 for a
//! request head it cannot parse (request line, header line, Content-Length, Transfer-Encoding),
//! 414 for a request target over 64 KiB, 431 for a head with too many or too large headers.
//! It writes a bare head (`HTTP/1.1 400 Bad Request`, `connection: close`, `content-length:
//! 0`, `date`: `proto/h1/conn.rs` `on_parse_error` -> `role.rs` `Server::on_error`) and
//! offers no hook to change it. [`JsonErrors`] sits between hyper and the socket and replaces
//! such a head with the same status and a JSON body `{"error": "..."}` naming the problem and
//! the fix, as every answer of our handlers has.
//!
//! It tells hyper's own answers from the service's without guessing from their bytes:
//! [`Tapped`], around the service, records each answer the service produces (and how many
//! body bytes it puts on the wire: 0 for HEAD, 204 and 304), so the writer can follow the
//! outgoing HTTP/1 stream answer by answer. A response head that starts where no answer of the
//! service is pending was written by hyper itself; if its status is 4xx/5xx it is held back up
//! to its blank line and replaced (hyper closes the connection after it). Everything else —
//! the service's answers, `100 Continue`, HTTP/2, upgrades — goes to the socket unchanged, in
//! the same writes. Anything the writer cannot follow (not HTTP/1, an unsized body, an
//! upgrade) turns it into a plain pass-through for the rest of the connection.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::HttpBody;
use axum::http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most a request head may hold (hyper's read buffer limit, set explicitly so that the 431
/// reason stays true): 408 KiB. hyper checks it when a read leaves the head unfinished, so a
/// head read in one go may pass it (up to about twice the limit).
pub(super) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// hyper's default limit on header lines (not set on the builder: with an explicit limit
/// hyper allocates the header array on the heap for every request).
const MAX_HEADERS: usize = 100;
/// hyper's limit on the request target (414 above it).
const MAX_TARGET_BYTES: usize = u16::MAX as usize - 1;
/// How much of a connection's first request head is kept to say what is wrong with it.
const DIAGNOSE_BYTES: usize = 8 * 1024;
/// A head hyper writes by itself is ~100 bytes; holding more means it is not one.
const MAX_HELD: usize = 4 * 1024;

/// What one connection's service tells the connection's writer.
#[derive(Default)]
pub(super) struct Tap {
    state: Mutex<TapState>,
    /// Requests that reached the service on this connection.
    requests: AtomicU64,
}

#[derive(Default)]
struct TapState {
    /// Per answer the service produced whose head has not yet gone out, in order: its body
    /// bytes on the wire (None: unknown, or an upgrade; the writer stops following).
    answers: VecDeque<Option<u64>>,
    /// The writer stopped following (HTTP/2, an upgrade, ...): record nothing more.
    off: bool,
}

impl Tap {
    fn answered(&self, wire_body: Option<u64>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.off {
            return;
        }
        // HTTP/1 has one answer in flight, two at most while one is being flushed; more
        // means a multiplexed connection the writer does not follow.
        if s.answers.len() >= 16 {
            s.off = true;
            s.answers.clear();
            return;
        }
        s.answers.push_back(wire_body);
    }
}

/// The service of one connection, recording its answers in the connection's [`Tap`].
#[derive(Clone)]
pub(super) struct Tapped<S> {
    pub inner: S,
    pub tap: Arc<Tap>,
}

impl<S, B> hyper::service::Service<Request<hyper::body::Incoming>> for Tapped<S>
where
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: HttpBody + Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        self.tap.requests.fetch_add(1, Relaxed);
        let (head, connect) = (
            req.method() == Method::HEAD,
            req.method() == Method::CONNECT,
        );
        let answer = self.inner.call(req);
        let tap = self.tap.clone();
        Box::pin(async move {
            let r = answer.await;
            if let Ok(resp) = &r {
                let status = resp.status();
                // What hyper's encoder puts on the wire after the head.
                let body = if status == StatusCode::SWITCHING_PROTOCOLS
                    || (connect && status.is_success())
                {
                    None
                } else if head
                    || status == StatusCode::NO_CONTENT
                    || status == StatusCode::NOT_MODIFIED
                {
                    Some(0)
                } else {
                    resp.body().size_hint().exact()
                };
                tap.answered(body);
            }
            r
        })
    }
}

/// Where the writer is in the outgoing HTTP/1 stream.
#[derive(Clone, Copy, Debug)]
enum Frame {
    /// Where a response head begins.
    Start,
    /// Inside a head the service produced (or a `1xx`).
    Head(HeadScan),
    /// Body bytes still to go.
    Body(u64),
    /// Not followed any more.
    Pass,
}

/// Reads a response head byte by byte: its `HTTP/1.x NNN` prefix and its blank line.
#[derive(Clone, Copy, Debug, Default)]
struct HeadScan {
    seen: usize,
    status: u16,
    /// How much of `\r\n\r\n` the last bytes matched.
    end: u8,
}

enum Scan {
    More,
    Done,
    NotHttp1,
}

impl HeadScan {
    fn push(&mut self, b: u8) -> Scan {
        const PREFIX: &[u8] = b"HTTP/1.";
        let at = self.seen;
        self.seen += 1;
        let ok = match at {
            0..=6 => b == PREFIX[at],
            7 => b == b'0' || b == b'1',
            8 => b == b' ',
            9..=11 => {
                self.status = self.status * 10 + u16::from(b.wrapping_sub(b'0'));
                b.is_ascii_digit()
            }
            _ => true,
        };
        if !ok {
            return Scan::NotHttp1;
        }
        self.end = match (self.end, b) {
            (0 | 2, b'\r') => self.end + 1,
            (_, b'\r') => 1,
            (1 | 3, b'\n') => self.end + 1,
            _ => 0,
        };
        if self.end == 4 {
            Scan::Done
        } else {
            Scan::More
        }
    }

    fn informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Whether a head that no answer of the service accounts for, starting at `rest`, is one to
/// replace. None: too few bytes here to tell.
fn own_head_is_error(rest: &[u8]) -> Option<bool> {
    let mut scan = HeadScan::default();
    for &b in rest.iter().take(12) {
        if let Scan::NotHttp1 = scan.push(b) {
            return Some(false);
        }
    }
    (scan.seen == 12).then_some(scan.status >= 400)
}

/// Follows `data` from `frame`, taking answers from `answers[*used..]`; stops before a head
/// that no answer accounts for and that may be one to replace. Returns the bytes followed.
fn follow(
    frame: &mut Frame,
    data: &[u8],
    answers: &VecDeque<Option<u64>>,
    used: &mut usize,
) -> usize {
    let mut i = 0;
    while i < data.len() {
        match frame {
            Frame::Pass => return data.len(),
            Frame::Body(n) => {
                let k = (*n).min((data.len() - i) as u64);
                i += k as usize;
                *n -= k;
                if *n == 0 {
                    *frame = Frame::Start;
                }
            }
            Frame::Start => {
                if *used < answers.len() {
                    *frame = Frame::Head(HeadScan::default());
                } else {
                    match own_head_is_error(&data[i..]) {
                        // hyper's 100 Continue, or not HTTP/1 (HTTP/2 frames).
                        Some(false) => *frame = Frame::Head(HeadScan::default()),
                        Some(true) | None => return i,
                    }
                }
            }
            Frame::Head(scan) => {
                let b = data[i];
                i += 1;
                match scan.push(b) {
                    Scan::More => {}
                    Scan::NotHttp1 => *frame = Frame::Pass,
                    Scan::Done if scan.informational() => *frame = Frame::Start,
                    Scan::Done => {
                        let answer = answers.get(*used).copied().flatten();
                        *used += 1;
                        *frame = match answer {
                            Some(0) => Frame::Start,
                            Some(n) => Frame::Body(n),
                            None => Frame::Pass,
                        };
                    }
                }
            }
        }
    }
    i
}

/// The connection's IO as hyper sees it: reads unchanged, writes unchanged except that a 4xx
/// head hyper wrote by itself becomes the same status with a JSON reason (see the module).
pub(super) struct JsonErrors<IO> {
    io: IO,
    tap: Arc<Tap>,
    frame: Frame,
    /// A head hyper wrote by itself, held until its blank line.
    held: Option<(HeadScan, Vec<u8>)>,
    /// Bytes to send before anything else (a replaced head, or a held one given back).
    pending: Vec<u8>,
    sent: usize,
    /// The connection's first bytes, while no request has reached the service: what a 400
    /// on the first request is about.
    first: Vec<u8>,
    recording: bool,
}

impl<IO> JsonErrors<IO> {
    pub fn new(io: IO, tap: Arc<Tap>) -> Self {
        JsonErrors {
            io,
            tap,
            frame: Frame::Start,
            held: None,
            pending: Vec::new(),
            sent: 0,
            first: Vec::new(),
            recording: true,
        }
    }

    /// Bytes of `bufs` the service's answers account for from the current frame.
    fn followable(&self, bufs: &[IoSlice<'_>]) -> usize {
        let s = self.tap.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut frame, mut used, mut n) = (self.frame, 0, 0);
        for b in bufs {
            let k = follow(&mut frame, b, &s.answers, &mut used);
            n += k;
            if k < b.len() {
                break;
            }
        }
        n
    }

    /// Moves the frame past `n` bytes that went out, consuming the answers they held.
    fn advance(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        let mut s = self.tap.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut used = 0;
        for b in bufs {
            if n == 0 {
                break;
            }
            let k = b.len().min(n);
            follow(&mut self.frame, &b[..k], &s.answers, &mut used);
            n -= k;
        }
        let used = used.min(s.answers.len());
        s.answers.drain(..used);
        if let Frame::Pass = self.frame {
            s.off = true;
            s.answers.clear();
        }
    }

    /// Takes bytes of a head hyper wrote by itself, up to its blank line. Returns how many.
    fn hold(&mut self, bufs: &[IoSlice<'_>]) -> usize {
        let (scan, held) = self.held.get_or_insert_with(Default::default);
        let mut taken = 0;
        let mut outcome = Scan::More;
        'all: for b in bufs {
            for &x in b.iter() {
                taken += 1;
                held.push(x);
                outcome = scan.push(x);
                if !matches!(outcome, Scan::More) || held.len() > MAX_HELD {
                    break 'all;
                }
            }
        }
        let scan = *scan;
        match outcome {
            Scan::More if held.len() <= MAX_HELD => return taken,
            Scan::Done if scan.status >= 400 => {
                let (_, head) = self.held.take().unwrap_or_default();
                self.pending = self.replace(&head, scan.status);
                self.frame = Frame::Pass;
            }
            Scan::Done => {
                self.pending = self.held.take().unwrap_or_default().1;
                self.frame = Frame::Start;
            }
            _ => {
                self.pending = self.held.take().unwrap_or_default().1;
                self.frame = Frame::Pass;
            }
        }
        self.sent = 0;
        taken
    }

    /// hyper's bare head `head` as the same status with a JSON reason.
    fn replace(&self, head: &[u8], status: u16) -> Vec<u8> {
        let first = (self.tap.requests.load(Relaxed) == 0).then_some(&self.first[..]);
        let body = serde_json::json!({ "error": reason(status, first) }).to_string();
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let mut out = Vec::with_capacity(head.len() + body.len() + 64);
        out.extend_from_slice(lines.next().unwrap_or(b"HTTP/1.1 400 Bad Request"));
        out.extend_from_slice(b"\r\ncontent-type: application/json\r\n");
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        out.extend_from_slice(b"connection: close\r\n");
        for l in lines.filter(|l| !l.is_empty()) {
            let name = l.split(|&b| b == b':').next().unwrap_or(b"");
            if !name.eq_ignore_ascii_case(b"content-length")
                && !name.eq_ignore_ascii_case(b"connection")
            {
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        out
    }
}

impl<IO: AsyncWrite + Unpin> JsonErrors<IO> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        vectored: bool,
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.held.is_none() {
            let n = match self.frame {
                Frame::Pass => total,
                _ => self.followable(bufs),
            };
            if n > 0 || total == 0 {
                let w = if n == total {
                    ready!(write_inner(&mut self.io, cx, bufs, vectored))?
                } else {
                    let mut left = n;
                    let part: Vec<IoSlice<'_>> = bufs
                        .iter()
                        .map_while(|b| {
                            let k = b.len().min(left);
                            left -= k;
                            (k > 0).then(|| IoSlice::new(&b[..k]))
                        })
                        .collect();
                    ready!(write_inner(&mut self.io, cx, &part, vectored))?
                };
                if !matches!(self.frame, Frame::Pass) {
                    self.advance(bufs, w);
                }
                return Poll::Ready(Ok(w));
            }
        }
        let taken = self.hold(bufs);
        // Start sending what replaced the head; flush and shutdown finish it.
        if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }
}

fn write_inner<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
    vectored: bool,
) -> Poll<io::Result<usize>> {
    if vectored {
        Pin::new(io).poll_write_vectored(cx, bufs)
    } else {
        let b = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        Pin::new(io).poll_write(cx, b)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonErrors<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if this.recording {
            if this.tap.requests.load(Relaxed) > 0 || this.first.len() >= DIAGNOSE_BYTES {
                this.recording = false;
                if this.tap.requests.load(Relaxed) > 0 {
                    this.first = Vec::new();
                }
            } else {
                let new = &buf.filled()[before..];
                let k = new.len().min(DIAGNOSE_BYTES - this.first.len());
                this.first.extend_from_slice(&new[..k]);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for JsonErrors<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_bufs(cx, &[IoSlice::new(buf)], false)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, bufs, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The reason for a status hyper answered by itself; `first`: the connection's first bytes
/// when the failing request was its first.
fn reason(status: u16, first: Option<&[u8]>) -> String {
    match status {
        400 => match first.and_then(diagnose) {
            Some(why) => format!("malformed request head: {why}"),
            None => "malformed request head: send a request line 'METHOD /path HTTP/1.1', \
                     header lines 'Name: value', at most one Content-Length (a decimal byte \
                     count) or Transfer-Encoding ending in 'chunked', then an empty line"
                .into(),
        },
        414 => format!(
            "the request target is longer than {MAX_TARGET_BYTES} bytes; send large inputs in \
             a POST body"
        ),
        // hyper refuses a head once it holds more than either limit and is still unfinished.
        431 => format!(
            "the request head has more than {MAX_HEADERS} header lines or is larger than {} \
             KiB; send fewer or smaller headers",
            MAX_HEAD_BYTES / 1024
        ),
        s => format!(
            "the request could not be parsed (HTTP {s}); send a well-formed HTTP/1.1 request"
        ),
    }
}

/// A line of the request quoted in a reason: escaped, at most 60 bytes.
fn quote(line: &[u8]) -> String {
    let cut = &line[..line.len().min(60)];
    format!(
        "'{}'{}",
        cut.escape_ascii(),
        if cut.len() < line.len() { "..." } else { "" }
    )
}

/// What is wrong with a request head hyper refused with 400, found the way hyper parses it
/// (httparse, then the URI, Content-Length and Transfer-Encoding). None: not found in `raw`.
fn diagnose(raw: &[u8]) -> Option<String> {
    let start = raw.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let raw = &raw[start..];
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let err = match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => None,
        Ok(httparse::Status::Partial) => return None,
        Err(e) => Some(e),
    };
    if let Some(e) = err {
        return Some(match e {
            httparse::Error::Token if req.method.is_none() => format!(
                "the request line {} does not start with a method (a token such as GET or \
                 POST, then one space)",
                quote(request_line)
            ),
            httparse::Error::Token => format!(
                "the request target in {} has a character a URL cannot hold; percent-encode it",
                quote(request_line)
            ),
            httparse::Error::Version => format!(
                "the request line {} does not end in 'HTTP/1.1' or 'HTTP/1.0' (the form is \
                 'METHOD /path HTTP/1.1')",
                quote(request_line)
            ),
            _ => {
                let bad = lines
                    .take_while(|l| !l.is_empty())
                    .find(|l| !header_line_ok(l));
                match bad {
                    Some(l) => format!(
                        "the header line {} is not 'Name: value' (a token name, a colon, a \
                         value without control characters)",
                        quote(l)
                    ),
                    None => "a header line is not 'Name: value' or does not end in CRLF".into(),
                }
            }
        });
    }
    let target = req.path.unwrap_or_default();
    if let Err(e) = target.parse::<axum::http::Uri>() {
        return Some(format!(
            "the request target {} is not a valid URI ({e}); send an absolute path such as \
             /v2/health/live",
            quote(target.as_bytes())
        ));
    }
    let mut lengths = Vec::new();
    let mut coding = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coding = Some(h.value);
        }
    }
    if let Some(te) = coding {
        if req.version == Some(0) {
            return Some(
                "HTTP/1.0 requests cannot use Transfer-Encoding; send Content-Length, or \
                 HTTP/1.1"
                    .into(),
            );
        }
        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
        if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Some(format!(
                "Transfer-Encoding {} is not supported; the last coding must be 'chunked'",
                quote(te)
            ));
        }
        return None;
    }
    let digits = |v: &[u8]| !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit);
    if let Some(v) = lengths.iter().find(|v| !digits(v)) {
        return Some(format!(
            "Content-Length {} is not a byte count (decimal digits only)",
            quote(v)
        ));
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        let all: Vec<String> = lengths.iter().map(|v| quote(v)).collect();
        return Some(format!(
            "the Content-Length headers disagree ({}); send exactly one",
            all.join(", ")
        ));
    }
    None
}

/// Whether `line` is a header line httparse accepts.
fn header_line_ok(line: &[u8]) -> bool {
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => {
            line[..colon].iter().all(tchar)
                && line[colon + 1..]
                    .iter()
                    .all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f)
        }
        _ => false,
    }
}

/// A connection that has not sent its first `min` bytes within `within` of being accepted is
/// closed (its reads fail): a silent socket, or one trickling the start of a request (an
/// HTTP/2 preface, which hyper's HTTP/1 header timeout does not cover) cannot hold a file
/// descriptor. After `min` bytes this is a plain pass-through.
pub(super) struct FirstBytes<IO> {
    io: IO,
    left: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FirstBytes<IO> {
    pub fn new(io: IO, min: usize, within: Duration) -> Self {
        FirstBytes {
            io,
            left: min,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytes<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(deadline) = &mut this.deadline {
            match &r {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len() - before;
                    this.left = this.left.saturating_sub(n);
                    if this.left == 0 || n == 0 {
                        this.deadline = None;
                    }
                }
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the idle timeout",
                    )));
                }
                _ => {}
            }
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytes<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for FirstBytes<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow_all(data: &[u8], answers: &[Option<u64>]) -> (usize, Frame) {
        let answers: VecDeque<_> = answers.iter().copied().collect();
        let (mut frame, mut used) = (Frame::Start, 0);
        let n = follow(&mut frame, data, &answers, &mut used);
        (n, frame)
    }

    #[test]
    fn the_writer_stops_only_before_a_head_no_answer_accounts_for() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: x\r\n\r\n{}";
        let bad = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let mut both = ok.to_vec();
        both.extend_from_slice(bad);
        assert_eq!(follow_all(&both, &[Some(2)]).0, ok.len());
        // A HEAD answer has no body on the wire: the next head starts right after.
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n";
        let mut both = head.to_vec();
        both.extend_from_slice(bad);
        assert_eq!(follow_all(&both, &[Some(0)]).0, head.len());
        // A service's 400 (it has a JSON body) passes; hyper's 100 Continue passes.
        let mine = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(follow_all(mine, &[Some(2)]).0, mine.len());
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert_eq!(follow_all(cont, &[]).0, cont.len());
        // HTTP/2 frames are not followed.
        let (n, frame) = follow_all(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00", &[]);
        assert_eq!(n, 9);
        assert!(matches!(frame, Frame::Pass));
    }

    #[test]
    fn a_bad_first_request_is_diagnosed() {
        let d = |r: &[u8]| diagnose(r).unwrap_or_default();
        assert!(d(b"GARBAGE\r\n\r\n").contains("does not start with a method"));
        assert!(d(b"GET / HTTP/3.0\r\n\r\n").contains("'HTTP/1.1'"));
        assert!(d(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").contains("'Bad Header'"));
        assert!(d(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").contains("'-1'"));
        assert!(
            d(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .contains("disagree")
        );
        assert!(d(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").contains("'gzip'"));
        assert_eq!(diagnose(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), None);
    }
}
