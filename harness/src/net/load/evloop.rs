//! The event-driven HTTP/1.1 engine: a few threads, each one epoll loop over its share of
//! the keep-alive connections (wrk's design). Requests are prepared bytes written as they
//! are; of an answer the engine reads the status, the framing and the one header a check
//! needs, and counts the body without keeping it. Open loop: a free connection takes the
//! next arrival and sends it at its due time, woken by a timer with nanosecond resolution;
//! latency counts from that due time, and a send that is late although a connection was free
//! is marked as the client's lateness. The phases, window and statistics are the
//! coordinator's ([`crate::measure::measure_driven`]), the same as for worker threads.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::measure::{Clock, PhaseSums, Sent, Shared, StepInfo, WorkerOut, MEASURE, STOP, WARM};
use crate::net::client::MAX_ANSWER_BYTES;

/// The longest status line and headers the engine reads.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Most events taken from epoll at once.
const EVENTS: usize = 512;
/// The longest a loop with requests in flight sleeps without looking at the phase (an idle
/// loop looks every millisecond).
const POLL_MS: i32 = 10;

/// What the engine sends and how it judges an answer.
pub struct EvConfig {
    pub addr: SocketAddr,
    pub connections: usize,
    pub threads: usize,
    pub timeout: Duration,
    /// The prepared requests; arrival k sends `requests[tag_of[k]]` (one request: tag 0).
    pub requests: Vec<Arc<Vec<u8>>>,
    pub tag_of: Arc<Vec<u32>>,
    /// KServe binary outputs: the answer must carry Inference-Header-Content-Length.
    pub expect_binary: bool,
    pub expect_body: bool,
    /// How long a loop busy-polls before it sleeps (0: never).
    pub spin: Duration,
    /// Connections opened, over every thread.
    pub connects: Arc<AtomicU64>,
}

