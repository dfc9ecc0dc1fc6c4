//! `compare --served`: the same runtime behind `harness serve` on loopback (KServe v2 over
//! HTTP, binary tensors), measured with the same shapes, inputs and load modes as in-process
//! through the network workload source, each shape's answer compared with the in-process
//! reference. One more source for the engine: its rows are built as served rows from the
//! start (`ScenarioId::Served`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use runtimes::ModelInfo;

use super::group::{self, Shape};
use super::interleaved;
use super::reference::References;
use super::runlog::WriteError;
use super::{Event, Progress, Row};
use crate::capacity::{self, FindMaxRate};
use crate::inputs;
use crate::measure::{LoadMode, MeasureConfig};
use crate::net::load::{self, LoadOptions};
use crate::parity;
use crate::results::{
    CapacitySearch, InterleavedTax, Parity, ScenarioId, ScenarioResult, Tolerance,
};

/// What the served rows of one runtime need from the run.
pub struct ServedPlan<'a> {
    /// The harness executable for `harness serve` (None: this process's).
    pub exe: Option<PathBuf>,
    pub model: &'a Path,
    pub out: &'a Path,
    /// What the runtime takes (ONNX Runtime's library among them), for the server and for
    /// the in-process instance of the interleaved tax.
    pub runtime_options: &'a runtimes::RuntimeOptions,
    pub modes: &'a [LoadMode],
    pub measure: &'a MeasureConfig,
    pub seed: u64,
    pub tolerance: Tolerance,
    pub interrupt: &'a Arc<AtomicBool>,
    pub runtime: &'a str,
    pub threads: usize,
    /// What is left of `--budget` for these rows and the run's rows after them.
    pub budget: Option<crate::measure::Budget>,
    /// After each closed-loop row, a capacity search over the same connections.
    pub find_max_rate: Option<&'a FindMaxRate>,
    /// The rows of the plan (shape x mode) to run, by index; None: all.
    pub only: Option<Vec<usize>>,
}

/// The id of a served row of `compare --served`.
pub fn served_id(
    runtime: &str,
    threads: usize,
    shape: &inputs::ScenarioShape,
    mode: &LoadMode,
) -> ScenarioId {
    ScenarioId::Served {
        runtime: runtime.to_string(),
        batch: shape.batch,
        seq: shape.seq,
        threads,
        load: mode.to_string(),
    }
}

/// What the served rows add beyond themselves.
#[derive(Default)]
pub struct Extras {
    /// A capacity search after each closed-loop row (`--find-max-rate`).
    pub capacity: Vec<CapacitySearch>,
    /// The tax at concurrency 1 in interleaved blocks, one per shape.
    pub interleaved: Vec<InterleavedTax>,
}

/// How the interleaved tax drives its served side.
const INTERLEAVED_CLIENT: &str = "one instance, called directly and served by this process \
     (inline) over one blocking kept-alive connection, binary tensors";

