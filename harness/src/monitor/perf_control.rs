//! Telling a profiler when a measured window opens and closes, so that it records only the
//! windows: `perf record --control fifo:CTL,ACK -D -1` starts disabled and obeys `enable` and
//! `disable` written to CTL, answering `ack` on ACK. The harness finds the two FIFOs in
//! `HARNESS_PERF_CONTROL=CTL:ACK` (set by `profiles/perf.sh`; worker processes inherit it).
//! Without the variable this is a no-op. A profiler that does not answer within 5 s is
//! reported (once) and the measurement goes on; later windows still send their commands.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The environment variable naming the control and acknowledgement FIFOs.
pub const ENV: &str = "HARNESS_PERF_CONTROL";

/// CLOCK_MONOTONIC now, in seconds: the clock of `perf record -k CLOCK_MONOTONIC`.
pub fn monotonic_s() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
    }
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Set after a profiler failed to answer once: the warning is not repeated.
static WARNED: Mutex<bool> = Mutex::new(false);

/// How long perf may take to acknowledge (it may be busy writing DWARF stacks).
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Enables (`true`) or disables the profiler under control, if there is one. A command that
/// is not acknowledged is warned about once; later windows still send theirs.
pub fn window(open: bool) {
    let Ok(spec) = std::env::var(ENV) else {
        return;
    };
    let cmd = if open { "enable" } else { "disable" };
    if let Err(e) = send(&spec, cmd) {
        let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
        if !*warned {
            eprintln!(
                "profiler control ({ENV}={spec}): {e}; the profile may miss this window or hold time outside it"
            );
            *warned = true;
        }
    }
}

/// `CTL:ACK` split where both halves are existing paths (a path may hold a colon), else at
/// the last colon.
fn split_spec(spec: &str) -> Option<(&str, &str)> {
    spec.match_indices(':')
        .map(|(i, _)| (&spec[..i], &spec[i + 1..]))
        .find(|(c, a)| Path::new(c).exists() && Path::new(a).exists())
        .or_else(|| spec.rsplit_once(':'))
}

fn send(spec: &str, cmd: &str) -> Result<(), String> {
    let (ctl, ack) = split_spec(spec).ok_or("expected CTL:ACK, two FIFO paths")?;
    // Non-blocking opens: a FIFO with no profiler at the other end fails instead of hanging.
    let mut c = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(ctl)
        .map_err(|e| format!("{ctl}: {e}"))?;
    let mut a = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(ack)
        .map_err(|e| format!("{ack}: {e}"))?;
    c.write_all(format!("{cmd}\n").as_bytes())
        .map_err(|e| format!("{ctl}: {e}"))?;
    let deadline = Instant::now() + ACK_WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    while Instant::now() < deadline {
        match a.read(&mut buf) {
            Ok(n) if n > 0 => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(3).any(|w| w == b"ack") {
                    return Ok(());
                }
            }
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    Err(format!(
        "no ack on {ack} within {} s after '{cmd}'",
        ACK_WAIT.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_monotonic_seconds() {
        let (a, b) = (monotonic_s(), monotonic_s());
        assert!(a > 0.0 && b >= a);
    }

    #[test]
    fn a_fifo_without_a_profiler_fails_fast_instead_of_hanging() {
        let d = std::env::temp_dir().join(format!("perf-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let (ctl, ack) = (d.join("ctl"), d.join("ack"));
        for p in [&ctl, &ack] {
            let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
            // SAFETY: a NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        }
        let t = Instant::now();
        let e = send(&format!("{}:{}", ctl.display(), ack.display()), "enable").unwrap_err();
        assert!(e.contains("ctl"), "{e}");
        assert!(t.elapsed() < Duration::from_millis(500));
        assert!(send("no-colon", "enable").unwrap_err().contains("CTL:ACK"));
        // A colon inside a path: the split that names two existing paths wins.
        let odd = d.join("a:b");
        std::fs::create_dir_all(&odd).unwrap();
        let (c, a) = (odd.join("ctl"), odd.join("ack"));
        std::fs::write(&c, "").unwrap();
        std::fs::write(&a, "").unwrap();
        let spec = format!("{}:{}", c.display(), a.display());
        assert_eq!(
            split_spec(&spec),
            Some((c.to_str().unwrap(), a.to_str().unwrap()))
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