/// Runs the engine's threads until the coordinator stops them; one [`WorkerOut`] per thread.
pub fn drive(cfg: &EvConfig, sh: &Shared) -> Vec<WorkerOut> {
    let threads = cfg.threads.clamp(1, cfg.connections.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine = (t..cfg.connections).step_by(threads).count();
                s.spawn(move || match Loop::new(cfg, sh, mine, t) {
                    Ok(mut l) => l.run(),
                    Err(e) => {
                        // The loop could not start (no epoll, no timer): its connections
                        // count as failed units.
                        sh.gave_up.fetch_add(mine, Ordering::Relaxed);
                        WorkerOut {
                            failures: BTreeMap::from([(format!("client: {e}"), 1)]),
                            ..WorkerOut::default()
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("event loop"))
            .collect()
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// No socket (never opened, or closed after an answer or a failure).
    Closed,
    /// A non-blocking connect in progress (a request may be waiting for it).
    Connecting,
    Idle,
    Writing,
    Reading,
    /// Gave up after too many failures in a row.
    Dead,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked,
    Close,
}

/// A chunked body's parser, fed bytes as they arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// Reading a size line (`size` so far, `ext`: past a `;`).
    Size {
        size: u64,
        digits: u32,
        ext: bool,
    },
    Data(u64),
    /// The CRLF after a chunk's data (`0`: expecting CR or LF, `1`: LF seen CR).
    DataEnd(u8),
    /// Trailer lines after the last chunk; `empty`: the current line has no bytes yet.
    Trailer {
        empty: bool,
    },
    Done,
}

impl Chunk {
    fn start() -> Chunk {
        Chunk::Size {
            size: 0,
            digits: 0,
            ext: false,
        }
    }

    /// Feeds `bytes`; returns how many were used (the rest follow the body) and the data
    /// bytes among them, or the framing error.
    fn feed(&mut self, bytes: &[u8]) -> Result<(usize, u64), &'static str> {
        let mut i = 0;
        let mut data = 0u64;
        while i < bytes.len() {
            let b = bytes[i];
            match self {
                Chunk::Done => return Ok((i, data)),
                Chunk::Size { size, digits, ext } => {
                    i += 1;
                    match b {
                        b'\n' => {
                            if *digits == 0 {
                                return Err("a chunk size line without a size");
                            }
                            *self = if *size == 0 {
                                Chunk::Trailer { empty: true }
                            } else {
                                Chunk::Data(*size)
                            };
                        }
                        b'\r' => {}
                        b';' => *ext = true,
                        _ if *ext => {}
                        _ => {
                            let d = (b as char).to_digit(16).ok_or("a chunk size not in hex")?;
                            if *digits >= 15 {
                                return Err("a chunk size beyond what the client reads");
                            }
                            *size = *size * 16 + d as u64;
                            *digits += 1;
                        }
                    }
                }
                Chunk::Data(left) => {
                    let k = (*left).min((bytes.len() - i) as u64);
                    i += k as usize;
                    data += k;
                    *left -= k;
                    if *left == 0 {
                        *self = Chunk::DataEnd(0);
                    }
                }
                Chunk::DataEnd(seen) => {
                    i += 1;
                    match (b, *seen) {
                        (b'\r', 0) => *seen = 1,
                        (b'\n', _) => *self = Chunk::start(),
                        _ => return Err("a chunk does not end with CRLF"),
                    }
                }
                Chunk::Trailer { empty } => {
                    i += 1;
                    match b {
                        b'\n' if *empty => *self = Chunk::Done,
                        b'\n' => *empty = true,
                        b'\r' => {}
                        _ => *empty = false,
                    }
                }
            }
        }
        Ok((i, data))
    }
}

/// One connection and the request on it.
struct Conn {
    stream: Option<TcpStream>,
    state: State,
    /// A request is assigned (sent, being sent, or waiting for the connect).
    busy: bool,
    /// The head read so far (until it is complete).
    head: Vec<u8>,
    written: usize,
    /// The request on it, as sent.
    sent: Sent,
    deadline: u64,
    /// The connection carried an answer before this request (a keep-alive the server may
    /// have closed meanwhile: resent once on a fresh connection).
    reused: bool,
    retried: bool,
    consecutive: u64,
    // The answer being read, once its head is complete.
    status: u16,
    framing: Framing,
    close_after: bool,
    has_ihcl: bool,
    body_read: u64,
    chunk: Chunk,
    answer_bytes: usize,
    // When this request's phases ended (scenario clock, ns): its connection opened (0: it
    // found one open), its last byte written, its answer's first byte read.
    connected_at: u64,
    written_at: u64,
    first_byte_at: u64,
    /// The answer's `Server-Timing` value, as sent.
    timing: Vec<u8>,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            stream: None,
            state: State::Closed,
            busy: false,
            head: Vec::new(),
            written: 0,
            sent: Sent::default(),
            deadline: 0,
            reused: false,
            retried: false,
            consecutive: 0,
            status: 0,
            framing: Framing::Close,
            close_after: false,
            has_ihcl: false,
            body_read: 0,
            chunk: Chunk::start(),
            answer_bytes: 0,
            connected_at: 0,
            written_at: 0,
            first_byte_at: 0,
            timing: Vec::new(),
        }
    }

    fn reset_answer(&mut self) {
        self.head.clear();
        self.status = 0;
        self.framing = Framing::Close;
        self.close_after = false;
        self.has_ihcl = false;
        self.body_read = 0;
        self.chunk = Chunk::start();
        self.answer_bytes = 0;
        self.first_byte_at = 0;
        self.timing.clear();
    }
}

