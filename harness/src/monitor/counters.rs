//! Counters of a measured window beyond CPU time: page faults (minor, major), CPU migrations
//! of the process's threads, and — where the machine exposes a PMU — cycles, instructions
//! and cache misses through `perf_event_open`, one counter per thread of the process (the
//! runtimes' pools exist before the window opens), scaled when the PMU multiplexes them.
//! Where a hardware event is not exposed (most VMs: all of them), the row says why instead.

use crate::results::ResourceReport;

use super::sampler::Monitor;

/// The kernel's `struct perf_event_attr`, its first published layout (64 bytes,
/// `PERF_ATTR_SIZE_VER0`), which every kernel accepts.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit 0 disabled, 5 exclude_kernel, 6 exclude_hv.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_HARDWARE: u32 = 0;
const HW_CPU_CYCLES: u64 = 0;
const HW_INSTRUCTIONS: u64 = 1;
const HW_CACHE_MISSES: u64 = 3;
/// exclude_kernel | exclude_hv: what `perf_event_paranoid` 2 allows an unprivileged user.
const USER_ONLY: u64 = (1 << 5) | (1 << 6);
/// Read the time the counter was enabled and running too, to scale multiplexed counts.
const READ_TIMES: u64 = 1 | 2;
const PERF_FLAG_FD_CLOEXEC: u64 = 1 << 3;
/// At most this many counters are held open (3 per thread): a process with more threads is
/// not counted rather than risk running out of file descriptors.
const MAX_COUNTERS: usize = 384;

/// One hardware counter on one thread.
struct Counter {
    fd: i32,
    which: u64,
}

impl Drop for Counter {
    fn drop(&mut self) {
        // SAFETY: fd came from perf_event_open and is closed once.
        unsafe {
            libc::close(self.fd);
        }
    }
}

fn open_counter(tid: i32, which: u64) -> Result<Counter, std::io::Error> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_HARDWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: which,
        flags: USER_ONLY,
        read_format: READ_TIMES,
        ..Default::default()
    };
    // SAFETY: the attr outlives the call; pid = tid, cpu = -1 (any), no group, close on exec.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid,
            -1i32,
            -1i32,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(Counter {
            fd: fd as i32,
            which,
        })
    }
}

/// The counter's value, scaled by enabled / running time when the PMU multiplexed it.
fn read_counter(c: &Counter) -> Option<u64> {
    let mut v = [0u64; 3];
    // SAFETY: reads 24 bytes (value, time enabled, time running) into v.
    let n = unsafe { libc::read(c.fd, v.as_mut_ptr() as *mut libc::c_void, 24) };
    if n != 24 {
        return None;
    }
    let [value, enabled, running] = v;
    if running == 0 {
        return (value == 0).then_some(0);
    }
    Some((value as f64 * enabled as f64 / running as f64).round() as u64)
}

/// The thread ids of this process.
fn threads() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU migrations so far of each thread of this process (`se.nr_migrations` of its /proc
/// sched file).
fn migrations() -> std::collections::BTreeMap<i32, u64> {
    let mut out = std::collections::BTreeMap::new();
    for tid in threads() {
        let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")) else {
            continue;
        };
        if let Some(v) = s
            .lines()
            .find(|l| l.starts_with("se.nr_migrations"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            out.insert(tid, v);
        }
    }
    out
}

fn faults() -> Option<(u64, u64)> {
    // SAFETY: getrusage writes into the zeroed struct we own.
    unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut r) == 0)
            .then_some((r.ru_minflt.max(0) as u64, r.ru_majflt.max(0) as u64))
    }
}

/// Page faults, migrations and hardware counters over the window.
#[derive(Default)]
pub struct CountersMonitor {
    faults: Option<(u64, u64)>,
    migrations: Option<std::collections::BTreeMap<i32, u64>>,
    hw: Vec<Counter>,
    hw_unavailable: Option<String>,
}

