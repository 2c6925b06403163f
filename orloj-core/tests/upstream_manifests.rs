//! Every manifest shipped with the reference (examples and test scenarios) parses, normalizes,
//! and round-trips losslessly.

use orloj_core::{Object, parse_manifests, resources};
use std::path::{Path, PathBuf};

fn upstream() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/upstream");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipping: {} not found", dir.display());
        None
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
}

#[test]
fn every_upstream_manifest_parses_and_normalizes() {
    let Some(root) = upstream() else { return };
    let mut files = Vec::new();
    for sub in ["examples", "testing/scenarios"] {
        collect(&root.join(sub), &mut files);
    }
    files.sort();
    assert!(
        files.len() > 50,
        "expected the upstream manifests, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut objects = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let source = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        match parse_manifests(&source, &text) {
            Ok(objs) => {
                assert!(!objs.is_empty(), "{source}: no documents");
                for obj in objs {
                    objects += 1;
                    // Normalizing a normalized object changes nothing, and it survives JSON.
                    let again = resources::normalize(obj.clone()).expect("renormalizes");
                    assert_eq!(again, obj, "{source}: normalize is not idempotent");
                    let json = serde_json::to_string(&obj).expect("serializes");
                    let back: Object = serde_json::from_str(&json).expect("deserializes");
                    assert_eq!(back, obj, "{source}: JSON round trip");
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "manifests failed:\n{}",
        failures.join("\n")
    );
    println!("{} files, {objects} objects", files.len());
}
