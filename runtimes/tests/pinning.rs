//! Worker-thread pinning read back from /proc: rayon pools (tract, candle) pin each worker
//! as it starts, and ONNX Runtime pins its intra-op workers from the session option. One
//! test, so no other test's threads come and go while the thread list is read.

use std::collections::BTreeMap;
use std::path::Path;

use runtimes::{LoadOptions, ModelFiles, ModelInfo};

/// Thread id -> (name, allowed CPUs) for every thread of this process.
fn threads() -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_string();
        out.insert(
            t.file_name().to_string_lossy().into_owned(),
            (name.trim().to_string(), allowed),
        );
    }
    out
}

#[test]
fn runtime_worker_threads_are_pinned_where_asked() {
    if std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        < 2
    {
        eprintln!("one CPU: nothing to pin apart");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny-bert");
    let files = ModelFiles::resolve(&dir).unwrap();
    let info = ModelInfo::read(&files).unwrap();
    let opts = |cpus: Vec<usize>| LoadOptions {
        threads: 2,
        cpus: Some(cpus),
        ..LoadOptions::default()
    };

    // tract and candle: both pool workers on CPU 1.
    for rt in ["tract", "candle"] {
        let m = runtimes::by_name(rt)
            .unwrap()
            .load(&files, &info, &opts(vec![1]))
            .unwrap();
        // Pool threads start asynchronously: wait (briefly) until both have run their
        // start handler, i.e. until both show the requested CPU.
        let t = std::time::Instant::now();
        let workers = loop {
            let w: Vec<(String, String)> = threads()
                .into_values()
                .filter(|(n, _)| n.starts_with(&format!("{rt}-worker")))
                .collect();
            let done = w.len() == 2 && w.iter().all(|(_, c)| c == "1");
            if done || t.elapsed() > std::time::Duration::from_secs(5) {
                break w;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(workers.len(), 2, "{rt}: {workers:?}");
        assert!(
            workers.iter().all(|(_, cpus)| cpus == "1"),
            "{rt}: {workers:?}"
        );
        let applied: BTreeMap<_, _> = m.applied().into_iter().collect();
        assert!(applied["worker_cpus"].contains("[1]"), "{applied:?}");
        drop(m);
    }

    // ONNX Runtime: 2 intra-op threads = the caller + one worker, placed on CPU 1.
    let before = threads();
    let m = runtimes::by_name("ort")
        .unwrap()
        .load(&files, &info, &opts(vec![0, 1]))
        .unwrap();
    let t = std::time::Instant::now();
    let new = loop {
        let new: Vec<(String, String)> = threads()
            .into_iter()
            .filter(|(id, _)| !before.contains_key(id))
            .map(|(_, t)| t)
            .collect();
        if new.iter().any(|(_, cpus)| cpus == "1")
            || t.elapsed() > std::time::Duration::from_secs(5)
        {
            break new;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(
        new.iter().any(|(_, cpus)| cpus == "1"),
        "new threads: {new:?}"
    );
    let applied: BTreeMap<_, _> = m.applied().into_iter().collect();
    assert!(
        applied["worker_cpus"].contains("intra_op_thread_affinities 2"),
        "{applied:?}"
    );
}
