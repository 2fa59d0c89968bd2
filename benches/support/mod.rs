//! Helpers the benchmarks share: sizes on disk and percentiles.

use std::time::Duration;

/// Bytes of the files under `path` (recursively) whose names end in `suffix`.
pub fn dir_bytes(path: &std::path::Path, suffix: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p, suffix)
            } else if p.to_string_lossy().ends_with(suffix) {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}

/// The `p` percentile (0–1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
