//! The resource monitors on known work: spinning, sleeping, allocating. Bounds are loose
//! where a shared machine can move them (CPU share) and strict where it cannot (memory).
//! The monitors see the whole process, so these tests take turns.

use std::time::{Duration, Instant};

use harness::monitor::{default_monitors, Sampler};
use harness::results::ResourceReport;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn window(work: impl FnOnce()) -> ResourceReport {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let s = Sampler::start(default_monitors(), Duration::from_millis(20));
    work();
    s.stop()
}

fn thread_cpu_s() -> f64 {
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    }
}

#[test]
fn spinning_shows_as_the_cpu_time_the_spinner_used() {
    let mut spun = 0.0;
    let r = window(|| {
        let c0 = thread_cpu_s();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(400) {
            std::hint::spin_loop();
        }
        spun = thread_cpu_s() - c0;
    });
    // The process's CPU time is the spinner's plus a little (the sampler, the test runner);
    // on an idle machine that is one core busy, on a loaded one less, never more than ~1.
    let cpu = r.cpu_user_s.unwrap() + r.cpu_system_s.unwrap();
    assert!(
        cpu >= spun * 0.95 && cpu <= spun + 0.05,
        "process {cpu} s, spinner {spun} s"
    );
    let cores = r.avg_cores_busy.unwrap();
    assert!((cores - cpu / r.window_s).abs() < 0.05, "{cores}");
    assert!(cores > 0.1 && cores < 1.2, "{cores}");
    assert!(r.window_s >= 0.4);
    // Sampling every 20 ms for 400 ms costs well under 1% of the window.
    assert!(r.monitor_cost.samples >= 5, "{:?}", r.monitor_cost);
    assert!(
        r.monitor_cost.share_of_window < 0.01,
        "{:?}",
        r.monitor_cost
    );
}

#[test]
fn sleeping_is_idle_and_switches_voluntarily() {
    let r = window(|| {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert!(r.avg_cores_busy.unwrap() < 0.3, "{r:?}");
    assert!(r.voluntary_ctx_switches.unwrap() >= 20, "{r:?}");
}

static BEFORE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[test]
fn memory_touched_in_the_window_shows_in_the_peak() {
    let r = window(|| {
        let before = harness::monitor::current_rss_bytes().unwrap();
        let mut v = vec![0u8; 64 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::thread::sleep(Duration::from_millis(60));
        std::hint::black_box(&v);
        BEFORE.store(before, std::sync::atomic::Ordering::SeqCst);
    });
    let before = BEFORE.load(std::sync::atomic::Ordering::SeqCst);
    let peak = r.peak_rss_bytes.unwrap();
    assert!(peak >= before + (60 << 20), "peak {peak} before {before}");
    assert!(
        r.sampled_max_rss_bytes.unwrap() >= before + (60 << 20),
        "{r:?}"
    );
}

#[test]
fn energy_is_measured_or_its_absence_explained() {
    let r = window(|| std::thread::sleep(Duration::from_millis(50)));
    match (r.energy_j, &r.energy_unavailable) {
        (Some(j), None) => assert!(j >= 0.0),
        (None, Some(why)) => assert!(!why.is_empty()),
        other => panic!("energy neither measured nor explained: {other:?}"),
    }
}