/// How an exchange ended, short of an answer: the kind the row counts (`connect`, `io`,
/// `timeout`, `bad-response`, `http-503`, ...), as the blocking client names them.
struct Failure(Cow<'static, str>);

fn fail(kind: &'static str) -> Failure {
    Failure(Cow::Borrowed(kind))
}

/// One thread's loop: its epoll instance, its timer, its connections.
struct Loop<'a> {
    cfg: &'a EvConfig,
    sh: &'a Shared<'a>,
    epoll: OwnedFd,
    timer: OwnedFd,
    /// When the timer is armed to fire (ns on the scenario clock); u64::MAX: disarmed.
    timer_at: u64,
    conns: Vec<Conn>,
    idle: Vec<usize>,
    in_flight: usize,
    /// Connections that gave up (the loop ends when all have).
    dead: usize,
    /// Open loop: the arrival taken and not yet sent (index, due, a connection was free).
    pending: Option<(usize, u64, bool)>,
    schedule_spent: bool,
    /// The earliest deadline of a request in flight may be this soon.
    next_scan: u64,
    timeout_ns: u64,
    out: WorkerOut,
    scratch: Vec<u8>,
    spin_ns: u64,
    /// This loop's index (the first warms an open loop up, on its first connection).
    thread: usize,
}

const TIMER_TOKEN: u64 = u64::MAX;

fn cvt(r: libc::c_int, what: &str) -> Result<libc::c_int, String> {
    if r < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(r)
    }
}

