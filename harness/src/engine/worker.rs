//! Process isolation: each group (one runtime, one thread count) can run in a child process,
//! `harness worker`, so that an abort inside a runtime (ONNX Runtime on a malformed graph, a
//! CUDA fault) loses only that group's unfinished rows.
//!
//! The parent writes a `GroupSpec` as JSON to the child's stdin. The child answers one JSON
//! line per scenario on stdout (`{"index", "row", "outputs"}`), writing each scenario's
//! outputs to a file (`runtimes::tensor::write_tensors`) that the parent reads for parity.
//! Progress travels the same way (`{"status"}` lines), so the parent alone draws it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use runtimes::{HostTensor, ModelFiles, ModelInfo};
use serde::{Deserialize, Serialize};

use super::group::{self, GroupSpec, Output};
use super::{Event, Overrun, Progress, Watch};
use crate::results::{CapacitySearch, ScenarioResult};

/// What a worker writes on stdout, one JSON object a line.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Message {
    Row(Box<Line>),
    Status {
        status: String,
    },
    Warning {
        warning: String,
    },
    /// A panic inside the worker, with its message and place, sent before the process ends.
    Panic {
        panic: String,
    },
    /// A phase begins and must end within `within_s` seconds, else the worker is stopped.
    Phase {
        phase: String,
        within_s: f64,
    },
    /// A capacity search's probe: a row beyond the plan.
    Probe {
        probe: Box<ScenarioResult>,
    },
    /// A finished capacity search.
    Capacity {
        capacity: Box<CapacitySearch>,
    },
    /// A shape's outputs for the parity reference, without a row.
    Reference {
        reference: usize,
        outputs: PathBuf,
    },
}

#[derive(Serialize, Deserialize)]
struct Line {
    index: usize,
    /// Which shape the row measured (rows of one shape share its reference).
    shape: usize,
    row: ScenarioResult,
    outputs: Option<PathBuf>,
}

/// Writes outputs to the worker's outputs folder for the parent (named by the group and
/// `tag`) and returns the file.
fn save_outputs(w: &WorkerInput, tag: &str, o: &[HostTensor]) -> Result<PathBuf, WorkerError> {
    let p = w.outputs_dir.join(format!(
        "{}-{}-t{}-{tag}.bin",
        w.spec.runtime,
        w.spec.variant.as_str(),
        w.spec.threads
    ));
    runtimes::tensor::write_tensors(&p, o).map_err(|source| WorkerError::Outputs {
        path: p.clone(),
        source,
    })?;
    Ok(p)
}

/// Reads (and removes) outputs a worker saved; unreadable ones are a warning naming `what`.
fn take_outputs(p: &Path, what: &str, progress: Progress) -> Option<Vec<HostTensor>> {
    let t = runtimes::tensor::read_tensors(p);
    let _ = std::fs::remove_file(p);
    match t {
        Ok(t) => Some(t),
        Err(e) => {
            progress(Event::Warning(&format!("warning: {what} unreadable: {e}")));
            None
        }
    }
}

/// What the worker is told: the group, and where to put outputs.
#[derive(Serialize, Deserialize)]
pub struct WorkerInput {
    pub spec: GroupSpec,
    pub outputs_dir: PathBuf,
}

/// How a group run ended.
#[derive(Debug, PartialEq)]
pub enum GroupEnd {
    Finished,
    /// The worker died; the words say how (signal, exit code).
    Died(String),
    /// A phase passed its deadline and the worker was stopped (or, in this process, the run
    /// ends: a thread cannot be stopped).
    TimedOut(Overrun),
    Interrupted,
}

