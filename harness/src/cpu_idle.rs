//! `--cpu-idle`: whether idle CPUs may sleep deeply while the harness measures.
//!
//! A thread woken on an idle CPU waits for that CPU to leave its idle state first. On a
//! virtual machine whose idle vCPUs halt, that is the largest part of a loopback round trip:
//! blocking TCP ping-pong of 64 bytes took 0.109 ms at the median on a 2-vCPU cloud VM with
//! its idle states allowed, 0.025 ms with them held off; bare-metal deep C-states cost the
//! same in kind. In-process rows hardly notice (ONNX Runtime's threads spin between
//! operators and between runs); a served request pays it twice, once in the server and once
//! in the client, which waits asleep for its answer. So `shallow`, the default, holds the
//! kernel's CPU latency QoS at 0 µs for the run (`/dev/cpu_dma_latency`, as tuned's
//! latency-performance profile does): idle CPUs poll instead of halting, on every side alike.
//! The hold ends with the process, however it ends; the environment record says which it was.

use std::io::Write;
use std::sync::OnceLock;

/// The PM QoS device: a process that writes a 32-bit latency bound (µs) to it holds that
/// bound for the whole machine until it closes the file.
const QOS_DEVICE: &str = "/dev/cpu_dma_latency";

/// What `--cpu-idle` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuIdle {
    /// Idle CPUs poll (CPU latency QoS 0 µs) for the run
    Shallow,
    /// The machine's own idle policy, untouched
    Os,
}

impl CpuIdle {
    /// The flag's value.
    pub fn name(self) -> &'static str {
        match self {
            CpuIdle::Shallow => "shallow",
            CpuIdle::Os => "os",
        }
    }
}

/// What a run recorded with `status` had asked for: `shallow` also when its hold could not
/// be taken; `os` for a run that recorded nothing (earlier versions left idle CPUs alone).
pub fn asked(status: Option<&str>) -> CpuIdle {
    match status {
        Some(s) if s.starts_with("shallow") || s.starts_with(REFUSED) => CpuIdle::Shallow,
        _ => CpuIdle::Os,
    }
}

/// What a run recorded with `status` had in effect: `shallow` (idle CPUs polled), `os`
/// (the machine's policy, asked for or after a refused hold), `mixed` (runs merged), or
/// `not recorded`.
pub fn applied(status: Option<&str>) -> &str {
    status.map_or("not recorded", |s| s.split([' ', ':']).next().unwrap_or(s))
}

/// How the status of a hold that could not be taken begins.
const REFUSED: &str = "os: the CPU latency QoS could not be held";

/// The held QoS file (kept open until the process exits), what was asked and what the run
/// records.
struct Held {
    _file: Option<std::fs::File>,
    mode: CpuIdle,
    status: String,
}

static HELD: OnceLock<Held> = OnceLock::new();

/// Applies `mode` for the rest of this process. The first call decides: a later one that
/// asks otherwise is warned and gets what the first decided. Returns the status the
/// environment records; a hold that cannot be taken is not an error: the run goes on under
/// the machine's policy and the status says why.
pub fn apply(mode: CpuIdle) -> &'static str {
    let held = HELD.get_or_init(|| match mode {
        CpuIdle::Os => Held {
            _file: None,
            mode,
            status: format!("os ({})", policy()),
        },
        CpuIdle::Shallow => match take(QOS_DEVICE) {
            Ok(file) => Held {
                _file: Some(file),
                mode,
                status: format!(
                    "shallow: CPU latency QoS held at 0 us ({QOS_DEVICE}) for the run; {}",
                    policy()
                ),
            },
            Err(e) => Held {
                _file: None,
                mode,
                status: format!(
                    "{REFUSED} ({QOS_DEVICE}: {e}; {}), so \
                         idle CPUs may sleep deeply and each wake-up of a served request costs \
                         more; {}",
                    match e.kind() {
                        std::io::ErrorKind::PermissionDenied => "it needs root",
                        std::io::ErrorKind::NotFound => {
                            "no such device here: not Linux, or a container without it"
                        }
                        _ => "the kernel refused it",
                    },
                    policy()
                ),
            },
        },
    });
    if held.mode != mode {
        eprintln!(
            "warning: --cpu-idle {} asked after {} was applied in this process; {} holds",
            mode.name(),
            held.mode.name(),
            held.mode.name()
        );
    }
    &held.status
}