impl<'a> Loop<'a> {
    fn new(
        cfg: &'a EvConfig,
        sh: &'a Shared<'a>,
        connections: usize,
        thread: usize,
    ) -> Result<Loop<'a>, String> {
        // SAFETY: plain syscalls; the descriptors are owned at once.
        let epoll = unsafe {
            OwnedFd::from_raw_fd(cvt(
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
                "epoll_create1",
            )?)
        };
        // SAFETY: as above.
        let timer = unsafe {
            OwnedFd::from_raw_fd(cvt(
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                ),
                "timerfd_create",
            )?)
        };
        let l = Loop {
            cfg,
            sh,
            epoll,
            timer,
            timer_at: u64::MAX,
            conns: (0..connections).map(|_| Conn::new()).collect(),
            idle: Vec::with_capacity(connections),
            in_flight: 0,
            dead: 0,
            pending: None,
            schedule_spent: false,
            next_scan: u64::MAX,
            timeout_ns: cfg.timeout.as_nanos().min(u64::MAX as u128) as u64,
            out: WorkerOut::default(),
            scratch: vec![0u8; 64 << 10],
            thread,
            spin_ns: cfg.spin.as_nanos().min(u64::MAX as u128) as u64,
        };
        l.register(l.timer.as_raw_fd(), TIMER_TOKEN, libc::EPOLLIN as u32)?;
        Ok(l)
    }

    fn register(&self, fd: RawFd, token: u64, events: u32) -> Result<(), String> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid descriptors and an event struct.
        cvt(
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) },
            "epoll_ctl",
        )
        .map(|_| ())
    }

    /// Arms the timer to fire at `at` (scenario clock), unless it already fires by then.
    fn arm(&mut self, at: u64, now: u64) {
        if at >= self.timer_at && self.timer_at > now {
            return;
        }
        let ns = at.saturating_sub(now).max(1_000);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: a timerfd we own and a valid itimerspec.
        unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        self.timer_at = now + ns;
    }

    fn run(&mut self) -> WorkerOut {
        let open = !self.sh.offsets.is_empty();
        for i in 0..self.conns.len() {
            self.idle.push(i);
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            let phase = self.sh.phase.load(Ordering::Acquire);
            let now = self.sh.clock.now_ns();
            if phase == STOP {
                if self.in_flight == 0 || self.sh.abandon.load(Ordering::Acquire) {
                    break;
                }
            } else if open && phase == MEASURE {
                self.send_due(now);
            } else if open {
                // An open loop warms up on one connection, so that the window's first
                // arrivals do not queue behind a burst from all of them.
                if self.thread == 0 {
                    if let Some(i) = self.idle.iter().position(|&c| c == 0) {
                        self.idle.swap_remove(i);
                        self.start(0, None, 0, false, true);
                    }
                }
            } else {
                // Closed loop: every free connection sends.
                while let Some(c) = self.idle.pop() {
                    self.start(c, None, 0, false, phase == WARM);
                }
            }
            if self.dead == self.conns.len() {
                break;
            }
            // The timer wakes the loop for the next due arrival (to the microsecond); epoll's
            // own timeout, for the phase and the deadlines. Under load neither fires: events
            // come first.
            if let Some((_, due, _)) = self.pending {
                self.arm(due, now);
            }
            let wait_ms = if self.in_flight > 0 {
                ((self.next_scan.saturating_sub(now) / 1_000_000) as i32).clamp(1, POLL_MS)
            } else {
                1
            };
            // Busy-poll for a moment before sleeping: an answer due within microseconds is
            // taken without a context switch (the costliest part of a loopback exchange).
            let spin_until = self.sh.clock.now_ns() + self.spin_ns;
            let n = loop {
                let spinning = self.spin_ns > 0 && self.sh.clock.now_ns() < spin_until;
                // SAFETY: the buffer holds EVENTS entries.
                let n = unsafe {
                    libc::epoll_wait(
                        self.epoll.as_raw_fd(),
                        events.as_mut_ptr(),
                        EVENTS as libc::c_int,
                        if spinning { 0 } else { wait_ms },
                    )
                };
                if n != 0 || !spinning {
                    break n;
                }
            };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for ev in &events[..n as usize] {
                let token = ev.u64;
                if token == TIMER_TOKEN {
                    let mut buf = [0u8; 8];
                    // SAFETY: reading the timer's 8-byte count into 8 bytes.
                    unsafe {
                        libc::read(self.timer.as_raw_fd(), buf.as_mut_ptr().cast(), 8);
                    }
                    self.timer_at = u64::MAX;
                    continue;
                }
                self.on_event(token as usize, ev.events);
            }
            let now = self.sh.clock.now_ns();
            if now >= self.next_scan {
                self.expire(now);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Open loop, measuring: free connections take arrivals and send those due.
    fn send_due(&mut self, now: u64) {
        loop {
            if self.pending.is_none() {
                if self.idle.is_empty() || self.schedule_spent {
                    return;
                }
                match self.sh.take_arrival() {
                    Some((k, due)) => self.pending = Some((k, due, now < due)),
                    None => {
                        self.schedule_spent = true;
                        return;
                    }
                }
            }
            let Some((k, due, free_early)) = self.pending else {
                return;
            };
            if due > now {
                return;
            }
            let Some(c) = self.idle.pop() else {
                return;
            };
            self.pending = None;
            let tag = self.cfg.tag_of.get(k).copied().unwrap_or(0);
            self.start(c, Some(due), tag, free_early, false);
        }
    }

    /// Assigns a request to connection `c` (free) and sends it, connecting first if needed.
    /// `scheduled`: the due time in open loop (None: due when sent); `free_before_due`: the
    /// connection was free before it.
    fn start(
        &mut self,
        c: usize,
        scheduled: Option<u64>,
        tag: u32,
        free_before_due: bool,
        warm: bool,
    ) {
        let now = self.sh.clock.now_ns();
        {
            let conn = &mut self.conns[c];
            if conn.state == State::Dead {
                return;
            }
            conn.busy = true;
            conn.sent = Sent {
                tag,
                ..Sent::at(warm, scheduled, now, free_before_due)
            };
            conn.deadline = now.saturating_add(self.timeout_ns);
            conn.retried = false;
            conn.written = 0;
            conn.connected_at = 0;
            conn.reset_answer();
        }
        self.in_flight += 1;
        self.next_scan = self.next_scan.min(self.conns[c].deadline);
        self.send(c);
    }

    /// Sends (or resends) connection `c`'s request from its start.
    fn send(&mut self, c: usize) {
        self.conns[c].written = 0;
        self.conns[c].reset_answer();
        match self.conns[c].state {
            State::Closed => {
                if let Err(f) = self.connect(c) {
                    self.failed(c, f);
                }
            }
            State::Idle => {
                self.conns[c].state = State::Writing;
                self.write(c);
            }
            _ => {}
        }
    }

    /// Opens connection `c` without blocking; the request waits for it.
    fn connect(&mut self, c: usize) -> Result<(), Failure> {
        use socket2::{Domain, Protocol, Socket, Type};
        let addr = self.cfg.addr;
        let io = |_| fail("connect");
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(io)?;
        s.set_nonblocking(true).map_err(io)?;
        let _ = s.set_tcp_nodelay(true);
        match s.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(io(e)),
        }
        let stream: TcpStream = s.into();
        self.register(
            stream.as_raw_fd(),
            c as u64,
            (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        )
        .map_err(|_| fail("connect"))?;
        self.cfg.connects.fetch_add(1, Ordering::Relaxed);
        let conn = &mut self.conns[c];
        conn.stream = Some(stream);
        conn.state = State::Connecting;
        conn.reused = false;
        Ok(())
    }

    fn on_event(&mut self, c: usize, events: u32) {
        let Some(conn) = self.conns.get(c) else {
            return;
        };
        match conn.state {
            State::Connecting => {
                if events & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                    return;
                }
                let err = conn
                    .stream
                    .as_ref()
                    .and_then(|s| s.take_error().ok().flatten());
                if err.is_some() {
                    return self.failed(c, fail("connect"));
                }
                if conn.busy {
                    self.conns[c].connected_at = self.sh.clock.now_ns();
                    self.conns[c].state = State::Writing;
                    self.write(c);
                } else {
                    self.conns[c].state = State::Idle;
                }
            }
            State::Writing => {
                self.write(c);
                if self.conns[c].state == State::Reading && events & libc::EPOLLIN as u32 != 0 {
                    self.read(c);
                }
            }
            State::Reading => self.read(c),
            State::Idle => {
                // A keep-alive connection the server closed (or bytes nobody asked for):
                // closed now, reopened by the next request.
                if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
                    self.close(c);
                }
            }
            State::Closed | State::Dead => {}
        }
    }

    fn write(&mut self, c: usize) {
        // Borrowed, not cloned: a reference count shared by every loop would bounce between
        // their cores on each request.
        let cfg = self.cfg;
        let req = &cfg.requests[self.conns[c].sent.tag as usize];
        loop {
            let conn = &mut self.conns[c];
            let Some(s) = conn.stream.as_mut() else {
                return;
            };
            if conn.written == req.len() {
                conn.state = State::Reading;
                conn.written_at = self.sh.clock.now_ns();
                return;
            }
            match s.write(&req[conn.written..]) {
                Ok(0) => return self.lost(c),
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.lost(c),
            }
        }
    }

    fn read(&mut self, c: usize) {
        loop {
            let n = {
                let conn = &mut self.conns[c];
                let Some(s) = conn.stream.as_mut() else {
                    return;
                };
                match s.read(&mut self.scratch) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return self.lost(c),
                }
            };
            if n == 0 {
                // The server closed: the end of a body framed by the close, else a loss.
                let conn = &self.conns[c];
                if conn.status != 0 && matches!(conn.framing, Framing::Close) {
                    self.conns[c].close_after = true;
                    return self.answered(c);
                }
                return self.lost(c);
            }
            if self.conns[c].first_byte_at == 0 {
                self.conns[c].first_byte_at = self.sh.clock.now_ns();
            }
            match self.take(c, n) {
                Err(f) => return self.failed(c, f),
                Ok(true) => return self.answered(c),
                Ok(false) => {}
            }
        }
    }

    /// Feeds `n` scratch bytes to connection `c`'s answer; true when it is complete.
    fn take(&mut self, c: usize, n: usize) -> Result<bool, Failure> {
        let conn = &mut self.conns[c];
        conn.answer_bytes += n;
        if conn.answer_bytes > MAX_ANSWER_BYTES {
            return Err(fail("bad-response"));
        }
        let mut bytes = &self.scratch[..n];
        if conn.status == 0 {
            // The head is parsed where it lies when one read holds it all (the usual case);
            // pieces of a longer one are gathered first.
            let whole = conn.head.is_empty();
            if !whole {
                conn.head.extend_from_slice(bytes);
            }
            let head: &[u8] = if whole { bytes } else { &conn.head };
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            let used = match r.parse(head) {
                Ok(httparse::Status::Partial) => {
                    if whole {
                        conn.head.extend_from_slice(bytes);
                    }
                    if conn.head.len() > MAX_HEAD_BYTES {
                        return Err(fail("bad-response"));
                    }
                    return Ok(false);
                }
                Ok(httparse::Status::Complete(used)) => used,
                // Not an HTTP/1.x answer.
                Err(_) => return Err(fail("bad-response")),
            };
            conn.status = r.code.unwrap_or(0);
            conn.close_after = r.version == Some(0);
            let (mut length, mut chunked) = (None, false);
            for h in r.headers.iter() {
                let name = h.name;
                if name.eq_ignore_ascii_case("content-length") {
                    let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                    let len: u64 = v.parse().map_err(|_| fail("bad-response"))?;
                    if len > MAX_ANSWER_BYTES as u64 {
                        return Err(fail("bad-response"));
                    }
                    length = Some(len);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked |= String::from_utf8_lossy(h.value)
                        .to_ascii_lowercase()
                        .contains("chunked");
                } else if name.eq_ignore_ascii_case("connection") {
                    conn.close_after = h.value.eq_ignore_ascii_case(b"close");
                } else if name.eq_ignore_ascii_case("inference-header-content-length") {
                    conn.has_ihcl = true;
                } else if name.eq_ignore_ascii_case("server-timing") {
                    // Several such headers are one list.
                    if !conn.timing.is_empty() {
                        conn.timing.push(b',');
                    }
                    conn.timing.extend_from_slice(h.value);
                }
            }
            // RFC 9112 6.3: no body for these statuses, whatever the headers say; chunked
            // framing wins over a length; else the length, else the body ends at the close.
            conn.framing = if conn.status == 204 || conn.status == 304 || conn.status < 200 {
                Framing::Length(0)
            } else if chunked {
                Framing::Chunked
            } else {
                length.map_or(Framing::Close, Framing::Length)
            };
            let body_start = n - (head.len() - used);
            conn.head.clear();
            bytes = &self.scratch[body_start..n];
        }
        match conn.framing {
            Framing::Length(len) => {
                conn.body_read += bytes.len() as u64;
                if conn.body_read > len {
                    // Bytes past the answer: the connection is out of step; closed after it.
                    conn.close_after = true;
                }
                Ok(conn.body_read >= len)
            }
            Framing::Chunked => {
                let (used, data) = conn.chunk.feed(bytes).map_err(|_| fail("bad-response"))?;
                conn.body_read += data;
                if used < bytes.len() {
                    conn.close_after = true;
                }
                Ok(conn.chunk == Chunk::Done)
            }
            Framing::Close => {
                conn.body_read += bytes.len() as u64;
                Ok(false)
            }
        }
    }

    /// Connection `c`'s answer is complete: judged, recorded, the connection freed.
    fn answered(&mut self, c: usize) {
        let end = self.sh.clock.now_ns();
        let conn = &self.conns[c];
        // Asked for binary outputs, an answer must say where they start; an answer must not be
        // empty where one is expected.
        let verdict = if conn.status != 200 {
            Err(Failure(Cow::Owned(format!("http-{}", conn.status))))
        } else if (self.cfg.expect_binary && !conn.has_ihcl)
            || (self.cfg.expect_body && conn.body_read == 0)
        {
            Err(fail("bad-response"))
        } else {
            Ok(())
        };
        if verdict.is_ok() && !conn.sent.warm {
            let phases = self.out.phases.get_or_insert_with(PhaseSums::default);
            let start = conn.sent.start;
            let opened = conn.connected_at.max(start);
            let written = conn.written_at.max(opened);
            let first = conn.first_byte_at.clamp(written, end.max(written));
            phases.requests += 1;
            if conn.connected_at != 0 {
                phases.connects += 1;
                phases.connect_ns += opened - start;
            }
            phases.write_ns += written - opened;
            phases.wait_ns += first - written;
            phases.read_ns += end.max(first) - first;
            if !conn.timing.is_empty() {
                phases.add_server_timing(&conn.timing);
            }
        }
        if conn.close_after {
            self.close(c);
        } else {
            self.conns[c].state = State::Idle;
            self.conns[c].reused = true;
        }
        self.book(c, end, verdict.map(|()| None));
        self.release(c);
    }

    /// The connection broke under a request: resent once on a fresh connection when it was
    /// a kept-alive one that had carried nothing of this answer (the server closed it
    /// meanwhile), else a failure of kind `io`.
    fn lost(&mut self, c: usize) {
        let conn = &self.conns[c];
        let nothing_read = conn.status == 0 && conn.head.is_empty();
        if conn.reused && !conn.retried && nothing_read {
            self.close(c);
            self.conns[c].retried = true;
            return self.send(c);
        }
        self.failed(c, fail("io"))
    }

    /// The request on `c` failed: the connection is closed, the failure counted.
    fn failed(&mut self, c: usize, f: Failure) {
        self.close(c);
        let end = self.sh.clock.now_ns();
        self.book(c, end, Err(f));
        self.release(c);
    }

    /// Books the request on `c` (see [`Shared::book`]); the connection is dead once it
    /// gives up.
    fn book(&mut self, c: usize, end: u64, result: Result<Option<StepInfo>, Failure>) {
        let conn = &mut self.conns[c];
        let result = result.map_err(|f| f.0.into_owned());
        if !self.sh.book(
            &mut self.out,
            &mut conn.consecutive,
            &conn.sent,
            end,
            result,
        ) {
            conn.state = State::Dead;
            self.dead += 1;
        }
    }

    /// The request on `c` is over (answered or failed): the connection is free again.
    fn release(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if !conn.busy {
            return;
        }
        conn.busy = false;
        self.in_flight -= 1;
        if conn.state != State::Dead {
            self.idle.push(c);
        }
    }

    fn close(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        // Dropping the stream closes it, which also takes it out of the epoll set.
        conn.stream = None;
        if conn.state != State::Dead {
            conn.state = State::Closed;
        }
        conn.reused = false;
    }

    /// Fails the requests past their deadline; sets when to look again.
    fn expire(&mut self, now: u64) {
        let mut next = u64::MAX;
        for c in 0..self.conns.len() {
            let conn = &self.conns[c];
            if !conn.busy {
                continue;
            }
            if conn.deadline <= now {
                // No complete answer within --timeout.
                self.failed(c, fail("timeout"));
            } else {
                next = next.min(conn.deadline);
            }
        }
        self.next_scan = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(pieces: &[&[u8]]) -> Result<(u64, bool, usize), &'static str> {
        let mut c = Chunk::start();
        let mut data = 0;
        let mut rest = 0;
        for p in pieces {
            let (used, d) = c.feed(p)?;
            data += d;
            rest += p.len() - used;
        }
        Ok((data, c == Chunk::Done, rest))
    }

    #[test]
    fn chunked_bodies_parse_in_any_pieces() {
        let body: &[u8] =
            b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(chunks(&[body]).unwrap(), (4 + 6 + 14, true, 0));
        // One byte at a time: the same.
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(chunks(&bytes).unwrap(), (24, true, 0));
        // Bytes after the end are not the body's.
        let mut more = body.to_vec();
        more.extend_from_slice(b"HTTP/1.1");
        assert_eq!(chunks(&[&more]).unwrap(), (24, true, 8));
        // Not done without the last chunk.
        assert_eq!(chunks(&[b"3\r\nabc\r\n"]).unwrap(), (3, false, 0));
        assert!(chunks(&[b"zz\r\n"]).is_err());
        assert!(chunks(&[b"3\r\nabcX"]).is_err());
        assert!(chunks(&[b"\r\n"]).is_err());
        assert!(chunks(&[b"ffffffffffffffffff\r\n"]).is_err());
    }
}
