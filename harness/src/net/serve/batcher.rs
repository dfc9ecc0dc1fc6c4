//! Dynamic batching: requests wait in one bounded queue; each model instance takes the
//! oldest, then gathers compatible requests that are already queued or arrive within
//! `max_queue_delay` of the first one's arrival, up to `max_batch` rows, and runs them as one
//! batch. A full queue refuses at once (the caller answers 503); a request whose deadline
//! passed while it waited is answered as timed out without running.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtimes::{HostTensor, Loaded};

use crate::net::metrics::Metrics;
use crate::net::tensors;

#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most rows in one executed batch; 1 turns dynamic batching off.
    pub max_batch: usize,
    /// How long the first request of a batch may wait for company.
    pub max_queue_delay: Duration,
    /// Requests that may wait; one more is refused.
    pub queue_capacity: usize,
}

/// Why a request got no result.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    QueueFull,
    ShuttingDown,
    TimedOut,
    Inference(String),
}

pub struct JobOutput {
    pub outputs: Vec<HostTensor>,
    pub queue_us: u64,
    pub compute_us: u64,
    /// Rows in the batch this request ran in.
    pub batch_rows: usize,
}

pub type Reply = tokio::sync::oneshot::Sender<Result<JobOutput, JobError>>;

pub struct Job {
    /// One tensor per model input, in the model's order, each with the rows in dim 0.
    pub inputs: Vec<HostTensor>,
    /// Dimension 1 may be zero-padded to join a batch (token sequences with a mask).
    pub pad: bool,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub reply: Reply,
}

impl Job {
    fn rows(&self) -> usize {
        self.inputs.first().map_or(0, |t| t.shape[0])
    }

    fn dim1(&self) -> Option<usize> {
        self.inputs.first().and_then(|t| t.shape.get(1).copied())
    }

    /// Whether `other` can join a batch with this job.
    fn fits(&self, other: &Job) -> bool {
        self.pad == other.pad
            && self.inputs.len() == other.inputs.len()
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| {
                a.data.dtype() == b.data.dtype()
                    && a.shape.len() == b.shape.len()
                    && if self.pad && a.shape.len() >= 2 {
                        a.shape[2..] == b.shape[2..]
                    } else {
                        a.shape[1..] == b.shape[1..]
                    }
            })
    }
}

pub struct Batcher {
    tx: Mutex<Option<SyncSender<Job>>>,
    metrics: Arc<Metrics>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// `serve --inline`: the one instance runs each request on the I/O thread that read it.
    inline: Option<Inline>,
}

/// One inline request waiting for the instance: counted out of `waiting` (and of `pending`,
/// unless the run takes that over) when the wait ends or is dropped.
struct Waiting<'a> {
    waiting: &'a std::sync::atomic::AtomicUsize,
    pending: Option<&'a std::sync::atomic::AtomicU64>,
}

impl Waiting<'_> {
    fn done(mut self, pending_too: bool) {
        if !pending_too {
            self.pending = None;
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Relaxed);
        if let Some(p) = self.pending {
            p.fetch_sub(1, Relaxed);
        }
    }
}

/// A lone instance without batching, run by the request's own task: no hand-off to an
/// instance thread and back. Requests wait for it in arrival order (a fair async lock), at
/// most `capacity` of them.
struct Inline {
    model: tokio::sync::Mutex<Box<dyn Loaded>>,
    waiting: std::sync::atomic::AtomicUsize,
    capacity: usize,
    open: std::sync::atomic::AtomicBool,
}