/// A `harness serve` child on a free loopback port, stopped (SIGTERM) when dropped.
struct ServerChild {
    child: std::process::Child,
    port: u16,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        // SIGTERM for a graceful stop; kill if it is still there after a few seconds.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServedPlan<'_> {
    fn start_server(&self, instances: usize) -> Result<ServerChild, String> {
        let (runtime, threads) = (self.runtime, self.threads);
        let exe = match &self.exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("locating the harness executable: {e}"))?,
        };
        let port_file = self.out.join(format!(".served-{runtime}-t{threads}.port"));
        let _ = std::fs::remove_file(&port_file);
        let log_path = self.out.join(format!("served-{runtime}-t{threads}.log"));
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut cmd = std::process::Command::new(exe);
        super::worker::die_with_parent(&mut cmd);
        cmd.arg("serve")
            .arg("--model")
            .arg(self.model)
            .args(["--runtime", runtime, "--name", "model"])
            .args([
                "--threads",
                &threads.to_string(),
                "--instances",
                &instances.to_string(),
            ])
            .args(["--http-port", "0", "--no-grpc", "--max-batch", "1"])
            .arg("--port-file")
            .arg(&port_file)
            // A safety net: the server stops by itself even if this process is killed.
            .args(["--shutdown-after", "6h"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        if let Some(lib) = &self.runtime_options.ort_lib {
            cmd.arg("--ort-lib").arg(lib);
        }
        if instances == 1 {
            // One connection at a time: each request runs on the thread that read it, with no
            // hand-off to an instance thread and back (the lowest tax at concurrency 1).
            cmd.arg("--inline");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting harness serve: {e}"))?;
        let mut server = ServerChild { child, port: 0 };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if let Some(p) = v["http"].as_u64() {
                    server.port = p as u16;
                    let _ = std::fs::remove_file(&port_file);
                    return Ok(server);
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("harness serve exited ({status}): {}", log.trim()));
            }
            if std::time::Instant::now() > deadline || self.interrupt.load(Ordering::Relaxed) {
                return Err("harness serve did not start listening within 120 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The served rows of this runtime: its server on loopback, the same shapes, inputs and
    /// load modes as in-process; each shape's answer is compared with the in-process
    /// reference. With `--find-max-rate`, a capacity search after each closed-loop row
    /// (its probes are rows too). When the modes hold closed loop at concurrency 1, each
    /// shape's tax is also measured in interleaved blocks against an instance in this
    /// process. Returns the searches and the interleaved taxes.
    pub fn rows(
        &self,
        info: &ModelInfo,
        shapes: &[Shape],
        references: &References,
        progress: Progress,
        emit: &mut dyn FnMut(ScenarioResult) -> Result<(), WriteError>,
    ) -> Result<Extras, WriteError> {
        let mut extras = Extras::default();
        // The interleaved tax's instance, called directly and served by this process:
        // loaded at its first use, kept for every shape.
        let mut local: Option<Result<crate::net::serve::Local, String>> = None;
        let (runtime, threads) = (self.runtime, self.threads);
        let instances = group::max_concurrency(self.modes);
        let id = |shape: &inputs::ScenarioShape, mode: &LoadMode| {
            served_id(runtime, threads, shape, mode)
        };
        progress(Event::Status(&format!(
            "[{runtime}] starting harness serve ({threads} threads, {instances} instance(s){})",
            if instances == 1 { ", run inline" } else { "" }
        )));
        let server = match self.start_server(instances) {
            Ok(s) => s,
            Err(e) => {
                for (i, mode) in group::planned(self.only.as_deref(), shapes.len(), self.modes) {
                    let mut r = Row::blank(&id(&shapes[i].shape, &mode), &mode, self.tolerance);
                    Row::fail(
                        &mut r,
                        format!("could not serve the model: {e}"),
                        "serve",
                        false,
                    );
                    emit(r)?;
                }
                return Ok(extras);
            }
        };
        let started = std::time::Instant::now();
        for (i, sh) in shapes.iter().enumerate() {
            let modes: Vec<LoadMode> = group::modes_of(self.only.as_deref(), i, self.modes)
                .into_iter()
                .cloned()
                .collect();
            if modes.is_empty() {
                continue;
            }
            let lo = LoadOptions {
                budget: self.budget.map(|b| crate::measure::Budget {
                    left: b.left.saturating_sub(started.elapsed()),
                    scenarios: b.scenarios.saturating_sub(i * self.modes.len()),
                }),
                batch: vec![sh.shape.batch],
                seq: vec![sh.shape.seq.unwrap_or(1)],
                overrides: sh.shape.inputs.clone(),
                modes: modes.clone(),
                measure: self.measure.clone(),
                seed: self.seed,
                vocab: Some(info.vocab_size.unwrap_or(2)),
                metrics_url: Some(format!("http://127.0.0.1:{}/metrics", server.port)),
                label: runtime.to_string(),
                server_threads: threads,
                timeout: std::time::Duration::from_secs(60),
                local: Some(info.clone()),
                interrupt: self.interrupt.clone(),
                server_pid: Some(server.child.id()),
                ..LoadOptions::new(
                    &format!("http://127.0.0.1:{}", server.port),
                    load::KSERVE_HTTP,
                    Some("model"),
                )
            };
            let parity = self.served_parity(info, sh, i, &lo, references);
            let mut failed: Option<WriteError> = None;
            let row_id = |_: Option<(usize, usize)>, mode: &LoadMode| id(&sh.shape, mode);
            // Each closed-loop row's rate, the scale of its capacity search.
            let mut scales: Vec<(LoadMode, Result<f64, String>)> = Vec::new();
            let r = load::run_load_as(&lo, &row_id, &mut |mut row| {
                if let Some(mode) = modes.iter().find(|m| {
                    matches!(m, LoadMode::ClosedLoop { .. })
                        && row.id == id(&sh.shape, m).to_string()
                }) {
                    scales.push((mode.clone(), capacity::closed_rate(&row)));
                }
                row.parity = parity.clone();
                if failed.is_none() {
                    if let Err(e) = emit(row) {
                        failed = Some(e);
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            if let Err(e) = r {
                progress(Event::Warning(&format!("[{runtime}] served: {e}")));
                continue;
            }
            let single = LoadMode::ClosedLoop { concurrency: 1 };
            if modes.contains(&single) && !self.interrupt.load(Ordering::Relaxed) {
                progress(Event::Status(&format!(
                    "[{runtime}] {}: the tax in interleaved blocks, in-process and served",
                    id(&sh.shape, &single)
                )));
                let local = local.get_or_insert_with(|| self.load_local(info));
                match self.interleave(local, sh, &lo, &id(&sh.shape, &single)) {
                    Ok(t) => {
                        progress(Event::Finished(&format!(
                            "[{runtime}] {}: tax in interleaved blocks {:+.3} ms p50 ({} pairs)",
                            t.served_scenario, t.tax_ms, t.pairs
                        )));
                        extras.interleaved.push(t);
                    }
                    Err(e) => progress(Event::Warning(&format!(
                        "[{runtime}] the tax in interleaved blocks: {e}"
                    ))),
                }
            }
            let Some(find) = self.find_max_rate else {
                continue;
            };
            let lo = LoadOptions {
                find_max_rate: Some(find.objectives.clone()),
                arrivals: find.arrivals,
                ..lo
            };
            for (mode, rate) in scales {
                if self.interrupt.load(Ordering::Relaxed) {
                    break;
                }
                let shape = Some((sh.shape.batch, sh.shape.seq.unwrap_or(1)));
                let scale = load::Scale::Known(mode, rate);
                let search =
                    load::search_capacity_as(&lo, shape, scale, &row_id, &mut |mut row| {
                        row.parity = Parity::skipped(
                            self.tolerance,
                            "capacity probe: answers are compared in the closed-loop row",
                        );
                        if failed.is_none() {
                            if let Err(e) = emit(row) {
                                failed = Some(e);
                            }
                        }
                    });
                if let Some(e) = failed {
                    return Err(e);
                }
                match search {
                    Ok(search) => {
                        progress(Event::Finished(&format!(
                            "[{runtime}] capacity of {} under {}: {:.1}/s: {}",
                            search.group,
                            capacity::describe(&search.result.objectives),
                            search.result.capacity,
                            search.result.verdict
                        )));
                        extras.capacity.push(search);
                    }
                    Err(e) => progress(Event::Warning(&format!(
                        "[{runtime}] served capacity search: {e}"
                    ))),
                }
            }
        }
        drop(server);
        Ok(extras)
    }

    /// One instance of the runtime in this process, fp32 with the served threads and
    /// options, behind this process's own server (inline, as `harness serve --inline`): both
    /// sides of the interleaved tax. The same runtime already loaded and ran these shapes in
    /// its group's worker and in the server.
    fn load_local(&self, info: &ModelInfo) -> Result<crate::net::serve::Local, String> {
        let rt = runtimes::by_name(self.runtime)
            .ok_or_else(|| format!("unknown runtime '{}'", self.runtime))?;
        let files = runtimes::ModelFiles::resolve(self.model).map_err(|e| e.to_string())?;
        let opts = runtimes::LoadOptions {
            threads: self.threads,
            variant: runtimes::Variant::Fp32,
            runtime: self.runtime_options.clone(),
            ..runtimes::LoadOptions::default()
        };
        let (mut models, _) =
            group::load_or_share(rt.as_ref(), &files, info, &opts, 1).map_err(|e| e.to_string())?;
        let model = models
            .pop()
            .ok_or_else(|| "no instance loaded".to_string())?;
        crate::net::serve::Local::start(model, info, "model", self.runtime)
            .map_err(|e| format!("serving it in this process: {e}"))
    }

    /// The shape's tax at concurrency 1: one instance called directly and through the
    /// server, taking turns by blocks.
    fn interleave(
        &self,
        local: &mut Result<crate::net::serve::Local, String>,
        sh: &Shape,
        lo: &LoadOptions,
        served_id: &ScenarioId,
    ) -> Result<InterleavedTax, String> {
        let server = local
            .as_mut()
            .map_err(|e| format!("loading the in-process instance: {e}"))?;
        let inputs = sh.inputs.as_ref().map_err(|e| e.clone())?;
        server
            .with_model(|m| m.prepare(inputs))
            .map_err(|e| e.to_string())?;
        let target = crate::net::client::Target::parse(
            &format!("http://{}", server.addr),
            lo.protocol.default_port(),
        )?;
        let (request, _) = load::http_infer_request(&target, "model", inputs, true);
        let mut a = interleaved::Direct { server, inputs };
        let mut b = interleaved::Served::connect(target.addr, request, lo.timeout)?;
        let m = interleaved::measure(&mut a, &mut b, self.measure, self.interrupt)?;
        let twin = ScenarioId::InProcess {
            runtime: self.runtime.to_string(),
            device: "cpu".into(),
            variant: "fp32".into(),
            batch: sh.shape.batch,
            seq: sh.shape.seq,
            threads: self.threads,
            load: None,
        };
        Ok(InterleavedTax {
            scenario: twin.to_string(),
            served_scenario: served_id.to_string(),
            protocol: load::KSERVE_HTTP.name().into(),
            client: INTERLEAVED_CLIENT.into(),
            ..m
        })
    }

    /// The served answer to the very inputs the in-process rows used, against the in-process
    /// fp32 reference of that shape.
    fn served_parity(
        &self,
        info: &ModelInfo,
        sh: &Shape,
        index: usize,
        lo: &LoadOptions,
        references: &References,
    ) -> Parity {
        let inputs = match inputs::generate(info, &sh.shape, self.seed) {
            Ok(i) => i,
            Err(e) => return Parity::skipped(self.tolerance, e.to_string()),
        };
        let got = crate::net::client::Target::parse(&lo.target, lo.protocol.default_port())
            .and_then(|t| load::fetch_outputs(lo, &t, &inputs));
        match (got, references.fp32(index)) {
            (Ok(got), Some((name, want))) => parity::compare(&got, want, name, self.tolerance),
            (Ok(_), None) => Parity::skipped(
                self.tolerance,
                "no fp32 in-process reference for this shape",
            ),
            (Err(e), _) => Parity::skipped(self.tolerance, format!("no answer to compare: {e}")),
        }
    }
}
