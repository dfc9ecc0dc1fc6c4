//! Which threads run where (`--pin`): the measuring thread, the runtimes' own worker
//! threads, and the workers of a concurrent scenario.

use serde::{Deserialize, Serialize};

/// Which threads are pinned where (`--pin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinning {
    /// The measuring thread's CPU.
    pub measuring: Option<usize>,
    /// CPUs for the runtimes' own worker threads and for concurrent workers, round robin.
    pub workers: Option<Vec<usize>>,
}
impl Pinning {
    /// `measuring` (the measuring thread on CPU 0), `none`, `compact` (every thread, CPUs
    /// 0, 1, ... in order) or a CPU list like `0,2-3` (every thread, over those CPUs).
    pub fn parse(s: &str, online: usize) -> Result<Pinning, String> {
        let all = |cpus: Vec<usize>| Pinning {
            measuring: cpus.first().copied(),
            workers: Some(cpus),
        };
        match s.trim() {
            "measuring" => Ok(Pinning {
                measuring: Some(0),
                workers: None,
            }),
            "none" => Ok(Pinning {
                measuring: None,
                workers: None,
            }),
            "compact" => Ok(all((0..online).collect())),
            list => {
                let mut cpus = Vec::new();
                for part in list.split(',').map(str::trim) {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    let bad = || {
                        format!("--pin {s}: '{part}' is not a CPU or a range (measuring, none, compact or a list like 0,2-3)")
                    };
                    let a: usize = a.trim().parse().map_err(|_| bad())?;
                    let b: usize = b.trim().parse().map_err(|_| bad())?;
                    if a > b {
                        return Err(bad());
                    }
                    for c in a..=b {
                        if c >= online {
                            return Err(format!(
                                "--pin {s}: CPU {c} is not online (this machine has CPUs 0-{})",
                                online - 1
                            ));
                        }
                        if !cpus.contains(&c) {
                            cpus.push(c);
                        }
                    }
                }
                Ok(all(cpus))
            }
        }
    }

    pub fn label(&self) -> String {
        match (&self.measuring, &self.workers) {
            (None, _) => "not pinned".into(),
            (Some(c), None) => {
                format!("measuring thread pinned to CPU {c}; runtime worker threads not pinned")
            }
            (Some(c), Some(w)) => format!(
                "measuring thread on CPU {c}; runtime worker threads and concurrent workers round robin over CPUs {w:?}"
            ),
        }
    }

    /// Places worker `i` of a concurrent scenario: on the `--pin` list round robin, else on
    /// the CPU after the measuring thread's; unpinned (every CPU) when pinning is off.
    /// Threads inherit the affinity of the thread that starts them, so each worker calls
    /// this itself.
    pub fn place_worker(&self, i: usize) {
        match (&self.workers, self.measuring) {
            (Some(w), _) => {
                runtimes::pin_current_thread(w[i % w.len()]);
            }
            (None, Some(base)) => {
                runtimes::pin_current_thread((base + i) % runtimes::online_cpus());
            }
            (None, None) => {
                runtimes::unpin_current_thread();
            }
        }
    }

    /// Where [`Pinning::place_worker`] puts worker i, in words.
    pub fn workers_label(&self) -> String {
        match (&self.workers, self.measuring) {
            (Some(w), _) => format!("worker i on CPU {w:?}[i % {}]", w.len()),
            (None, Some(base)) => {
                format!(
                    "worker i on CPU ({base} + i) mod {}",
                    runtimes::online_cpus()
                )
            }
            (None, None) => "not pinned".into(),
        }
    }
}

/// Pins the calling thread; returns what was applied.
pub fn pin_current(pin: Option<usize>) -> String {
    match pin {
        Some(id) => {
            if core_affinity::set_for_current(core_affinity::CoreId { id }) {
                format!("CPU {id}")
            } else {
                format!("requested CPU {id}, pinning refused by the OS")
            }
        }
        None => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_settings_parse() {
        assert_eq!(
            Pinning::parse("measuring", 4).unwrap(),
            Pinning {
                measuring: Some(0),
                workers: None
            }
        );
        assert_eq!(Pinning::parse("none", 4).unwrap().measuring, None);
        assert_eq!(
            Pinning::parse("compact", 3).unwrap().workers,
            Some(vec![0, 1, 2])
        );
        let p = Pinning::parse("2,0-1,1", 4).unwrap();
        assert_eq!(p.measuring, Some(2));
        assert_eq!(p.workers, Some(vec![2, 0, 1]));
        assert!(Pinning::parse("0,7", 4)
            .unwrap_err()
            .contains("CPU 7 is not online"));
        assert!(Pinning::parse("3-1", 4).is_err());
        assert!(Pinning::parse("tight", 4)
            .unwrap_err()
            .contains("measuring, none, compact"));
    }
}