impl CountersMonitor {
    /// Opens cycles, instructions and cache misses on every thread; an event the machine
    /// does not count is left out (and said), the others still count.
    fn open_hw(&mut self) {
        let tids = threads();
        if tids.len() * 3 > MAX_COUNTERS {
            self.hw_unavailable = Some(format!(
                "hardware counters not opened: {} threads would take {} file descriptors (at most {MAX_COUNTERS})",
                tids.len(),
                tids.len() * 3
            ));
            return;
        }
        let mut all = Vec::new();
        let mut missing: Vec<(&str, String)> = Vec::new();
        for which in [HW_CPU_CYCLES, HW_INSTRUCTIONS, HW_CACHE_MISSES] {
            let mut event = Vec::new();
            let mut failed = None;
            for &tid in &tids {
                match open_counter(tid, which) {
                    Ok(c) => event.push(c),
                    // A thread that ended between the listing and the call.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => all.extend(event),
                Some(e) => missing.push((event_name(which), hw_reason(&e))),
            }
        }
        self.hw = all;
        self.hw_unavailable = match missing.as_slice() {
            [] => None,
            // None counted, all for one reason: the reason.
            [(_, a), (_, b), (_, c)] if a == b && b == c => Some(a.clone()),
            some => Some(
                some.iter()
                    .map(|(n, why)| format!("{n}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
    }
}

fn event_name(which: u64) -> &'static str {
    match which {
        HW_CPU_CYCLES => "cycles",
        HW_INSTRUCTIONS => "instructions",
        _ => "cache misses",
    }
}

/// Why hardware counters cannot be read, in words.
fn hw_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => format!(
            "hardware counters are not exposed on this machine (perf_event_open: {e}; usual on VMs without a virtual PMU)"
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "hardware counters are not permitted (perf_event_open: {e}): lower /proc/sys/kernel/perf_event_paranoid to 2 or below"
        ),
        _ => format!("hardware counters unavailable (perf_event_open: {e})"),
    }
}

impl Monitor for CountersMonitor {
    fn name(&self) -> &'static str {
        "counters"
    }

    fn begin(&mut self) {
        self.open_hw();
        self.faults = faults();
        self.migrations = Some(migrations());
    }

    fn sample(&mut self) {}

    fn end(&mut self, report: &mut ResourceReport) {
        let sum = |which: u64| -> Option<u64> {
            let of: Vec<u64> = self
                .hw
                .iter()
                .filter(|c| c.which == which)
                .filter_map(read_counter)
                .collect();
            (!of.is_empty()).then(|| of.iter().sum())
        };
        report.cycles = sum(HW_CPU_CYCLES);
        report.instructions = sum(HW_INSTRUCTIONS);
        report.cache_misses = sum(HW_CACHE_MISSES);
        report.ipc = match (report.instructions, report.cycles) {
            (Some(i), Some(c)) if c > 0 => Some(i as f64 / c as f64),
            _ => None,
        };
        report.hw_counters_unavailable = self.hw_unavailable.take();
        self.hw.clear();
        if let (Some((a0, b0)), Some((a1, b1))) = (self.faults.take(), faults()) {
            report.minor_page_faults = Some(a1.saturating_sub(a0));
            report.major_page_faults = Some(b1.saturating_sub(b0));
        }
        // Per thread: a thread that ended in the window takes only its own count with it;
        // one that started in it counts whole.
        if let Some(m0) = self.migrations.take() {
            let m1 = migrations();
            if !m1.is_empty() {
                report.cpu_migrations = Some(
                    m1.iter()
                        .map(|(tid, v)| v.saturating_sub(*m0.get(tid).unwrap_or(&0)))
                        .sum(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_migrations_and_hardware_counters_or_their_reason() {
        let mut m = CountersMonitor::default();
        m.begin();
        // Touch 16 MB of fresh memory: at least one minor fault per 4 KiB page.
        let v = vec![1u8; 16 << 20];
        std::hint::black_box(&v);
        let mut r = ResourceReport::default();
        m.end(&mut r);
        assert!(
            r.minor_page_faults.unwrap() >= 1000,
            "{:?}",
            r.minor_page_faults
        );
        assert!(r.cpu_migrations.is_some());
        // Either the machine counts (then instructions were retired), or the row says why.
        match (r.instructions, &r.hw_counters_unavailable) {
            (Some(i), None) => assert!(i > 1_000_000 && r.ipc.unwrap() > 0.0, "{r:?}"),
            (_, Some(why)) => assert!(why.contains("perf_event_open"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
