//! Progress on stderr, and the one-line summary of a finished network scenario.

use crate::engine::Event;
use crate::results::ScenarioResult;

/// Progress on stderr: a bar (done/total, ETA, what runs now) on a terminal, plain lines
/// otherwise (logs, CI).
pub struct Display {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
    terminal: bool,
}

impl Display {
    pub fn new() -> Display {
        Display {
            bar: std::sync::Mutex::new(None),
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    pub fn show(&self, e: Event) {
        let mut bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        match (e, self.terminal) {
            (Event::Phase(..), _) => {}
            (Event::Plan(n), true) => {
                let b = indicatif::ProgressBar::new(n as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} scenarios, {elapsed} (eta {eta})  {wide_msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                *bar = Some(b);
            }
            (Event::Plan(n), false) => eprintln!("[harness] {n} scenarios"),
            (Event::Status(s), true) => match bar.as_ref() {
                Some(b) => b.set_message(s.to_string()),
                None => eprintln!("{s}"),
            },
            (Event::Finished(s), true) => match bar.as_ref() {
                Some(b) => {
                    b.println(s);
                    b.inc(1);
                }
                None => eprintln!("{s}"),
            },
            (Event::Warning(s), true) => match bar.as_ref() {
                Some(b) => b.println(s),
                None => eprintln!("{s}"),
            },
            (Event::Status(s) | Event::Finished(s) | Event::Warning(s), false) => eprintln!("{s}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}

impl Default for Display {
    fn default() -> Self {
        Self::new()
    }
}

/// One line per finished network scenario, for the log.
pub fn row_line(r: &ScenarioResult) -> String {
    let Some(m) = &r.measurement else {
        return format!("{}: {}", r.id, r.error.as_deref().unwrap_or("not measured"));
    };
    let mut s = format!(
        "{}: p50 {:.2} ms, p99 {:.2} ms, {:.1} items/s, {} requests, {} errors",
        r.id,
        m.latency.p50_ms,
        m.latency.p99_ms,
        r.throughput_per_s.unwrap_or(0.0),
        m.iterations,
        m.failures
    );
    if let Some(sv) = &r.served {
        if let Some(c) = sv.client_cores_busy {
            s.push_str(&format!(", client {c:.2} cores"));
        }
        if let Some(srv) = r.resources.as_ref().and_then(|x| x.server.as_ref()) {
            s.push_str(&format!(
                ", server {:.2} cores, {:.0} MB{}",
                srv.cores_busy,
                srv.peak_rss_bytes as f64 / 1e6,
                if srv.alive {
                    ""
                } else {
                    " (SERVER GONE by the window's end)"
                }
            ));
        }
        if let Some(why) = &sv.client_limited {
            s.push_str(&format!(" (CLIENT-LIMITED: {why})"));
        } else if sv.client_saturated {
            s.push_str(" (CLIENT SATURATED: the figures may describe the load generator)");
        }
        if let Some(b) = sv.server_avg_batch {
            s.push_str(&format!(", server batch {b:.2}"));
        }
        if let Some(b) = &sv.breakdown {
            if let (Some(inside), Some(outside)) = (b.server_total_ms, b.outside_server_ms) {
                s.push_str(&format!(
                    ", mean {:.3} ms = {inside:.3} in the server + {outside:.3} outside",
                    b.total_ms
                ));
            }
        }
        if let Some(st) = &sv.streaming {
            s.push_str(&format!(
                ", TTFT p50 {:.1} ms, TPOT p50 {:.2} ms, ITL p50 {:.2} ms",
                st.ttft.p50_ms, st.tpot.p50_ms, st.itl.p50_ms
            ));
            if let Some(g) = st.goodput_per_s {
                s.push_str(&format!(", goodput {g:.2}/s"));
            }
        }
    }
    if let Some(o) = &r.open_loop {
        s.push_str(&format!(
            ", achieved {:.1}/s of {:.1}/s, {} late sends",
            o.achieved_rate, o.target_rate, o.late_sends
        ));
        if let Some(lag) = &o.send_lag {
            s.push_str(&format!(
                " (send lag p50 {:.3} ms, p99 {:.3} ms)",
                lag.p50_ms, lag.p99_ms
            ));
        }
    }
    s
}