impl Batcher {
    /// Starts one thread per model instance.
    pub fn start(models: Vec<Box<dyn Loaded>>, cfg: BatchConfig, metrics: Arc<Metrics>) -> Batcher {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(cfg.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let threads = models
            .into_iter()
            .enumerate()
            .map(|(i, model)| {
                let rx = rx.clone();
                let cfg = cfg.clone();
                let metrics = metrics.clone();
                std::thread::Builder::new()
                    .name(format!("instance-{i}"))
                    .spawn(move || instance(model, &rx, &cfg, &metrics))
                    .expect("spawning a model instance thread")
            })
            .collect();
        Batcher {
            tx: Mutex::new(Some(tx)),
            metrics,
            threads: Mutex::new(threads),
            inline: None,
        }
    }

    /// One instance run on the I/O threads (`serve --inline`), each request by its own task
    /// while the others wait: the lowest latency at low load (no thread wakes twice per
    /// request), but nothing else on that I/O thread moves while it computes.
    pub fn start_inline(
        model: Box<dyn Loaded>,
        queue_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Batcher {
        Batcher {
            tx: Mutex::new(None),
            metrics,
            threads: Mutex::new(Vec::new()),
            inline: Some(Inline {
                model: tokio::sync::Mutex::new(model),
                waiting: Default::default(),
                capacity: queue_capacity.max(1),
                open: std::sync::atomic::AtomicBool::new(true),
            }),
        }
    }

    /// Runs `job` to its reply: queued for the instance threads, or, inline, run here once
    /// the instance is free. Err: refused at once (its reply is dropped unanswered).
    pub async fn run(&self, job: Job) -> Result<(), JobError> {
        let Some(inline) = &self.inline else {
            return self.submit(job);
        };
        if !inline.open.load(Relaxed) {
            return Err(JobError::ShuttingDown);
        }
        if inline.waiting.fetch_add(1, Relaxed) >= inline.capacity {
            inline.waiting.fetch_sub(1, Relaxed);
            self.metrics.rejected_queue_full.fetch_add(1, Relaxed);
            return Err(JobError::QueueFull);
        }
        self.metrics.pending.fetch_add(1, Relaxed);
        // Counted out however the wait ends, also when the request is dropped while it waits
        // (its client went away): the counts must not leak into later requests' refusals.
        let wait = Waiting {
            waiting: &inline.waiting,
            pending: Some(&self.metrics.pending),
        };
        let deadline = tokio::time::Instant::from_std(job.deadline);
        let model = tokio::time::timeout_at(deadline, inline.model.lock()).await;
        match model {
            Ok(mut model) => {
                // run_batch counts the job out of `pending`.
                wait.done(false);
                run_batch(model.as_mut(), vec![job], &self.metrics)
            }
            Err(_) => {
                wait.done(true);
                self.metrics.timed_out.fetch_add(1, Relaxed);
                let _ = job.reply.send(Err(JobError::TimedOut));
            }
        }
        Ok(())
    }

    /// Queues a job for the instance threads, or refuses it at once when the queue is full
    /// (callers use [`Batcher::run`], which also serves inline instances).
    fn submit(&self, job: Job) -> Result<(), JobError> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(JobError::ShuttingDown);
        };
        self.metrics.pending.fetch_add(1, Relaxed);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.metrics.pending.fetch_sub(1, Relaxed);
                self.metrics.rejected_queue_full.fetch_add(1, Relaxed);
                Err(JobError::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.pending.fetch_sub(1, Relaxed);
                Err(JobError::ShuttingDown)
            }
        }
    }

    /// Runs `f` on the inline instance once no request holds it (None: the instances run on
    /// threads of their own). Blocks the calling thread: not for async contexts.
    pub fn with_inline<R>(&self, f: impl FnOnce(&mut dyn Loaded) -> R) -> Option<R> {
        let inline = self.inline.as_ref()?;
        let mut model = inline.model.blocking_lock();
        Some(f(model.as_mut()))
    }

    /// Stops taking jobs, lets the instances finish what is queued, and waits for them.
    pub fn shutdown(&self) {
        if let Some(inline) = &self.inline {
            inline.open.store(false, Relaxed);
        }
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn instance(
    mut model: Box<dyn Loaded>,
    rx: &Mutex<Receiver<Job>>,
    cfg: &BatchConfig,
    metrics: &Metrics,
) {
    // Requests this instance took but could not fit in the batch it was forming: they
    // start the next one, oldest first.
    let mut pending: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    loop {
        let first = match pending.pop_front() {
            Some(j) => j,
            None => match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let mut batch = vec![first];
        let mut rows = batch[0].rows();
        if cfg.max_batch > 1 && rows < cfg.max_batch {
            let mut k = 0;
            while k < pending.len() && rows < cfg.max_batch {
                if batch[0].fits(&pending[k]) && rows + pending[k].rows() <= cfg.max_batch {
                    let j = pending.remove(k).expect("index checked");
                    rows += j.rows();
                    batch.push(j);
                } else {
                    k += 1;
                }
            }
            let until = batch[0].enqueued + cfg.max_queue_delay;
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            while rows < cfg.max_batch {
                let now = Instant::now();
                let next = if now < until {
                    rx.recv_timeout(until - now)
                } else {
                    rx.try_recv().map_err(|e| match e {
                        std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                        std::sync::mpsc::TryRecvError::Disconnected => {
                            RecvTimeoutError::Disconnected
                        }
                    })
                };
                match next {
                    Ok(j) if batch[0].fits(&j) && rows + j.rows() <= cfg.max_batch => {
                        rows += j.rows();
                        batch.push(j);
                    }
                    Ok(j) => pending.push_back(j),
                    Err(_) => break,
                }
            }
        }
        run_batch(model.as_mut(), batch, metrics);
    }
}

fn run_batch(model: &mut dyn Loaded, batch: Vec<Job>, metrics: &Metrics) {
    let started = Instant::now();
    let (live, expired): (Vec<Job>, Vec<Job>) =
        batch.into_iter().partition(|j| j.deadline > started);
    for j in expired {
        metrics.pending.fetch_sub(1, Relaxed);
        metrics.timed_out.fetch_add(1, Relaxed);
        let _ = j.reply.send(Err(JobError::TimedOut));
    }
    if live.is_empty() {
        return;
    }
    let pad = live[0].pad;
    let rows: usize = live.iter().map(|j| j.rows()).sum();
    // Each job's rows and sequence length, before a lone job gives its inputs up.
    let sizes: Vec<(usize, Option<usize>)> = live.iter().map(|j| (j.rows(), j.dim1())).collect();
    let mut live = live;
    let inputs: Vec<HostTensor> = if live.len() == 1 {
        // A batch of one runs on the request's own tensors: no copy.
        std::mem::take(&mut live[0].inputs)
    } else {
        (0..live[0].inputs.len())
            .map(|i| {
                let parts: Vec<&HostTensor> = live.iter().map(|j| &j.inputs[i]).collect();
                tensors::stack(&parts, pad)
            })
            .collect()
    };
    let padded_dim1 = inputs.first().and_then(|t| t.shape.get(1).copied());
    let mut result = model.prepare(&inputs).and_then(|()| model.infer());
    let compute_us = started.elapsed().as_micros() as u64;
    metrics.batch_executed(rows);
    let lone = live.len() == 1;
    let mut at = 0;
    for (j, &(n, dim1)) in live.into_iter().zip(&sizes) {
        metrics.pending.fetch_sub(1, Relaxed);
        let queue_us = started.duration_since(j.enqueued).as_micros() as u64;
        metrics.queue_duration_us.fetch_add(queue_us, Relaxed);
        metrics
            .compute_infer_duration_us
            .fetch_add(compute_us, Relaxed);
        let out = match &mut result {
            // A batch of one takes the outputs whole: they are all its own.
            Ok(outs) if lone => Ok(JobOutput {
                outputs: std::mem::take(outs),
                queue_us,
                compute_us,
                batch_rows: rows,
            }),
            Ok(outs) => Ok(JobOutput {
                outputs: outs
                    .iter()
                    .map(|o| {
                        if o.shape.first() == Some(&rows) {
                            // Sequence outputs lose the padding this job did not bring.
                            let keep = match (pad, padded_dim1, dim1) {
                                (true, Some(p), Some(mine))
                                    if o.shape.len() >= 2 && o.shape[1] == p =>
                                {
                                    Some(mine)
                                }
                                _ => None,
                            };
                            tensors::rows(o, at, n, keep)
                        } else {
                            o.clone()
                        }
                    })
                    .collect(),
                queue_us,
                compute_us,
                batch_rows: rows,
            }),
            Err(e) => Err(JobError::Inference(e.to_string())),
        };
        at += n;
        let _ = j.reply.send(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtimes::{RuntimeError, TensorData};

    /// Doubles its one input and records the batch sizes it saw.
    struct Doubler {
        inputs: Vec<HostTensor>,
        seen: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
    }

    impl Loaded for Doubler {
        fn applied(&self) -> Vec<(String, String)> {
            vec![]
        }
        fn prepare(&mut self, inputs: &[HostTensor]) -> Result<(), RuntimeError> {
            self.inputs = inputs.to_vec();
            Ok(())
        }
        fn run(&mut self) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
            std::thread::sleep(self.delay);
            let t = &self.inputs[0];
            self.seen.lock().unwrap().push(t.shape[0]);
            let TensorData::I64(v) = &t.data else {
                return Err(RuntimeError::inference("doubler", "wants int64"));
            };
            Ok(vec![HostTensor::new(
                "y",
                t.shape.clone(),
                TensorData::I64(v.iter().map(|x| x * 2).collect()),
            )])
        }
    }

    fn job(
        values: Vec<i64>,
        cols: usize,
        pad: bool,
    ) -> (
        Job,
        tokio::sync::oneshot::Receiver<Result<JobOutput, JobError>>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let rows = values.len() / cols;
        (
            Job {
                inputs: vec![HostTensor::new(
                    "x",
                    vec![rows, cols],
                    TensorData::I64(values),
                )],
                pad,
                enqueued: Instant::now(),
                deadline: Instant::now() + Duration::from_secs(10),
                reply: tx,
            },
            rx,
        )
    }

    fn start(
        max_batch: usize,
        delay_ms: u64,
        cap: usize,
        infer_ms: u64,
    ) -> (Batcher, Arc<Mutex<Vec<usize>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let model = Doubler {
            inputs: vec![],
            seen: seen.clone(),
            delay: Duration::from_millis(infer_ms),
        };
        let b = Batcher::start(
            vec![Box::new(model)],
            BatchConfig {
                max_batch,
                max_queue_delay: Duration::from_millis(delay_ms),
                queue_capacity: cap,
            },
            Arc::new(Metrics::new("t")),
        );
        (b, seen)
    }

    #[test]
    fn requests_within_the_delay_share_a_batch_and_get_their_own_rows_back() {
        let (b, seen) = start(8, 200, 16, 0);
        let (j1, r1) = job(vec![1, 2], 2, true);
        let (j2, r2) = job(vec![3, 4, 5, 6, 7, 8], 3, true);
        b.submit(j1).unwrap();
        b.submit(j2).unwrap();
        let o1 = r1.blocking_recv().unwrap().unwrap();
        let o2 = r2.blocking_recv().unwrap().unwrap();
        assert_eq!(o1.outputs[0].shape, vec![1, 2]);
        assert_eq!(o1.outputs[0].data, TensorData::I64(vec![2, 4]));
        assert_eq!(
            o2.outputs[0].data,
            TensorData::I64(vec![6, 8, 10, 12, 14, 16])
        );
        assert_eq!((o1.batch_rows, o2.batch_rows), (3, 3));
        assert_eq!(*seen.lock().unwrap(), vec![3]);
        b.shutdown();
    }

    #[test]
    fn without_batching_each_request_runs_alone_and_unpaddable_shapes_never_mix() {
        let (b, seen) = start(1, 0, 16, 0);
        let (j1, r1) = job(vec![1], 1, false);
        let (j2, r2) = job(vec![2], 1, false);
        b.submit(j1).unwrap();
        b.submit(j2).unwrap();
        r1.blocking_recv().unwrap().unwrap();
        r2.blocking_recv().unwrap().unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![1, 1]);
        b.shutdown();

        let (b, seen) = start(8, 100, 16, 0);
        let (j1, r1) = job(vec![1, 2], 2, false);
        let (j2, r2) = job(vec![1, 2, 3], 3, false);
        b.submit(j1).unwrap();
        b.submit(j2).unwrap();
        r1.blocking_recv().unwrap().unwrap();
        assert_eq!(
            r2.blocking_recv().unwrap().unwrap().outputs[0].shape,
            vec![1, 3]
        );
        assert_eq!(*seen.lock().unwrap(), vec![1, 1]);
        b.shutdown();

        // Interleaved shapes: each shape still batches with its own kind.
        let (b, seen) = start(8, 200, 16, 0);
        let mut rxs = Vec::new();
        for k in 0..6 {
            let cols = if k % 2 == 0 { 2 } else { 3 };
            let (j, r) = job(vec![k; cols], cols, false);
            b.submit(j).unwrap();
            rxs.push(r);
        }
        for r in rxs {
            r.blocking_recv().unwrap().unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), vec![3, 3]);
        b.shutdown();
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        // One slow batch running, capacity 2: the fourth job is refused.
        let (b, _) = start(1, 0, 2, 300);
        let mut rxs = Vec::new();
        let (j, r) = job(vec![1], 1, false);
        b.submit(j).unwrap();
        rxs.push(r);
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..2 {
            let (j, r) = job(vec![1], 1, false);
            b.submit(j).unwrap();
            rxs.push(r);
        }
        let (j, _r) = job(vec![1], 1, false);
        let t = Instant::now();
        assert_eq!(b.submit(j).unwrap_err(), JobError::QueueFull);
        assert!(t.elapsed() < Duration::from_millis(100));
        for r in rxs {
            r.blocking_recv().unwrap().unwrap();
        }
        b.shutdown();
        let (j, _r) = job(vec![1], 1, false);
        assert_eq!(b.submit(j).unwrap_err(), JobError::ShuttingDown);
    }

    /// One instance run inline (`serve --inline`), its model taking `infer_ms` a run.
    fn inline(cap: usize, infer_ms: u64) -> (Arc<Batcher>, Arc<Mutex<Vec<usize>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let model = Doubler {
            inputs: vec![],
            seen: seen.clone(),
            delay: Duration::from_millis(infer_ms),
        };
        let m = Arc::new(Metrics::new("t"));
        (
            Arc::new(Batcher::start_inline(Box::new(model), cap, m)),
            seen,
        )
    }

    #[test]
    fn inline_answers_each_request_before_run_returns() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (b, seen) = inline(4, 0);
        rt.block_on(async {
            let (j1, mut r1) = job(vec![1, 2], 2, false);
            b.run(j1).await.unwrap();
            // Answered before `run` returns: nothing left to hand back.
            let o1 = r1.try_recv().expect("answered inline").unwrap();
            assert_eq!(o1.outputs[0].data, TensorData::I64(vec![2, 4]));
            assert_eq!(o1.batch_rows, 1);
            let (j2, mut r2) = job(vec![3, 4, 5], 1, false);
            b.run(j2).await.unwrap();
            let o2 = r2.try_recv().expect("answered inline").unwrap();
            assert_eq!(o2.outputs[0].data, TensorData::I64(vec![6, 8, 10]));
        });
        assert_eq!(*seen.lock().unwrap(), vec![1, 3]);
        assert_eq!(b.metrics.pending.load(Relaxed), 0);
        b.shutdown();
        let (j, _r) = job(vec![1], 1, false);
        assert_eq!(rt.block_on(b.run(j)).unwrap_err(), JobError::ShuttingDown);
    }

    /// `b.run(j)` on a task of its own.
    fn spawn_run(b: &Arc<Batcher>, j: Job) -> tokio::task::JoinHandle<Result<(), JobError>> {
        let b = b.clone();
        tokio::spawn(async move { b.run(j).await })
    }

    #[test]
    fn inline_requests_wait_in_a_bounded_queue_until_their_deadline() {
        // Two I/O threads: one computes (300 ms) while the other's requests wait.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (b, seen) = inline(2, 300);
        rt.block_on(async {
            let (j, r1) = job(vec![1], 1, false);
            let first = spawn_run(&b, j);
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Waits behind the first, then runs.
            let (j, r2) = job(vec![2], 1, false);
            let second = spawn_run(&b, j);
            // Its deadline passes while it waits: answered as timed out, never run.
            let (mut j, r3) = job(vec![3], 1, false);
            j.deadline = Instant::now() + Duration::from_millis(150);
            let third = spawn_run(&b, j);
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Two waiting already: refused at once.
            let (j, _r4) = job(vec![4], 1, false);
            let t = Instant::now();
            assert_eq!(b.run(j).await.unwrap_err(), JobError::QueueFull);
            assert!(t.elapsed() < Duration::from_millis(100));
            for h in [first, second, third] {
                h.await.unwrap().unwrap();
            }
            assert_eq!(
                r1.await.unwrap().unwrap().outputs[0].data,
                TensorData::I64(vec![2])
            );
            assert_eq!(
                r2.await.unwrap().unwrap().outputs[0].data,
                TensorData::I64(vec![4])
            );
            assert_eq!(r3.await.unwrap().err(), Some(JobError::TimedOut));
        });
        assert_eq!(*seen.lock().unwrap(), vec![1, 1]);
        // A request dropped while it waits (its client gone) is counted out: the queue's two
        // places are free again.
        rt.block_on(async {
            let (j, _r) = job(vec![5], 1, false);
            let busy = spawn_run(&b, j);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (j, _r2) = job(vec![6], 1, false);
            let gone = tokio::time::timeout(Duration::from_millis(20), b.run(j)).await;
            assert!(gone.is_err(), "still waiting when dropped");
            assert_eq!(b.inline.as_ref().unwrap().waiting.load(Relaxed), 0);
            busy.await.unwrap().unwrap();
        });
        assert_eq!(*seen.lock().unwrap(), vec![1, 1, 1]);
        let m = &b.metrics;
        assert_eq!(m.timed_out.load(Relaxed), 1);
        assert_eq!(m.rejected_queue_full.load(Relaxed), 1);
        assert_eq!(m.pending.load(Relaxed), 0);
    }

    #[test]
    fn expired_requests_are_not_run() {
        let (b, seen) = start(1, 0, 4, 200);
        let (j1, r1) = job(vec![1], 1, false);
        let (mut j2, r2) = job(vec![2], 1, false);
        j2.deadline = Instant::now() + Duration::from_millis(50);
        b.submit(j1).unwrap();
        b.submit(j2).unwrap();
        r1.blocking_recv().unwrap().unwrap();
        assert_eq!(r2.blocking_recv().unwrap().err(), Some(JobError::TimedOut));
        assert_eq!(*seen.lock().unwrap(), vec![1]);
        b.shutdown();
    }
}
