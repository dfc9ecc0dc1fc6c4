//! A run's results on disk: the header (environment, model, settings) written before the
//! first scenario, then the whole folder rewritten after every row, so an interrupted run
//! keeps everything it measured. In-process and network runs share it.

use std::path::{Path, PathBuf};

use crate::environment;
use crate::measure::MeasureConfig;
use crate::results::{
    ModelSummary, Results, RuntimeStatus, RuntimeVersion, ScenarioResult, Settings, Tolerance,
    SCHEMA, SCHEMA_VERSION,
};

#[derive(Debug, thiserror::Error)]
#[error("could not write results to {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The percentile definition every results file states.
pub const PERCENTILE_DEFINITION: &str = "nearest rank on all samples; '*' (low_sample_percentiles) when fewer than 5 samples lie at or beyond it";

/// The settings of a run, with the one percentile definition.
pub fn settings(
    mode: String,
    seed: u64,
    measure: &MeasureConfig,
    tolerance: Tolerance,
    reference: &str,
    pinning: String,
    isolation: &str,
) -> Settings {
    Settings {
        mode,
        seed,
        warmup_iterations: measure.warmup_iters,
        warmup_time_s: measure.warmup_time.as_secs_f64(),
        warmup_max_s: Some(measure.warmup_max.max(measure.warmup_time).as_secs_f64()),
        min_time_s: measure.min_time.as_secs_f64(),
        min_samples: measure.min_samples,
        max_time_s: measure.max_time.as_secs_f64(),
        target_ci_pct: measure.target_ci.map(|t| t * 100.0),
        budget_s: measure.budget.map(|b| b.as_secs_f64()),
        tolerance,
        reference_preference: reference.into(),
        pinning,
        isolation: isolation.into(),
        percentile_definition: PERCENTILE_DEFINITION.into(),
        shard: None,
    }
}

pub fn now_string() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// Default results folder name: `results/2026-11-28T00-15-02Z`.
pub fn default_out_dir() -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]-[minute]-[second]Z");
    PathBuf::from("results").join(now.format(fmt).unwrap_or_else(|_| "run".into()))
}

/// The results of one run and the folder they live in.
pub struct RunLog {
    pub results: Results,
    out: PathBuf,
}

impl RunLog {
    /// Captures the environment, writes the header, and returns the log.
    pub fn create(
        out: &Path,
        model: ModelSummary,
        settings: Settings,
        versions: Vec<RuntimeVersion>,
        runtimes: Vec<RuntimeStatus>,
    ) -> Result<RunLog, WriteError> {
        let log = RunLog {
            results: Results {
                schema: SCHEMA.into(),
                schema_version: SCHEMA_VERSION,
                started_at: now_string(),
                finished_at: None,
                environment: environment::capture(versions),
                model,
                settings,
                harness_overhead: None,
                interrupted: false,
                merged_from: Vec::new(),
                runtimes,
                scenarios: Vec::new(),
                capacity: Vec::new(),
                interleaved_tax: Vec::new(),
                resumed_at: Vec::new(),
                machines: Vec::new(),
            },
            out: out.to_path_buf(),
        };
        log.write()?;
        Ok(log)
    }

    /// Continues a run in its folder (`compare --resume`): the rows `keep` accepts stay as
    /// they were, the others (to be measured again) are dropped, and the time is noted.
    pub fn resume(
        out: &Path,
        mut results: Results,
        keep: impl Fn(&ScenarioResult) -> bool,
    ) -> Result<RunLog, WriteError> {
        results.scenarios.retain(|s| keep(s));
        let kept: std::collections::BTreeSet<&str> =
            results.scenarios.iter().map(|s| s.id.as_str()).collect();
        // Searches and interleaved taxes of rows measured again are measured again too.
        let searches = std::mem::take(&mut results.capacity);
        results.capacity = searches
            .into_iter()
            .filter(|c| kept.contains(c.group.as_str()))
            .collect();
        let taxes = std::mem::take(&mut results.interleaved_tax);
        results.interleaved_tax = taxes
            .into_iter()
            .filter(|t| kept.contains(t.served_scenario.as_str()))
            .collect();
        results.resumed_at.push(now_string());
        results.finished_at = None;
        let log = RunLog {
            results,
            out: out.to_path_buf(),
        };
        log.write()?;
        Ok(log)
    }

    pub fn write(&self) -> Result<(), WriteError> {
        crate::present::write_all(&self.out, &self.results).map_err(|source| WriteError {
            path: self.out.clone(),
            source,
        })
    }

    /// A folder inside the results folder.
    pub fn create_dir(&self, dir: &Path) -> Result<(), WriteError> {
        std::fs::create_dir_all(dir).map_err(|source| WriteError {
            path: dir.to_path_buf(),
            source,
        })
    }

    /// Adds a finished row and writes the folder.
    pub fn push(&mut self, row: ScenarioResult) -> Result<(), WriteError> {
        self.results.scenarios.push(row);
        self.write()
    }

    /// Marks the end (and whether it was interrupted), writes, and hands the results back.
    pub fn finish(mut self, interrupted: bool) -> Result<Results, WriteError> {
        self.results.interrupted = interrupted;
        self.results.finished_at = Some(now_string());
        self.write()?;
        Ok(self.results)
    }
}
