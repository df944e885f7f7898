//! The layering rules of ARCHITECTURE.md, checked on the sources: no import cycle between
//! modules in any crate of the workspace, no HTTP in the services, no I/O, clock or HTTP in the
//! domain, and no HTTP crate under the store. The crate graph (domain < store < server) is
//! enforced by the compiler; these are the rules inside a crate that it cannot see.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, with its module path (`api::flags`, `service`, `` for lib.rs).
fn modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(name);
                walk(&path, &inner, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut module = prefix.to_vec();
                if !matches!(name.as_str(), "mod" | "lib" | "main") {
                    module.push(name);
                }
                out.insert(module.join("::"), std::fs::read_to_string(&path).expect("read source"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The code before the file's unit tests, without comments: what tests import, or what a
/// comment mentions, does not make a layer.
fn production_code(text: &str) -> String {
    let code = text.find("#[cfg(test)]\nmod tests").map_or(text, |at| &text[..at]);
    code.lines().map(|line| line.split_once("//").map_or(line, |(code, _)| code)).collect::<Vec<_>>().join("\n")
}

/// The modules `text` (the source of `module`) refers to through `crate::…` and `super::…`
/// paths, resolved to the longest known module.
fn references(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let text = &production_code(text);
    let parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    for (anchor, base) in [("crate::", Vec::new()), ("super::", parent[..parent.len().saturating_sub(1)].to_vec())] {
        for (at, _) in text.match_indices(anchor) {
            // `dimmer_crate::x` is another crate; `crate::` must stand alone.
            if at > 0 && text[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[at + anchor.len()..];
            let path: Vec<&str> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            let mut candidate: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            let mut best = None;
            for segment in path {
                candidate.push(segment.to_owned());
                let name = candidate.join("::");
                if known.contains(&name) {
                    best = Some(name);
                }
            }
            if let Some(target) = best {
                out.insert(target);
            }
        }
    }
    out
}

/// A module and the modules it contains refer to each other by nature (`mod x;` and `super::`);
/// only edges between modules that do not contain each other can make a cycle of layers.
fn related(a: &str, b: &str) -> bool {
    let within =
        |inner: &str, outer: &str| outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}::"));
    within(a, b) || within(b, a)
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_crate_in_the_workspace_has_an_import_cycle_between_its_modules() {
    let crates = std::fs::read_dir(workspace().join("crates")).expect("crates/");
    let mut checked = 0;
    for krate in crates.flatten() {
        let src = krate.path().join("src");
        if !src.is_dir() {
            continue;
        }
        let sources = modules(&src);
        let known: BTreeSet<String> = sources.keys().cloned().collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, text) in &sources {
            let targets = references(module, text, &known).into_iter().filter(|t| !related(module, t)).collect();
            graph.insert(module.clone(), targets);
        }
        if let Some(cycle) = find_cycle(&graph) {
            panic!("import cycle in {}: {}", krate.path().display(), cycle.join(" -> "));
        }
        checked += sources.len();
    }
    assert!(checked > 50, "the check saw only {checked} modules: is it reading the sources?");
}

#[test]
fn the_services_know_no_http_and_the_domain_no_io_clock_or_http() {
    let server = workspace().join("crates/server/src");
    for (module, text) in modules(&server.join("service")) {
        let code = production_code(&text);
        for http in ["axum", "tower", "StatusCode", "IntoResponse", "crate::api"] {
            assert!(!code.contains(http), "service::{module} uses {http}: HTTP belongs in api/");
        }
    }
    for (module, text) in modules(&workspace().join("crates/domain/src")) {
        let code = production_code(&text);
        for io in ["axum", "tokio", "sqlx", "reqwest", "std::fs", "std::net", "dimmer_store"] {
            assert!(!code.contains(io), "dimmer_domain::{module} uses {io}: the domain is pure");
        }
        if module != "clock" {
            assert!(!code.contains("SystemTime"), "dimmer_domain::{module} reads the time: take `now` as an argument");
        }
    }
    for (module, text) in modules(&workspace().join("crates/store/src")) {
        for http in ["axum", "tower", "StatusCode"] {
            assert!(!production_code(&text).contains(http), "dimmer_store::{module} uses {http}");
        }
    }
    let manifest = std::fs::read_to_string(workspace().join("crates/store/Cargo.toml")).expect("store manifest");
    for http in ["axum", "tower", "reqwest"] {
        assert!(!manifest.contains(http), "dimmer-store depends on {http}");
    }
}

#[test]
fn the_cycle_check_finds_a_planted_cycle() {
    let known: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let a = references("a", "use crate::b::Thing;", &known);
    let b = references("b", "fn f() { crate::c::g() }", &known);
    let c = references("c", "use super::a;", &known);
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a".to_owned(), a), ("b".to_owned(), b), ("c".to_owned(), c)].into_iter().collect();
    assert_eq!(find_cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
