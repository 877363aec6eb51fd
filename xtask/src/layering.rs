//! The layering rule: podstore's crates form a strict stack, and every dependency edge between two
//! of them must point to a lower tier. Read from `cargo metadata --no-deps`.
//!
//! The test harness (`podstore-testkit`) sits outside the stack: it may depend on no podstore
//! crate, and podstore crates may use it only as a dev-dependency.

use std::fmt;

use anyhow::{Context, Result};

/// The stack, bottom first. A crate may depend only on crates listed before it.
pub const TIERS: &[&str] = &[
    "podstore-reference",
    "podstore-blobstore",
    "podstore-layer",
    "podstore-metadata",
    "podstore-registry",
    "podstore-image",
    "podstore-runtime",
    "podstore-cli",
];

/// The shared test harness: dev-dependency only, depends on nothing of ours.
pub const TESTKIT: &str = "podstore-testkit";

/// One forbidden dependency edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The depending crate.
    pub from: String,
    /// The crate depended upon.
    pub to: String,
    /// `normal`, `dev` or `build`.
    pub kind: String,
    /// Why the edge is forbidden.
    pub reason: &'static str,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} ({} dependency): {}",
            self.from, self.to, self.kind, self.reason
        )
    }
}

fn tier(name: &str) -> Option<usize> {
    TIERS.iter().position(|t| *t == name)
}

/// Checks one edge; `None` when it is allowed.
pub fn check_edge(from: &str, to: &str, kind: &str) -> Option<Violation> {
    let violation = |reason| {
        Some(Violation {
            from: from.to_owned(),
            to: to.to_owned(),
            kind: kind.to_owned(),
            reason,
        })
    };
    if from == TESTKIT && (tier(to).is_some() || to == TESTKIT) {
        return violation("the test harness must not depend on podstore crates");
    }
    if to == TESTKIT {
        // xtask is automation, not a podstore crate: `bench` runs on the harness's fixtures.
        if kind == "dev" || from == TESTKIT || from == "xtask" {
            return None;
        }
        return violation("the test harness may only be a dev-dependency");
    }
    match (tier(from), tier(to)) {
        (Some(a), Some(b)) if b == a => violation("a crate cannot depend on its own tier"),
        (Some(a), Some(b)) if b > a => violation("dependencies must point to a lower tier"),
        _ => None,
    }
}

/// Every forbidden edge in a `cargo metadata --format-version 1` document.
pub fn check_metadata(metadata: &serde_json::Value) -> Result<Vec<Violation>> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages array")?;
    let mut violations = Vec::new();
    for pkg in packages {
        let from = pkg["name"].as_str().context("package without a name")?;
        let deps = pkg["dependencies"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for dep in deps {
            let to = dep["name"].as_str().context("dependency without a name")?;
            let kind = dep["kind"].as_str().unwrap_or("normal");
            if let Some(v) = check_edge(from, to, kind) {
                violations.push(v);
            }
        }
    }
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(edges: &[(&str, &str, Option<&str>)]) -> serde_json::Value {
        let mut names: Vec<&str> = edges.iter().flat_map(|(a, b, _)| [*a, *b]).collect();
        names.sort();
        names.dedup();
        let packages: Vec<serde_json::Value> = names
            .iter()
            .map(|n| {
                let deps: Vec<serde_json::Value> = edges
                    .iter()
                    .filter(|(a, _, _)| a == n)
                    .map(|(_, b, k)| serde_json::json!({ "name": b, "kind": k }))
                    .collect();
                serde_json::json!({ "name": n, "dependencies": deps })
            })
            .collect();
        serde_json::json!({ "packages": packages })
    }

    #[test]
    fn downward_edges_pass() {
        let m = metadata(&[
            ("podstore-blobstore", "podstore-reference", None),
            ("podstore-registry", "podstore-blobstore", None),
            ("podstore-cli", "podstore-runtime", None),
            ("podstore-image", "serde", None),
            ("podstore-layer", "podstore-testkit", Some("dev")),
            ("xtask", "podstore-testkit", None),
        ]);
        assert_eq!(check_metadata(&m).unwrap(), vec![]);
    }

    #[test]
    fn upward_edge_is_named() {
        let m = metadata(&[
            ("podstore-reference", "podstore-metadata", None),
            ("podstore-layer", "podstore-reference", None),
        ]);
        let v = check_metadata(&m).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].from, "podstore-reference");
        assert_eq!(v[0].to, "podstore-metadata");
        assert!(
            v[0].to_string()
                .contains("podstore-reference -> podstore-metadata")
        );
    }

    #[test]
    fn dev_dependency_upward_is_refused_too() {
        let m = metadata(&[("podstore-layer", "podstore-image", Some("dev"))]);
        let v = check_metadata(&m).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, "dev");
    }

    #[test]
    fn testkit_rules() {
        let m = metadata(&[
            ("podstore-testkit", "podstore-reference", None),
            ("podstore-image", "podstore-testkit", None),
        ]);
        let v = check_metadata(&m).unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn the_real_workspace_is_layered() {
        let out = std::process::Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(crate::workspace_root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let names: Vec<&str> = json["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for t in TIERS {
            assert!(names.contains(t), "{t} missing from the workspace");
        }
        assert_eq!(check_metadata(&json).unwrap(), vec![]);
    }
}
