//! Shared by the integration tests that read Istio's reference data.

use std::path::PathBuf;

/// `../shared/istio` beside the repository. When it is absent the caller skips with a visible message,
/// except under `CI=true`, where the data must be there and its absence fails the test.
pub fn istio_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/istio"));
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "Istio reference data missing at {} (required when CI=true)",
        dir.display()
    );
    eprintln!(
        "SKIPPED: Istio reference data not found at {}",
        dir.display()
    );
    None
}
