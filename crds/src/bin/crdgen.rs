//! Writes the CRD YAML of every kind into `crds/generated/` (one file per CRD plus `all.yaml`).
//! Usage: `cargo run -p halyard-crds --bin crdgen [-- OUTPUT_DIR]`.

use std::path::PathBuf;

use halyard_crds::crd::{all_crds, file_name, to_yaml};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/generated")));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let crds = all_crds()?;
    for crd in &crds {
        let path = dir.join(file_name(crd));
        std::fs::write(&path, to_yaml(std::slice::from_ref(crd))?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let all = dir.join("all.yaml");
    std::fs::write(&all, to_yaml(&crds)?)
        .map_err(|e| format!("cannot write {}: {e}", all.display()))?;
    println!("wrote {} CRDs to {}", crds.len(), dir.display());
    Ok(())
}
