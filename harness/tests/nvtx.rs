//! NVTX ranges reach a tool. The test plays the tool: a small injection library (built here
//! with the system C compiler) that receives every range through NVTX's injection interface,
//! the one Nsight Systems uses, and writes it to a file. Where no NVTX library is installed,
//! the harness must say so and run as before.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Receives nvtxRangePushA and nvtxRangePop (NVTX_CB_MODULE_CORE = 1; callback ids 9 and 11)
/// and appends "<pid> push <name>" / "<pid> pop" lines to $NVTX_TEST_LOG.
const INJECTION: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
typedef void (*NvtxFunctionPointer)(void);
typedef NvtxFunctionPointer **NvtxFunctionTable;
typedef struct {
  size_t struct_size;
  int (*GetModuleFunctionTable)(int module, NvtxFunctionTable *table, unsigned int *size);
} NvtxExportTableCallbacks;
typedef const void *(*NvtxGetExportTable_t)(uint32_t id);
static FILE *out;
static int push_a(const char *name) {
  fprintf(out, "%d push %s\n", (int)getpid(), name);
  fflush(out);
  return 0;
}
static int pop(void) {
  fprintf(out, "%d pop\n", (int)getpid());
  fflush(out);
  return 0;
}
int InitializeInjectionNvtx2(NvtxGetExportTable_t get) {
  const NvtxExportTableCallbacks *cb = (const NvtxExportTableCallbacks *)get(1);
  NvtxFunctionTable table = 0;
  unsigned int size = 0;
  if (!cb || !cb->GetModuleFunctionTable(1, &table, &size) || size <= 11) return 0;
  out = fopen(getenv("NVTX_TEST_LOG"), "a");
  if (!out) return 0;
  *table[9] = (NvtxFunctionPointer)push_a;
  *table[11] = (NvtxFunctionPointer)pop;
  return 1;
}
"#;

/// The repository's Python environment, where PyTorch's nvidia-nvtx package puts
/// libnvtx3interop.so.1 (scripts/setup.sh installs it).
fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv")
}

fn nvtx_library_in(venv: &Path) -> Option<PathBuf> {
    for py in std::fs::read_dir(venv.join("lib")).ok()?.flatten() {
        for sub in ["nvtx/lib", "cu13/lib", "cu12/lib"] {
            for lib in ["libnvToolsExt.so.1", "libnvtx3interop.so.1"] {
                let p = py.path().join("site-packages/nvidia").join(sub).join(lib);
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    None
}

fn build_injection(dir: &Path) -> PathBuf {
    let src = dir.join("inject.c");
    let lib = dir.join("libinject.so");
    std::fs::write(&src, INJECTION).unwrap();
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) to build the test's NVTX tool");
    assert!(st.success());
    lib
}

#[test]
fn ranges_reach_an_nvtx_tool_around_loads_windows_and_each_inference() {
    let dir = common::tmp("nvtx");
    // Without a listening tool NVTX stays off, and says why.
    let quiet = common::harness(&["list", "--device", "cpu"]);
    assert!(
        quiet
            .stdout
            .contains("NVTX ranges: off: no NVTX tool is listening"),
        "{}",
        quiet.stdout
    );
    let inject = build_injection(&dir);
    let log = dir.join("ranges.log");
    let Some(_lib) = nvtx_library_in(&venv()) else {
        // No NVTX library here: a tool listening changes nothing but the reason.
        let empty = dir.join("no-venv");
        std::fs::create_dir_all(&empty).unwrap();
        let run = common::harness_env(
            &["list", "--device", "cpu"],
            &[
                ("NVTX_INJECTION64_PATH", inject.as_os_str()),
                ("VIRTUAL_ENV", empty.as_os_str()),
            ],
        );
        assert!(
            run.stdout
                .contains("NVTX ranges: unavailable: no NVTX library"),
            "{}",
            run.stdout
        );
        return;
    };
    let venv = venv();
    let env = [
        ("NVTX_INJECTION64_PATH", inject.as_os_str()),
        ("NVTX_TEST_LOG", log.as_os_str()),
        ("VIRTUAL_ENV", venv.as_os_str()),
    ];
    let list = common::harness_env(&["list", "--device", "cpu"], &env);
    assert!(
        list.stdout.contains("NVTX ranges: on (") && list.stdout.contains("libnvtx3interop"),
        "{}",
        list.stdout
    );

    let out = dir.join("run");
    common::compare_fixture_env(
        &out,
        &[
            "--runtimes",
            "ort,tract",
            "--min-time",
            "100ms",
            "--min-samples",
            "30",
        ],
        &env,
    );
    let results = common::results(&out);
    let text = std::fs::read_to_string(&log).unwrap();
    // Each process's ranges, in order.
    let mut by_pid: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        let (pid, rest) = line.split_once(' ').unwrap();
        by_pid.entry(pid).or_default().push(rest);
    }
    let all: Vec<&str> = by_pid.values().flatten().copied().collect();
    for rt in ["ort", "tract"] {
        assert!(
            all.iter()
                .any(|l| l.starts_with(&format!("push load {rt} fp32 cpu t"))),
            "no load range for {rt}: {text}"
        );
    }
    // Every push is popped, and the ranges nest: per process, the depth never goes below 0.
    for (pid, lines) in &by_pid {
        let mut depth = 0i64;
        for l in lines {
            depth += if l.starts_with("push ") { 1 } else { -1 };
            assert!(depth >= 0, "process {pid} popped more than it pushed");
        }
        assert_eq!(depth, 0, "process {pid} left ranges open");
    }
    // Per scenario: a range named by it, holding a warm-up and a window, the window holding
    // one inference range per measured inference.
    for s in results["scenarios"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let name = format!("push {id}");
        let lines = by_pid
            .values()
            .find(|l| l.contains(&name.as_str()))
            .unwrap_or_else(|| panic!("no range for {id}: {text}"));
        let start = lines.iter().position(|l| *l == name).unwrap();
        let after = &lines[start + 1..];
        let window = after.iter().position(|l| *l == "push window").unwrap();
        assert!(after[..window].contains(&"push warm-up"), "{id}");
        let inferences = after[window + 1..]
            .iter()
            .scan(1i64, |depth, l| {
                *depth += if l.starts_with("push ") { 1 } else { -1 };
                (*depth > 0).then_some(*l)
            })
            .filter(|l| *l == "push inference")
            .count() as u64;
        assert_eq!(
            inferences,
            s["measurement"]["iterations"].as_u64().unwrap(),
            "{id}: one inference range per measured inference"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
