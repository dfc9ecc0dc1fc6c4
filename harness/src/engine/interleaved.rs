//! The serving tax in interleaved blocks (`compare --served`, concurrency 1).
//!
//! The served rows and their in-process twins are measured minutes apart, and a shared
//! machine drifts between them (by half a millisecond in 13 on two cloud vCPUs): more than
//! what serving adds; and two loads of one model run at speeds of their own, which is not
//! serving either. Here one model instance in this process, called directly and through the
//! server's code (a [`Local`] server around it), takes turns on the same inputs, a block each,
//! in the order A B B A A B B A ... (A direct, B served), so that drift, even a steady trend,
//! falls on both sides alike. Each block
//! starts with one untimed call that takes the turn over (the other side's threads go idle,
//! this side's wake). The tax is the difference of the pooled medians; the per-pair
//! differences of block medians give its interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use runtimes::HostTensor;

use crate::measure::MeasureConfig;
use crate::net::serve::Local;
use crate::results::InterleavedTax;
use crate::stats::{quantile_ci_ranks, LatencyStats};

/// How long one block lasts at most, about: long enough that its one untimed call is a
/// small part of it, short enough that there are many pairs in a few seconds.
const BLOCK: Duration = Duration::from_millis(120);
/// Pairs at least (the interval needs 6; 12 gives a usable one).
const MIN_PAIRS: usize = 12;
/// Pairs at most, whatever the time.
const MAX_PAIRS: usize = 400;

/// One side of the comparison: a call, timed by the caller.
pub trait Side {
    fn call(&mut self) -> Result<(), String>;

    /// The untimed call that starts a block.
    fn take_turn(&mut self) -> Result<(), String> {
        self.call()
    }
}

/// The instance a [`Local`] server serves, called directly: `Loaded::run` on its prepared
/// inputs, the call the in-process rows time. Its turn starts by preparing `inputs` again
/// (untimed), which the served requests replaced with their own (the same values).
pub struct Direct<'a> {
    pub server: &'a Local,
    pub inputs: &'a [HostTensor],
}

impl Side for Direct<'_> {
    fn call(&mut self) -> Result<(), String> {
        self.server
            .with_model(|m| m.run())
            .map_err(|e| e.to_string())
    }

    fn take_turn(&mut self) -> Result<(), String> {
        self.server
            .with_model(|m| m.prepare(self.inputs).and_then(|()| m.run()))
            .map_err(|e| e.to_string())
    }
}

/// A served endpoint: one prepared HTTP/1.1 request on one kept-alive connection, the whole
/// answer read into a buffer kept from call to call; any status but 200, or an answer not
/// framed by `Content-Length` (ours always is), fails the call with what came back. Leaner
/// than the general client (no per-read timeouts, no header strings), so that what it
/// measures is the server's.
pub struct Served {
    stream: std::net::TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Served {
    pub fn connect(
        addr: std::net::SocketAddr,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Served, String> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("setting the timeouts: {e}"))?;
        Ok(Served {
            stream,
            request,
            buf: vec![0; 256 << 10],
        })
    }

    /// The head's length, status and body length once `filled` bytes hold the whole head.
    fn head(&self, filled: usize) -> Result<Option<(usize, u16, usize)>, String> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let used = match r.parse(&self.buf[..filled]) {
            Ok(httparse::Status::Partial) => return Ok(None),
            Ok(httparse::Status::Complete(used)) => used,
            Err(e) => return Err(format!("not an HTTP/1.1 answer: {e}")),
        };
        let length = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
            .ok_or("the answer has no Content-Length (chunked or framed by the close)")?;
        Ok(Some((used, r.code.unwrap_or(0), length)))
    }
}

