//! NVTX ranges around what the harness does (loading a model, warm-up, the measured window,
//! each inference), so that a timeline from Nsight Systems (`profiles/nsys.sh`) shows them
//! next to the runtimes' kernels.
//!
//! The NVTX library is loaded at run time, and only when a tool listens: Nsight Systems (like
//! any NVTX tool) sets `NVTX_INJECTION64_PATH` in the profiled process's environment, and the
//! library hands every range to it. Without that variable, or without the library, every call
//! here is a check of one static and nothing else. Ranges open and close outside the timed
//! region.
//!
//! The library is `libnvToolsExt.so.1` (CUDA 12 and earlier) or `libnvtx3interop.so.1`
//! (PyPI's `nvidia-nvtx`, which PyTorch installs), found by the loader's search or in CUDA's
//! and the Python environment's folders.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The variable a profiler sets to receive NVTX calls.
pub const INJECTION_VAR: &str = "NVTX_INJECTION64_PATH";
/// The library's names, newest API first.
pub const LIBRARIES: &[&str] = &["libnvToolsExt.so.1", "libnvtx3interop.so.1"];

type PushFn = unsafe extern "C" fn(*const c_char) -> c_int;
type PopFn = unsafe extern "C" fn() -> c_int;

struct Api {
    push: PushFn,
    pop: PopFn,
    path: String,
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// Folders searched after the loader's own search: CUDA's, and the NVIDIA packages' library
/// folders in the Python environment (`$VIRTUAL_ENV`, else `.venv`): nvtx, cu13, cu12.
fn folders() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/targets/x86_64-linux/lib",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let venv = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".venv"));
    for site in crate::environment::site_packages(&venv) {
        dirs.extend(crate::environment::nvidia_lib_dirs(&site));
    }
    dirs
}

/// dlopen `name` (a bare name goes through the loader's search), or the loader's message.
fn open(name: &str) -> Result<*mut libc::c_void, String> {
    let c = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: a valid C string; the handle is kept for the life of the process.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a message owned by the loader, or null.
        let e = unsafe { libc::dlerror() };
        return Err(if e.is_null() {
            format!("{name}: not found")
        } else {
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        });
    }
    Ok(h)
}

fn symbol(h: *mut libc::c_void, name: &CStr) -> Option<*mut libc::c_void> {
    // SAFETY: h is a live handle from dlopen; name is a C string.
    let f = unsafe { libc::dlsym(h, name.as_ptr()) };
    (!f.is_null()).then_some(f)
}

fn load() -> Result<Api, String> {
    if std::env::var_os(INJECTION_VAR).is_none_or(|v| v.is_empty()) {
        return Err(format!(
            "off: no NVTX tool is listening ({INJECTION_VAR} is unset; Nsight Systems sets it)"
        ));
    }
    let mut tried = Vec::new();
    let mut candidates: Vec<String> = LIBRARIES.iter().map(|s| s.to_string()).collect();
    for dir in folders() {
        for lib in LIBRARIES {
            let p = dir.join(lib);
            if p.is_file() {
                candidates.push(p.display().to_string());
            }
        }
    }
    for c in candidates {
        match open(&c) {
            Ok(h) => {
                let (Some(push), Some(pop)) =
                    (symbol(h, c"nvtxRangePushA"), symbol(h, c"nvtxRangePop"))
                else {
                    tried.push(format!("{c}: no nvtxRangePushA/nvtxRangePop"));
                    continue;
                };
                // SAFETY: the NVTX C API's signatures: int nvtxRangePushA(const char*),
                // int nvtxRangePop(void).
                return Ok(Api {
                    push: unsafe { std::mem::transmute::<*mut libc::c_void, PushFn>(push) },
                    pop: unsafe { std::mem::transmute::<*mut libc::c_void, PopFn>(pop) },
                    path: c,
                });
            }
            Err(e) => tried.push(e),
        }
    }
    Err(format!(
        "unavailable: no NVTX library ({}) could be loaded: {}; install one (PyPI: nvidia-nvtx) or put CUDA's lib64 on LD_LIBRARY_PATH",
        LIBRARIES.join(" or "),
        tried.join("; ")
    ))
}

fn api() -> Option<&'static Api> {
    API.get_or_init(load).as_ref().ok()
}

/// `on (<library>)`, or `off: ...` / `unavailable: ...` with the reason: for `harness list`
/// and the environment record.
pub fn status() -> String {
    match API.get_or_init(load) {
        Ok(api) => format!("on ({})", api.path),
        Err(why) => why.clone(),
    }
}

/// An open range; it closes when dropped.
#[must_use = "the range closes when this is dropped"]
pub struct Range(bool);

impl Drop for Range {
    fn drop(&mut self) {
        if self.0 {
            if let Some(api) = api() {
                // SAFETY: a function of the loaded library, with no arguments.
                unsafe { (api.pop)() };
            }
        }
    }
}

/// Opens a range named by a static string (the per-inference path: no allocation).
pub fn range(name: &'static CStr) -> Range {
    match api() {
        Some(api) => {
            // SAFETY: a function of the loaded library; the name outlives the call.
            unsafe { (api.push)(name.as_ptr()) };
            Range(true)
        }
        None => Range(false),
    }
}

/// Opens a range with a computed name (loads, scenarios).
pub fn range_named(name: &str) -> Range {
    match api() {
        Some(api) => {
            let c = CString::new(name.replace('\0', " ")).unwrap_or_default();
            // SAFETY: as in `range`; the library copies the name.
            unsafe { (api.push)(c.as_ptr()) };
            Range(true)
        }
        None => Range(false),
    }
}