/// Whether `apply` could not do what it was asked: the line to warn with.
pub fn warning(status: &str) -> Option<String> {
    status.starts_with(REFUSED).then(|| {
        format!(
            "--cpu-idle shallow: {}; {}pass --cpu-idle os to accept the machine's policy",
            status.trim_start_matches("os: "),
            if status.contains("it needs root") {
                "run as root, or "
            } else {
                ""
            }
        )
    })
}

/// What this process applied, or None when it applied nothing (a command that does not
/// measure).
pub fn status() -> Option<String> {
    HELD.get().map(|h| h.status.clone())
}

/// Opens the QoS device and writes a bound of 0 µs; the bound holds while the file is open.
fn take(path: &str) -> std::io::Result<std::fs::File> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(&0i32.to_ne_bytes())?;
    Ok(f)
}

/// The kernel's idle driver and governor, as sysfs names them.
fn policy() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    match (
        read("/sys/devices/system/cpu/cpuidle/current_driver"),
        read("/sys/devices/system/cpu/cpuidle/current_governor_ro")
            .or_else(|| read("/sys/devices/system/cpu/cpuidle/current_governor")),
    ) {
        (Some(d), Some(g)) => format!("cpuidle driver {d}, governor {g}"),
        (Some(d), None) => format!("cpuidle driver {d}"),
        _ => "no cpuidle driver: idle CPUs halt".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_of_zero_is_written_as_the_kernel_reads_it() {
        let dir = std::env::temp_dir().join(format!("harness-cpu-idle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qos");
        std::fs::write(&path, b"").unwrap();
        let f = take(path.to_str().unwrap()).unwrap();
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), 0i32.to_ne_bytes());
        assert!(take(dir.join("absent").to_str().unwrap()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_a_run_asked_is_read_back_from_its_status() {
        let held = apply(CpuIdle::Shallow).to_string();
        assert_eq!(asked(Some(&held)), CpuIdle::Shallow, "{held}");
        assert_eq!(asked(Some("os (cpuidle driver haltpoll)")), CpuIdle::Os);
        assert_eq!(asked(None), CpuIdle::Os);
        assert_eq!(status().as_deref(), Some(held.as_str()));
        assert_eq!(applied(Some(REFUSED)), "os");
        assert_eq!(
            applied(Some("shallow: CPU latency QoS held at 0 us")),
            "shallow"
        );
        assert_eq!(applied(Some("mixed across the runs: a | b")), "mixed");
        assert_eq!(applied(None), "not recorded");
    }

    #[test]
    fn a_refused_hold_warns_with_the_fix_and_a_taken_one_does_not() {
        let refused = "os: the CPU latency QoS could not be held (/dev/cpu_dma_latency: \
                       Permission denied (os error 13); it needs root), so ...";
        let w = warning(refused).unwrap();
        assert!(
            w.contains("Permission denied") && w.contains("--cpu-idle os"),
            "{w}"
        );
        let absent = "os: the CPU latency QoS could not be held (/dev/cpu_dma_latency: \
                      No such file or directory (os error 2); no such device here: not Linux, \
                      or a container without it), so ...";
        let w = warning(absent).unwrap();
        assert!(w.contains("no such device") && !w.contains("root"), "{w}");
        assert!(warning("shallow: CPU latency QoS held at 0 us").is_none());
        assert!(warning("os (cpuidle driver haltpoll, governor haltpoll)").is_none());
    }
}