impl Side for Served {
    fn call(&mut self) -> Result<(), String> {
        use std::io::{Read, Write};
        self.stream
            .write_all(&self.request)
            .map_err(|e| format!("sending the request: {e}"))?;
        let mut filled = 0;
        let mut framed: Option<(usize, u16, usize)> = None;
        loop {
            if let Some((head, _, body)) = framed {
                if filled >= head + body {
                    break;
                }
                if self.buf.len() < head + body {
                    self.buf.resize(head + body, 0);
                }
            } else if filled == self.buf.len() {
                return Err("an answer head longer than the buffer".into());
            }
            let n = self
                .stream
                .read(&mut self.buf[filled..])
                .map_err(|e| format!("reading the answer: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            filled += n;
            if framed.is_none() {
                framed = self.head(filled)?;
            }
        }
        let (head, status, body) = framed.expect("framed before the loop ends");
        if filled > head + body {
            return Err("bytes past the answer's length".into());
        }
        if status != 200 {
            let text = &self.buf[head..(head + body).min(head + 300)];
            return Err(format!(
                "the server answered {status}: {}",
                String::from_utf8_lossy(text)
            ));
        }
        Ok(())
    }
}

fn timed(side: &mut dyn Side) -> Result<u64, String> {
    let t = Instant::now();
    side.call()?;
    Ok(t.elapsed().as_nanos() as u64)
}

/// One block: an untimed call, then `n` timed ones; their times are appended to `all`.
/// Returns the block's median.
fn block(side: &mut dyn Side, n: usize, all: &mut Vec<u64>) -> Result<u64, String> {
    side.take_turn()?;
    let mut mine = Vec::with_capacity(n);
    for _ in 0..n {
        mine.push(timed(side)?);
    }
    all.extend_from_slice(&mine);
    mine.sort_unstable();
    Ok(mine[(mine.len() - 1) / 2])
}

/// Warms both sides, then measures them in interleaved blocks until `cfg.min_time` of each
/// (and at least [`MIN_PAIRS`] pairs and `cfg.min_samples` calls a side) or `cfg.max_time`
/// of each, whichever comes first; an interrupt ends it early. The result's names (scenario,
/// protocol, client) are left for the caller.
pub fn measure(
    a: &mut dyn Side,
    b: &mut dyn Side,
    cfg: &MeasureConfig,
    interrupt: &AtomicBool,
) -> Result<InterleavedTax, String> {
    // Warm-up: each side for its share of the warm-up time, and a few calls at least; the
    // in-process side's times size the blocks.
    let warm = cfg.warmup_time.max(Duration::from_millis(200)) / 2;
    let warm_up = |side: &mut dyn Side| -> Result<Vec<u64>, String> {
        let (t, mut times) = (Instant::now(), Vec::new());
        while times.len() < 3 || (t.elapsed() < warm && times.len() < 10_000) {
            times.push(timed(side)?);
        }
        Ok(times)
    };
    let mut probe = warm_up(a)?;
    warm_up(b)?;
    probe.sort_unstable();
    let call = probe[(probe.len() - 1) / 2].max(1);
    // Blocks short enough that the minimum pairs fit in the minimum time.
    let block_ns = BLOCK.min(cfg.min_time / MIN_PAIRS as u32).as_nanos() as u64;
    let per_block = ((block_ns / call) as usize).clamp(3, 2000);
    let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
    let mut diffs: Vec<i64> = Vec::new();
    let started = Instant::now();
    let enough = |pairs: usize, n: usize, elapsed: Duration| {
        pairs >= MIN_PAIRS && n as u64 >= cfg.min_samples && elapsed >= cfg.min_time * 2
    };
    while diffs.len() < MAX_PAIRS {
        let elapsed = started.elapsed();
        if enough(diffs.len(), all_a.len().min(all_b.len()), elapsed)
            || (elapsed >= cfg.max_time * 2 && diffs.len() >= 2)
            || interrupt.load(Ordering::Relaxed)
        {
            break;
        }
        // A B, then B A: a steady trend adds to each side alike over two pairs.
        let (ma, mb) = if diffs.len().is_multiple_of(2) {
            let ma = block(a, per_block, &mut all_a)?;
            (ma, block(b, per_block, &mut all_b)?)
        } else {
            let mb = block(b, per_block, &mut all_b)?;
            (block(a, per_block, &mut all_a)?, mb)
        };
        diffs.push(mb as i64 - ma as i64);
    }
    if diffs.is_empty() {
        return Err("interrupted before the first pair of blocks".into());
    }
    let in_process = LatencyStats::from_samples(&all_a);
    let served = LatencyStats::from_samples(&all_b);
    diffs.sort_unstable();
    let n = diffs.len();
    let ms = |ns: i64| ns as f64 / 1e6;
    let pair_median_ms = if n % 2 == 1 {
        ms(diffs[n / 2])
    } else {
        (ms(diffs[n / 2 - 1]) + ms(diffs[n / 2])) / 2.0
    };
    let pair_ci_ms = quantile_ci_ranks(n as u64, 0.5)
        .map(|(lo, hi)| (ms(diffs[lo as usize - 1]), ms(diffs[hi as usize - 1])));
    Ok(InterleavedTax {
        scenario: String::new(),
        served_scenario: String::new(),
        protocol: String::new(),
        client: String::new(),
        pairs: n as u64,
        per_block: per_block as u64,
        tax_ms: served.p50_ms - in_process.p50_ms,
        in_process,
        served,
        pair_median_ms,
        pair_ci_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sleeps a fixed time plus a drift that grows with each call.
    struct Drifting {
        base: Duration,
        calls: u64,
        drift_per_call: Duration,
        clock: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl Side for Drifting {
        fn call(&mut self) -> Result<(), String> {
            self.calls += 1;
            let k = self.clock.get();
            self.clock.set(k + 1);
            std::thread::sleep(self.base + self.drift_per_call * k as u32);
            Ok(())
        }
    }

    fn cfg(min: u64) -> MeasureConfig {
        MeasureConfig {
            warmup_time: Duration::from_millis(20),
            min_time: Duration::from_millis(min),
            max_time: Duration::from_millis(min * 3),
            min_samples: 10,
            ..MeasureConfig::default()
        }
    }

    #[test]
    fn a_steady_difference_is_found_through_a_shared_drift() {
        // Both sides slow down by the same amount with every call (the machine drifting);
        // the served side costs 2 ms more. Measured one after the other, the drift alone
        // would add to the later side.
        let clock = std::rc::Rc::new(std::cell::Cell::new(0));
        let side = |base_ms: u64| Drifting {
            base: Duration::from_millis(base_ms),
            calls: 0,
            drift_per_call: Duration::from_micros(5),
            clock: clock.clone(),
        };
        let (mut a, mut b) = (side(2), side(4));
        let m = measure(&mut a, &mut b, &cfg(300), &AtomicBool::new(false)).unwrap();
        assert!(m.pairs >= MIN_PAIRS as u64, "{m:?}");
        assert!(m.per_block >= 3);
        assert_eq!(m.in_process.samples, m.pairs * m.per_block);
        assert_eq!(m.served.samples, m.pairs * m.per_block);
        // Sleeps overshoot, never undershoot: 2 ms, give or take the scheduler.
        assert!((1.5..3.0).contains(&m.pair_median_ms), "{m:?}");
        assert!((1.5..3.0).contains(&m.tax_ms), "{m:?}");
        let (lo, hi) = m.pair_ci_ms.expect("an interval from 12 pairs or more");
        assert!(lo <= m.pair_median_ms && m.pair_median_ms <= hi, "{m:?}");
        assert!(a.calls > m.pairs * m.per_block && b.calls > m.pairs * m.per_block);
    }

    struct Failing(u32);

    impl Side for Failing {
        fn call(&mut self) -> Result<(), String> {
            self.0 += 1;
            if self.0 > 5 {
                return Err("the server answered 500".into());
            }
            Ok(())
        }
    }

    #[test]
    fn a_failing_side_ends_the_measurement_with_its_reason() {
        let clock = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut a = Drifting {
            base: Duration::from_micros(100),
            calls: 0,
            drift_per_call: Duration::ZERO,
            clock,
        };
        let e = measure(&mut a, &mut Failing(0), &cfg(100), &AtomicBool::new(false)).unwrap_err();
        assert!(e.contains("500"), "{e}");
    }

    #[test]
    fn an_interrupt_before_the_first_pair_is_an_error_not_a_figure() {
        let clock = std::rc::Rc::new(std::cell::Cell::new(0));
        let side = || Drifting {
            base: Duration::from_micros(100),
            calls: 0,
            drift_per_call: Duration::ZERO,
            clock: clock.clone(),
        };
        let e = measure(&mut side(), &mut side(), &cfg(100), &AtomicBool::new(true)).unwrap_err();
        assert!(e.contains("interrupted"), "{e}");
    }

    /// A one-connection server on loopback that answers each request (read as whatever
    /// arrives) with the next of `answers`, each written in pieces of `piece` bytes.
    fn server(answers: Vec<Vec<u8>>, piece: usize) -> std::net::SocketAddr {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            for a in answers {
                if s.read(&mut buf).unwrap_or(0) == 0 {
                    return;
                }
                for p in a.chunks(piece) {
                    let _ = s.write_all(p);
                    let _ = s.flush();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        addr
    }

    fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut a = format!("HTTP/1.1 {status}\r\n{headers}\r\n").into_bytes();
        a.extend_from_slice(body);
        a
    }

    #[test]
    fn the_served_side_reads_whole_answers_in_pieces_and_refuses_the_rest() {
        let big = vec![7u8; 300_000];
        let ok = |body: &[u8]| {
            answer(
                "200 OK",
                &format!("Content-Length: {}\r\n", body.len()),
                body,
            )
        };
        let addr = server(
            vec![
                ok(b"{}"),
                // Larger than the first buffer, arriving in pieces.
                ok(&big),
                ok(b"{}"),
                answer(
                    "500 Internal Server Error",
                    "Content-Length: 4\r\n",
                    b"boom",
                ),
            ],
            70_000,
        );
        let mut s = Served::connect(
            addr,
            b"POST / HTTP/1.1\r\n\r\n".to_vec(),
            Duration::from_secs(5),
        )
        .unwrap();
        s.call().unwrap();
        s.call().unwrap();
        s.call().unwrap();
        let e = s.call().unwrap_err();
        assert!(e.contains("500") && e.contains("boom"), "{e}");

        let addr = server(
            vec![answer(
                "200 OK",
                "Transfer-Encoding: chunked\r\n",
                b"2\r\n{}\r\n0\r\n\r\n",
            )],
            7,
        );
        let mut s = Served::connect(
            addr,
            b"POST / HTTP/1.1\r\n\r\n".to_vec(),
            Duration::from_secs(5),
        )
        .unwrap();
        let e = s.call().unwrap_err();
        assert!(e.contains("Content-Length"), "{e}");

        let addr = server(vec![b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()], 100);
        let mut s = Served::connect(
            addr,
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Duration::from_secs(5),
        )
        .unwrap();
        let e = s.call().unwrap_err();
        assert!(e.contains("not an HTTP/1.1 answer"), "{e}");
    }
}