/// `harness worker`: runs one group from the spec on `input`, answers on `out`.
/// Why a worker process could not run its group (the parent reports its rows as lost).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("reading the group from stdin: {0}")]
    Spec(serde_json::Error),
    #[error(transparent)]
    Model(#[from] runtimes::model::ModelError),
    #[error(transparent)]
    Input(#[from] crate::inputs::InputError),
    #[error("writing outputs for the parity check to {path}: {source}")]
    Outputs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("answering the parent: {0}")]
    Answer(#[from] std::io::Error),
}

pub fn run_worker(input: impl Read, mut out: impl Write + Send) -> Result<(), WorkerError> {
    // A panic in a runtime ends this process; its message goes to the parent first, so the
    // row that records the loss says what happened.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = runtimes::panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let m = Message::Panic {
            panic: format!("{payload}{at}"),
        };
        if let Ok(line) = serde_json::to_string(&m) {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
        default_hook(info);
    }));
    let w: WorkerInput = serde_json::from_reader(input).map_err(WorkerError::Spec)?;
    let files = ModelFiles::resolve(&w.spec.model)?;
    let info = ModelInfo::read(&files)?;
    let shapes = group::build_shapes(
        &info,
        &w.spec.batches,
        &w.spec.seqs,
        &w.spec.shapes,
        w.spec.seed,
    )?;
    let never = AtomicBool::new(false);
    // Rows and progress share stdout, a line each.
    let out = std::sync::Mutex::new(&mut out);
    let send = |m: &Message| -> Result<(), WorkerError> {
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_writer(&mut **o, m).map_err(std::io::Error::from)?;
        o.write_all(b"\n")?;
        o.flush()?;
        Ok(())
    };
    let progress = |e: Event| {
        let m = match e {
            Event::Status(s) => Message::Status { status: s.into() },
            Event::Warning(s) | Event::Finished(s) => Message::Warning { warning: s.into() },
            Event::Phase(p, d) => Message::Phase {
                phase: p.into(),
                within_s: d.as_secs_f64(),
            },
            Event::Plan(_) => return,
        };
        let _ = send(&m);
    };
    let mut index = 0usize;
    let mut failure: Option<WorkerError> = None;
    let mut emit = |out: Output| {
        if failure.is_some() {
            return;
        }
        let (row, outputs, shape) = match out {
            Output::Row(row, outputs, shape) => (row, outputs, shape),
            Output::Probe(row) => {
                let sent = send(&Message::Probe {
                    probe: Box::new(row),
                });
                failure = sent.err();
                return;
            }
            Output::Capacity(c) => {
                let sent = send(&Message::Capacity {
                    capacity: Box::new(c),
                });
                failure = sent.err();
                return;
            }
            Output::Reference(o, shape) => {
                let sent = save_outputs(&w, &format!("reference-{shape}"), &o).and_then(|p| {
                    send(&Message::Reference {
                        reference: shape,
                        outputs: p,
                    })
                });
                failure = sent.err();
                return;
            }
        };
        let r = (|| -> Result<(), WorkerError> {
            let path = match outputs {
                Some(o) => Some(save_outputs(&w, &index.to_string(), &o)?),
                None => None,
            };
            send(&Message::Row(Box::new(Line {
                index,
                shape,
                row,
                outputs: path,
            })))
        })();
        if let Err(e) = r {
            failure = Some(e);
        }
        index += 1;
    };
    group::run_group(
        &w.spec, &files, &info, &shapes, &never, &progress, &mut emit,
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The child is killed when the process that started it dies (Linux's parent-death signal),
/// so a worker or a server never outlives a harness that was killed.
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child being started.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGILL => " (SIGILL)",
                libc::SIGFPE => " (SIGFPE)",
                libc::SIGKILL => " (SIGKILL: out of memory?)",
                libc::SIGINT => " (SIGINT)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "ended abnormally".into(),
    }
}

/// Runs `spec` in a child `exe worker`, handing each row (with its outputs) to `handle` as
/// it arrives. Polls `interrupt`, and the deadline of the phase the worker announced last;
/// when either says so the child is killed.
pub fn run_in_child(
    exe: &Path,
    spec: &GroupSpec,
    outputs_dir: &Path,
    interrupt: &AtomicBool,
    progress: Progress,
    handle: group::Emit,
) -> GroupEnd {
    let input = WorkerInput {
        spec: spec.clone(),
        outputs_dir: outputs_dir.to_path_buf(),
    };
    let mut cmd = Command::new(exe);
    die_with_parent(&mut cmd);
    let mut child = match cmd
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return GroupEnd::Died(format!("could not start {}: {e}", exe.display())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = serde_json::to_writer(&mut stdin, &input) {
            let _ = child.kill();
            let _ = child.wait();
            return GroupEnd::Died(format!("could not send the group to the worker: {e}"));
        }
        // Dropping stdin closes it: the worker reads to the end.
    }
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let mut panicked: Option<String> = None;
    let mut watch = Watch::start(spec.phase_timeout);
    let end = loop {
        if let Some(late) = watch.overrun() {
            let _ = child.kill();
            let _ = child.wait();
            break GroupEnd::TimedOut(late);
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => match serde_json::from_str::<Message>(&l) {
                Ok(Message::Row(line)) => {
                    let what = format!("outputs of {}", line.row.id);
                    let outputs =
                        (line.outputs.as_deref()).and_then(|p| take_outputs(p, &what, progress));
                    handle(Output::Row(line.row, outputs, line.shape));
                }
                Ok(Message::Reference { reference, outputs }) => {
                    if let Some(t) = take_outputs(&outputs, "reference outputs", progress) {
                        handle(Output::Reference(t, reference));
                    }
                }
                Ok(Message::Probe { probe }) => handle(Output::Probe(*probe)),
                Ok(Message::Capacity { capacity }) => handle(Output::Capacity(*capacity)),
                Ok(Message::Status { status }) => progress(Event::Status(&status)),
                Ok(Message::Warning { warning }) => progress(Event::Warning(&warning)),
                Ok(Message::Panic { panic }) => panicked = Some(panic),
                Ok(Message::Phase { phase, within_s }) => watch.enter(
                    &phase,
                    Duration::try_from_secs_f64(within_s).unwrap_or(Duration::MAX),
                ),
                Err(e) => progress(Event::Warning(&format!(
                    "warning: unreadable line from the worker: {e}"
                ))),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if interrupt.load(Ordering::Relaxed) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break GroupEnd::Interrupted;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break match child.wait() {
                    Ok(s) if s.success() => GroupEnd::Finished,
                    Ok(s) if interrupt.load(Ordering::Relaxed) => {
                        let _ = s;
                        GroupEnd::Interrupted
                    }
                    Ok(s) => GroupEnd::Died(match &panicked {
                        Some(p) => format!("{} (panicked: {p})", describe(s)),
                        None => describe(s),
                    }),
                    Err(e) => GroupEnd::Died(format!("could not wait for the worker: {e}")),
                };
            }
        }
    };
    let _ = reader.join();
    end
}
