//! Device-side timing with CUDA events (through `cudarc`, the driver library loaded at run
//! time), so a GPU row carries what the device spent next to the host's wall time.
//!
//! A timer owns `marks` events recorded on one stream: the runtime's own (candle's) or one
//! created here and handed to the runtime as its compute stream (ONNX Runtime's
//! `user_compute_stream`). Between two consecutive marks is one stage (host-to-device copy,
//! compute, device-to-host copy).
//!
//! What a stage measures: the stream's span from the moment the first mark is reached (the
//! stream is idle when an inference starts, so that is when the host records it) to the
//! completion of the work queued before the last one. Gaps in which the GPU waits for the host
//! to launch the next kernel are inside it; the host's work after the last launch (the
//! runtime's bookkeeping, output handling, the synchronization itself) is not, as long as
//! the closing mark is queued right behind the last launch (ONNX Runtime: runs without its
//! end-of-run synchronization). Event timestamps have a resolution of about half a
//! microsecond.
//!
//! `run` records the marks and waits for the last one (the clock stops when the device is
//! done); the stages are read afterwards ([`EventTimer::device_time`]), outside the timed
//! region.
//!
//! Nothing here touches cudarc before [`driver_problem`] has found the driver: cudarc panics
//! when asked to load a library that is absent.

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaEvent, CudaStream};

use crate::DeviceTime;

/// Why CUDA events cannot be used on GPU `gpu` here, or None when they can.
pub fn driver_problem(gpu: u32) -> Option<String> {
    if let Err(e) = crate::gpu::loadable(crate::gpu::DRIVER) {
        return Some(format!(
            "no NVIDIA driver: {} cannot be loaded ({e})",
            crate::gpu::DRIVER
        ));
    }
    // The library is there: cudarc's calls now return errors instead of panicking.
    match crate::catch_panic(CudaContext::device_count) {
        Err(panic) => Some(format!("the CUDA driver could not be used: {panic}")),
        Ok(Err(e)) => Some(format!("the CUDA driver refused to start: {e}")),
        Ok(Ok(n)) if (gpu as i32) >= n => Some(format!(
            "GPU {gpu} does not exist: the driver lists {n} GPU(s)"
        )),
        Ok(Ok(_)) => None,
    }
}

/// The whole check as one line for `harness list` and the environment record:
/// `available (GPU 0: NAME)` or `unavailable: <why>`.
pub fn status(gpu: u32) -> String {
    match driver_problem(gpu) {
        Some(why) => format!("unavailable: {why}"),
        None => match crate::catch_panic(|| CudaContext::new(gpu as usize)) {
            Ok(Ok(ctx)) => format!(
                "available (GPU {gpu}: {})",
                ctx.name().unwrap_or_else(|e| format!("name unknown: {e}"))
            ),
            Ok(Err(e)) => format!("unavailable: GPU {gpu}'s context could not be opened: {e}"),
            Err(panic) => format!("unavailable: {panic}"),
        },
    }
}

/// Event marks per inference: copy in, compute, copy out when the inference copies
/// (`--gpu-copies`, four marks), compute alone otherwise (two); [`DeviceTime::from_stages`]
/// reads their gaps.
pub fn marks(copies_timed: bool) -> usize {
    if copies_timed {
        4
    } else {
        2
    }
}

/// What [`crate::Loaded::device_timing`] answers for a runtime holding `timer`: None on the
/// CPU (no timer), else whether its events work.
pub fn timing_status(timer: &Option<Result<EventTimer, String>>) -> Option<Result<(), String>> {
    timer
        .as_ref()
        .map(|t| t.as_ref().map(|_| ()).map_err(Clone::clone))
}

/// What [`crate::Loaded::last_device_time`] answers: the stages of the last run when it was
/// timed (read now, after the clock stopped), else None.
pub fn last_time(timer: &Option<Result<EventTimer, String>>, timed: bool) -> Option<DeviceTime> {
    match timer {
        Some(Ok(t)) if timed => t.device_time().ok(),
        _ => None,
    }
}

/// Events recorded on one stream, the gaps between consecutive ones being the stages of an
/// inference.
pub struct EventTimer {
    stream: Arc<CudaStream>,
    marks: Vec<CudaEvent>,
}

