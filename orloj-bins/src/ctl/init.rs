//! `orlojctl init`: writes a project directory from one of the embedded blueprints
//! (the files of `examples/blueprints/<name>/`).

use super::UsageError;
use super::cli::{Blueprint, InitArgs};
use anyhow::{Context, Result};
use std::path::Path;

const PIPELINE: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../examples/blueprints/pipeline/README.md"),
    ),
    (
        "agent-system.yaml",
        include_str!("../../../examples/blueprints/pipeline/agent-system.yaml"),
    ),
    (
        "model-endpoint.yaml",
        include_str!("../../../examples/blueprints/pipeline/model-endpoint.yaml"),
    ),
    (
        "task.yaml",
        include_str!("../../../examples/blueprints/pipeline/task.yaml"),
    ),
    (
        "agents/planner.yaml",
        include_str!("../../../examples/blueprints/pipeline/agents/planner.yaml"),
    ),
    (
        "agents/research.yaml",
        include_str!("../../../examples/blueprints/pipeline/agents/research.yaml"),
    ),
    (
        "agents/writer.yaml",
        include_str!("../../../examples/blueprints/pipeline/agents/writer.yaml"),
    ),
];

const HIERARCHICAL: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../examples/blueprints/hierarchical/README.md"),
    ),
    (
        "agent-system.yaml",
        include_str!("../../../examples/blueprints/hierarchical/agent-system.yaml"),
    ),
    (
        "model-endpoint.yaml",
        include_str!("../../../examples/blueprints/hierarchical/model-endpoint.yaml"),
    ),
    (
        "task.yaml",
        include_str!("../../../examples/blueprints/hierarchical/task.yaml"),
    ),
    (
        "agents/manager.yaml",
        include_str!("../../../examples/blueprints/hierarchical/agents/manager.yaml"),
    ),
    (
        "agents/lead-research.yaml",
        include_str!("../../../examples/blueprints/hierarchical/agents/lead-research.yaml"),
    ),
    (
        "agents/lead-analysis.yaml",
        include_str!("../../../examples/blueprints/hierarchical/agents/lead-analysis.yaml"),
    ),
    (
        "agents/worker-research.yaml",
        include_str!("../../../examples/blueprints/hierarchical/agents/worker-research.yaml"),
    ),
    (
        "agents/worker-analysis.yaml",
        include_str!("../../../examples/blueprints/hierarchical/agents/worker-analysis.yaml"),
    ),
    (
        "agents/editor.yaml",
        include_str!("../../../examples/blueprints/hierarchical/agents/editor.yaml"),
    ),
];

const SWARMLOOP: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../examples/blueprints/swarm-loop/README.md"),
    ),
    (
        "agent-system.yaml",
        include_str!("../../../examples/blueprints/swarm-loop/agent-system.yaml"),
    ),
    (
        "model-endpoint.yaml",
        include_str!("../../../examples/blueprints/swarm-loop/model-endpoint.yaml"),
    ),
    (
        "task.yaml",
        include_str!("../../../examples/blueprints/swarm-loop/task.yaml"),
    ),
    (
        "agents/coordinator.yaml",
        include_str!("../../../examples/blueprints/swarm-loop/agents/coordinator.yaml"),
    ),
    (
        "agents/scout-a.yaml",
        include_str!("../../../examples/blueprints/swarm-loop/agents/scout-a.yaml"),
    ),
    (
        "agents/scout-b.yaml",
        include_str!("../../../examples/blueprints/swarm-loop/agents/scout-b.yaml"),
    ),
];

/// The files of a blueprint: (relative path, contents).
pub fn files(bp: Blueprint) -> &'static [(&'static str, &'static str)] {
    match bp {
        Blueprint::Pipeline => PIPELINE,
        Blueprint::Hierarchical => HIERARCHICAL,
        Blueprint::SwarmLoop => SWARMLOOP,
    }
}

/// The blueprint's name as on the command line.
fn name(bp: Blueprint) -> &'static str {
    match bp {
        Blueprint::Pipeline => "pipeline",
        Blueprint::Hierarchical => "hierarchical",
        Blueprint::SwarmLoop => "swarm-loop",
    }
}

/// Writes the blueprint into `dir`, which must not exist or be empty.
pub fn write(dir: &Path, bp: Blueprint) -> Result<Vec<std::path::PathBuf>> {
    if dir.as_os_str().is_empty() {
        return Err(UsageError("init needs a directory name".into()).into());
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(UsageError(format!(
                    "{} already exists and is not empty; choose another name",
                    dir.display()
                ))
                .into());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot use {}", dir.display())));
        }
    }
    let mut written = Vec::new();
    for (rel, text) in files(bp) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

pub(super) fn init(args: &InitArgs) -> Result<u8> {
    let written = write(&args.name, args.blueprint)?;
    for p in &written {
        outln!("wrote {}", p.display());
    }
    let d = args.name.display();
    outln!(
        "\n{} blueprint written to {d}/. Next:\n  orlojctl validate -f {d}\n  orlojctl apply -f {d} --run",
        name(args.blueprint)
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_blueprint_parses_and_has_a_mock_endpoint_and_task() {
        for bp in [
            Blueprint::Pipeline,
            Blueprint::Hierarchical,
            Blueprint::SwarmLoop,
        ] {
            let mut kinds = Vec::new();
            for (rel, text) in files(bp) {
                if rel.ends_with(".md") {
                    assert!(text.contains("secretRef"), "{rel} documents the switch");
                    continue;
                }
                let objs = orloj_core::parse_manifests(rel, text).expect("valid manifest");
                kinds.extend(objs.iter().map(|o| o.kind));
                for o in &objs {
                    if o.kind == orloj_core::Kind::ModelEndpoint {
                        assert_eq!(o.spec["provider"], "mock", "{rel}");
                    }
                }
            }
            assert!(kinds.contains(&orloj_core::Kind::Task), "{bp:?}");
            assert!(kinds.contains(&orloj_core::Kind::AgentSystem), "{bp:?}");
        }
    }

    #[test]
    fn refuses_a_non_empty_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("proj");
        let written = write(&target, Blueprint::SwarmLoop).expect("write");
        assert!(written.iter().any(|p| p.ends_with("agents/scout-b.yaml")));
        let e = write(&target, Blueprint::Pipeline).expect_err("not empty");
        assert!(e.to_string().contains("not empty"), "{e}");
        // An existing empty directory is fine.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        assert!(write(&empty, Blueprint::Hierarchical).is_ok());
    }
}
