//! Presenters: they only format what was measured. The terminal table, `results.csv` (a typed
//! row), `summary.md`, `report.html`, `harness diff`'s tables, and the progress display. A
//! results folder is written whole after every scenario, so an interrupted run keeps what it
//! measured, and any presentation can be rebuilt from `results.json` alone.

pub mod csv;
pub mod diff;
pub mod html;
pub mod markdown;
pub mod progress;
pub mod table;

use std::path::Path;

use crate::results::Results;

pub use csv::to_csv;
pub use markdown::to_markdown;
pub use table::to_table;

fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Writes results.json, results.csv, summary.md and report.html into `dir`. Called after every scenario, so an interrupted run
/// keeps what it measured.
pub fn write_all(dir: &Path, r: &Results) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    write_atomic(&dir.join("results.json"), &json)?;
    write_atomic(&dir.join("results.csv"), &to_csv(r))?;
    write_atomic(&dir.join("summary.md"), &to_markdown(r))?;
    write_atomic(&dir.join("report.html"), &html::to_html(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A results folder written by `harness compare --served` before the schema became a
    /// leaf (in-process, skipped and served rows): it still loads, and every presenter
    /// writes what was written then.
    #[test]
    fn a_results_folder_from_before_the_schema_moved_presents_the_same() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results-v1");
        let r = Results::read(&dir).unwrap();
        assert!(r.scenarios.iter().any(|s| s.served.is_some()));
        assert!(r.scenarios.iter().any(|s| s.parity_label() == "SKIP"));
        assert_eq!(
            to_csv(&r),
            include_str!("../../tests/fixtures/results-v1/results.csv")
        );
        assert_eq!(
            to_markdown(&r),
            include_str!("../../tests/fixtures/results-v1/summary.md")
        );
    }
}
