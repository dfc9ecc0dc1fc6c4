//! What a GPU run needs at run time, checked before anything is loaded, so a missing piece is
//! named (the driver, a CUDA, cuDNN or TensorRT library) instead of failing deep inside a
//! runtime. Libraries are probed with `dlopen` the way the runtimes will load them.

use crate::Device;

/// The NVIDIA driver's user-space library: without it there is no GPU to use.
pub const DRIVER: &str = "libcuda.so.1";
/// What ONNX Runtime 1.31's CUDA execution provider loads (CUDA 13, cuDNN 9).
pub const CUDA_LIBS: &[&str] = &[
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libcurand.so.10",
    "libcufft.so.12",
    "libcudnn.so.9",
];
/// TensorRT 10, for the TensorRT execution provider.
pub const TENSORRT_LIBS: &[&str] = &[
    "libnvinfer.so.10",
    "libnvinfer_plugin.so.10",
    "libnvonnxparser.so.10",
];

/// Whether `name` can be loaded here (the loader's search: LD_LIBRARY_PATH, the cache,
/// system folders), and the loader's message when not.
pub fn loadable(name: &str) -> Result<(), String> {
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: dlopen/dlclose with a valid C string; RTLD_LAZY runs no symbol binding.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if h.is_null() {
            let e = libc::dlerror();
            let msg = if e.is_null() {
                "not found".to_string()
            } else {
                std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
            };
            return Err(msg);
        }
        libc::dlclose(h);
    }
    Ok(())
}

/// The first thing missing for `device`, as a sentence with the fix; None when everything
/// the device needs loads.
pub fn missing_for(device: Device) -> Option<String> {
    if device == Device::Cpu {
        return None;
    }
    if let Err(e) = loadable(DRIVER) {
        return Some(format!(
            "no NVIDIA driver: {DRIVER} cannot be loaded ({e}); a GPU run needs the driver installed (nvidia-smi should work)"
        ));
    }
    for lib in CUDA_LIBS {
        if let Err(e) = loadable(lib) {
            return Some(format!(
                "CUDA library {lib} is missing ({e}): install CUDA 13 and cuDNN 9 (PyPI: nvidia-cuda-runtime, nvidia-cublas, nvidia-curand, nvidia-cufft, nvidia-cudnn-cu13) and put their lib folders on LD_LIBRARY_PATH"
            ));
        }
    }
    if let Device::TensorRt(_) = device {
        for lib in TENSORRT_LIBS {
            if let Err(e) = loadable(lib) {
                return Some(format!(
                    "TensorRT library {lib} is missing ({e}): install TensorRT 10 (PyPI: tensorrt-cu13-libs) and put its lib folder on LD_LIBRARY_PATH"
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_name_what_is_missing() {
        assert!(loadable("libc.so.6").is_ok());
        let e = loadable("libharness-no-such-library.so.1").unwrap_err();
        assert!(e.contains("libharness-no-such-library.so.1"), "{e}");
        assert_eq!(missing_for(Device::Cpu), None);
    }

    #[test]
    fn event_stages_map_to_copies_and_compute() {
        use crate::DeviceTime;
        let d = DeviceTime::from_stages(&[5]).unwrap();
        assert_eq!(
            (d.h2d_ns, d.compute_ns, d.d2h_ns, d.total_ns()),
            (None, 5, None, 5)
        );
        let d = DeviceTime::from_stages(&[1, 20, 3]).unwrap();
        assert_eq!(
            (d.h2d_ns, d.compute_ns, d.d2h_ns, d.total_ns()),
            (Some(1), 20, Some(3), 24)
        );
        let e = DeviceTime::from_stages(&[1, 2]).unwrap_err();
        assert!(e.contains("2 timed stages"), "{e}");
    }

    #[test]
    fn devices_parse_and_label() {
        assert_eq!(Device::parse("cuda"), Some(Device::Cuda(0)));
        assert_eq!(Device::parse("cuda:1"), Some(Device::Cuda(1)));
        assert_eq!(Device::parse("tensorrt"), Some(Device::TensorRt(0)));
        assert_eq!(Device::parse("cpu"), Some(Device::Cpu));
        assert_eq!(Device::parse("cpu:1"), None);
        assert_eq!(Device::parse("tpu"), None);
        assert_eq!(Device::parse("cuda:x"), None);
        assert_eq!(Device::TensorRt(2).label(), "tensorrt:2");
    }
}
