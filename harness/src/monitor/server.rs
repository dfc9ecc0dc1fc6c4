//! A server's process tree over the window (`harness load --server-pid`, `compare --served`):
//! its CPU time (every process under the root, the workers a server forks included) and its
//! resident memory, summed over the tree, sampled for the peak. Read from /proc, so the
//! server may be any program on this machine.

use std::collections::BTreeMap;

use crate::results::{ResourceReport, ServerResources};

use super::sampler::Monitor;

/// `utime + stime` (clock ticks), the parent pid and the resident pages of one process, from
/// /proc/PID/stat (the command name may hold spaces and parentheses: fields count from the
/// last ')').
fn stat(pid: u32) -> Option<(u64, u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) ... rss(21).
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let rss_pages = f.get(21)?.parse().ok()?;
    Some((ticks, ppid, rss_pages))
}

/// The processes under `root` (itself included) with their CPU ticks and resident pages.
fn tree(root: u32) -> BTreeMap<u32, (u64, u64)> {
    let mut all: Vec<(u32, u32, u64, u64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ticks, ppid, rss)) = stat(pid) {
                all.push((pid, ppid, ticks, rss));
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid, ticks, rss) in &all {
            if (pid == p || ppid == p) && !out.contains_key(&pid) {
                out.insert(pid, (ticks, rss));
                if pid != p {
                    frontier.push(pid);
                }
            }
        }
    }
    out
}

fn tick_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / hz.max(1) as f64
}

fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64
}

pub struct ServerMonitor {
    root: u32,
    start: Option<std::time::Instant>,
    /// CPU ticks of each process at the window start (0 for those born since).
    first: BTreeMap<u32, u64>,
    /// The latest ticks seen of each process (an exited one keeps its last).
    last: BTreeMap<u32, u64>,
    peak_rss_pages: u64,
    processes: usize,
}

impl ServerMonitor {
    pub fn new(root: u32) -> ServerMonitor {
        ServerMonitor {
            root,
            start: None,
            first: BTreeMap::new(),
            last: BTreeMap::new(),
            peak_rss_pages: 0,
            processes: 0,
        }
    }
}

impl Monitor for ServerMonitor {
    fn name(&self) -> &'static str {
        "server"
    }

    fn begin(&mut self) {
        let t = tree(self.root);
        self.first = t.iter().map(|(&p, &(ticks, _))| (p, ticks)).collect();
        self.last = self.first.clone();
        self.peak_rss_pages = t.values().map(|&(_, rss)| rss).sum();
        self.processes = t.len();
        self.start = Some(std::time::Instant::now());
    }

    fn sample(&mut self) {
        let t = tree(self.root);
        for (&p, &(ticks, _)) in &t {
            self.first.entry(p).or_insert(0);
            self.last.insert(p, ticks);
        }
        self.peak_rss_pages = self
            .peak_rss_pages
            .max(t.values().map(|&(_, rss)| rss).sum());
        self.processes = self.processes.max(t.len());
    }

    fn end(&mut self, report: &mut ResourceReport) {
        let Some(start) = self.start.take() else {
            return;
        };
        self.sample();
        let wall = start.elapsed().as_secs_f64();
        let ticks: u64 = self
            .last
            .iter()
            .map(|(p, &t)| t.saturating_sub(self.first.get(p).copied().unwrap_or(0)))
            .sum();
        let cpu_s = ticks as f64 * tick_s();
        report.server = Some(ServerResources {
            pid: self.root,
            processes: self.processes as u32,
            cpu_s,
            cores_busy: if wall > 0.0 { cpu_s / wall } else { 0.0 },
            peak_rss_bytes: self.peak_rss_pages * page_bytes(),
            alive: std::path::Path::new(&format!("/proc/{}", self.root)).exists(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_tree_is_its_root_and_every_descendant_with_their_cpu() {
        // A shell with a busy child: the tree holds both, and the child's CPU counts.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sh -c 'while :; do :; done' & wait"])
            .spawn()
            .unwrap();
        let root = child.id();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut m = ServerMonitor::new(root);
        m.begin();
        std::thread::sleep(std::time::Duration::from_millis(600));
        let mut r = ResourceReport::default();
        m.end(&mut r);
        // SAFETY: signals to the group of processes this test started.
        unsafe {
            for p in tree(root).keys() {
                libc::kill(*p as i32, libc::SIGKILL);
            }
        }
        let _ = child.wait();
        let s = r.server.expect("a server report");
        assert_eq!(s.pid, root);
        assert!(s.processes >= 2, "{s:?}");
        // The busy child: most of a core (a loaded machine may give it less).
        assert!(s.cores_busy > 0.2 && s.cores_busy < 1.5, "{s:?}");
        assert!(s.peak_rss_bytes > 0);
        assert!(s.alive);
    }

    #[test]
    fn a_missing_process_is_an_empty_tree() {
        // Pids wrap far below this on Linux (pid_max is at most 2^22).
        let mut m = ServerMonitor::new(u32::MAX - 1);
        m.begin();
        let mut r = ResourceReport::default();
        m.end(&mut r);
        let s = r.server.unwrap();
        assert_eq!((s.processes, s.cpu_s, s.alive), (0, 0.0, false));
    }
}