impl EventTimer {
    /// A timer on a new stream of GPU `gpu`'s primary context (the one the CUDA runtime, and
    /// so ONNX Runtime, uses), for a runtime that takes a compute stream from its caller.
    pub fn new_stream(gpu: u32, marks: usize) -> Result<EventTimer, String> {
        if let Some(why) = driver_problem(gpu) {
            return Err(why);
        }
        let stream =
            crate::catch_panic(|| CudaContext::new(gpu as usize).and_then(|ctx| ctx.new_stream()))
                .map_err(|p| format!("the CUDA driver could not be used: {p}"))?
                .map_err(|e| format!("could not create a stream on GPU {gpu}: {e}"))?;
        EventTimer::on_stream(stream, marks)
    }

    /// A timer on a stream the runtime already uses (candle's device stream).
    pub fn on_stream(stream: Arc<CudaStream>, marks: usize) -> Result<EventTimer, String> {
        let ctx = stream.context().clone();
        let marks = (0..marks.max(2))
            .map(|_| ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("could not create CUDA events: {e}"))?;
        Ok(EventTimer { stream, marks })
    }

    /// The stream, as the raw handle a runtime's options take.
    pub fn raw_stream(&self) -> *mut () {
        self.stream.cu_stream() as *mut ()
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Records mark `i` on the stream: it completes when the work queued before it has.
    pub fn mark(&self, i: usize) -> Result<(), String> {
        self.marks[i]
            .record(&self.stream)
            .map_err(|e| format!("recording CUDA event {i}: {e}"))
    }

    /// Waits until the device has reached the last mark: the work queued before it is done.
    pub fn finish(&self) -> Result<(), String> {
        let last = self.marks.len() - 1;
        self.marks[last]
            .synchronize()
            .map_err(|e| format!("waiting for CUDA event {last}: {e}"))
    }

    /// Waits for the last mark, then the time between each pair of consecutive marks.
    pub fn stages_ns(&self) -> Result<Vec<u64>, String> {
        self.finish()?;
        self.marks
            .windows(2)
            .map(|w| {
                w[0].elapsed_ms(&w[1])
                    .map(|ms| (ms.max(0.0) as f64 * 1e6).round() as u64)
                    .map_err(|e| format!("reading CUDA event times: {e}"))
            })
            .collect()
    }

    /// The stages as a [`DeviceTime`]: three marks' gaps are (copy in, compute, copy out);
    /// one gap is compute alone.
    pub fn device_time(&self) -> Result<DeviceTime, String> {
        DeviceTime::from_stages(&self.stages_ns()?)
    }
}

/// Page-locked host memory (`cuMemHostAlloc`), the kind copies between host and device run
/// from at full speed and asynchronously (trtexec copies from it); freed with its context.
pub struct PinnedBuffer {
    ctx: Arc<CudaContext>,
    addr: usize,
    len: usize,
}

impl PinnedBuffer {
    pub fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<PinnedBuffer, String> {
        ctx.bind_to_thread()
            .map_err(|e| format!("binding the CUDA context: {e}"))?;
        // SAFETY: a plain allocation of len bytes (at least 1) with no flags.
        let p = unsafe { cudarc::driver::result::malloc_host(len.max(1), 0) }
            .map_err(|e| format!("allocating {len} bytes of pinned host memory: {e}"))?;
        Ok(PinnedBuffer {
            ctx: ctx.clone(),
            addr: p as usize,
            len,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: addr holds len bytes we own until drop.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by malloc_host above and not freed before.
        let _ = unsafe { cudarc::driver::result::free_host(self.addr as *mut std::ffi::c_void) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What this machine has decides the answer; a GPU machine must be able to time.
    #[test]
    fn the_timer_reports_what_the_machine_has() {
        let driver = crate::gpu::loadable(crate::gpu::DRIVER).is_ok();
        let s = status(0);
        if !driver {
            assert!(s.starts_with("unavailable: no NVIDIA driver"), "{s}");
            let e = EventTimer::new_stream(0, 2).err().unwrap();
            assert!(e.contains("libcuda.so.1"), "{e}");
            return;
        }
        if s.starts_with("unavailable") {
            // A driver without a usable GPU (a container without the device) says why.
            assert!(s.len() > "unavailable: ".len(), "{s}");
            return;
        }
        let t = EventTimer::new_stream(0, 4).unwrap();
        for i in 0..4 {
            t.mark(i).unwrap();
        }
        let stages = t.stages_ns().unwrap();
        assert_eq!(stages.len(), 3);
        let d = t.device_time().unwrap();
        assert_eq!(d.total_ns(), stages.iter().sum::<u64>());
        assert!(driver_problem(u32::MAX).unwrap().contains("does not exist"));
    }
}
