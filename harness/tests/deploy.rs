//! The scheduler manifests in deploy/: rendered with the values Kubernetes and Slurm set,
//! each shard's command is the harness's `compare` with flags it accepts, the shards
//! together are 0..N of N, and a retried shard resumes its own folder.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `script` with `shell` and `env`, a `harness` on PATH that records its arguments
/// (one per line) instead of running; returns them.
fn rendered(shell: &[&str], script: &str, env: &[(&str, String)], dir: &Path) -> Vec<String> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let argv = dir.join("argv");
    let _ = std::fs::remove_file(&argv);
    let shim = bin.join("harness");
    if !shim.exists() {
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{}'\n",
                argv.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut tries = 0;
    let out = loop {
        let mut cmd = Command::new(shell[0]);
        cmd.args(&shell[1..]).arg(script).current_dir(dir);
        cmd.env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        // A shim just written can be "busy" while another test thread's fork still holds
        // its descriptor (until that child execs): try again.
        let busy = String::from_utf8_lossy(&out.stderr).contains("Text file busy");
        tries += 1;
        if !busy || tries == 20 {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&argv)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The harness's own parser accepts the arguments; returns the compare flags.
fn parsed(args: &[String]) -> harness::cli::CompareArgs {
    let argv = std::iter::once("harness".to_string()).chain(args.iter().cloned());
    match harness::cli::Cli::try_parse_from(argv) {
        Ok(cli) => match cli.command {
            harness::cli::Command::Compare(a) => *a,
            _ => panic!("not `harness compare`: {args:?}"),
        },
        Err(e) => panic!("the harness refuses {args:?}: {e}"),
    }
}

#[test]
fn the_kubernetes_indexed_job_runs_each_shard_once_and_resumes_a_retried_pod() {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/sweep-job.yaml")).unwrap();
    let job: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(job["kind"], "Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let n = spec["completions"].as_u64().unwrap();
    assert_eq!(spec["parallelism"].as_u64(), Some(n));
    let c = &spec["template"]["spec"]["containers"][0];
    let limits = &c["resources"]["limits"];
    assert_eq!(c["resources"]["requests"], *limits, "Guaranteed QoS");
    let env: Vec<(&str, String)> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let shards = env.iter().find(|(k, _)| *k == "SHARDS").unwrap().1.clone();
    assert_eq!(
        shards,
        n.to_string(),
        "SHARDS must be the Job's completions"
    );
    let command: Vec<&str> = c["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let script = c["args"][0].as_str().unwrap();
    // The results volume's mount, rendered under a temporary root.
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"] == "/models" && m["readOnly"] == true));
    assert!(mounts.iter().any(|m| m["mountPath"] == "/results"));

    let dir = common::tmp("k8s");
    let mut seen = Vec::new();
    for k in 0..n {
        let mut env = env.clone();
        env.push(("JOB_COMPLETION_INDEX", k.to_string()));
        // The script writes under /results; render it with that root moved here.
        let script = script.replace("/results/", &format!("{}/results/", dir.display()));
        let args = rendered(&command, &script, &env, &dir);
        let a = parsed(&args);
        let shard = a.shard.expect("--shard");
        assert_eq!((shard.index as u64, shard.count as u64), (k, n));
        assert_eq!(a.model, PathBuf::from("/models/all-MiniLM-L6-v2"));
        let out = a.out.expect("a fresh pod writes --out");
        assert!(out.ends_with(format!("minilm-sweep/shard-{k}")), "{out:?}");
        seen.push(k);
        // The same pod retried, its folder already there: --resume that folder.
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("results.json"), "{}").unwrap();
        let a = parsed(&rendered(&command, &script, &env, &dir));
        assert_eq!(a.resume.as_deref(), Some(out.as_path()));
        assert!(a.out.is_none());
    }
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
}

#[test]
fn the_slurm_array_runs_each_shard_once_and_resumes_a_requeued_task() {
    let path = repo().join("deploy/slurm/sweep-array.sbatch");
    let script = std::fs::read_to_string(&path).unwrap();
    let array = script
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --array="))
        .expect("#SBATCH --array");
    let (lo, hi) = array.split_once('-').unwrap();
    let (lo, hi): (usize, usize) = (lo.parse().unwrap(), hi.parse().unwrap());
    assert_eq!(lo, 0, "shards count from 0");
    let n = hi + 1;
    let dir = common::tmp("slurm");
    for k in 0..n {
        let env = vec![
            ("SLURM_ARRAY_TASK_ID", k.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", n.to_string()),
            ("SLURM_ARRAY_JOB_ID", "4242".to_string()),
            ("HARNESS", "harness".to_string()),
        ];
        let bash = ["bash", "-c"];
        let body = std::fs::read_to_string(&path).unwrap();
        let args = rendered(&bash, &body, &env, &dir);
        let a = parsed(&args);
        let shard = a.shard.expect("--shard");
        assert_eq!((shard.index, shard.count), (k, n));
        let out = dir.join(a.out.expect("a first run writes --out"));
        assert!(
            out.ends_with(format!("results/sweep-4242/shard-{k}")),
            "{out:?}"
        );
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("results.json"), "{}").unwrap();
        let a = parsed(&rendered(&bash, &body, &env, &dir));
        assert!(a.resume.is_some() && a.out.is_none());
    }
    // Outside sbatch it says what it needs instead of running a wrong shard.
    let out = Command::new("bash")
        .arg(&path)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run under sbatch"));
}
