//! Compiling one environment flag by flag: a change to a flag recompiles that flag and the flags
//! that name it as a prerequisite, not the whole set, and the result is the same as a full
//! [`crate::compile()`] of the same set (a property test holds this).
//!
//! Positions are the set's: a new flag is appended, a removed one is replaced by the last (the
//! `IndexMap`'s `swap_remove`), so every other flag keeps its index and its compiled form. The
//! prerequisite graph's faults (cycles, cost) are recomputed over the stored edges, which is
//! linear and allocation-light; flags whose fault changes are recompiled. A segment change
//! recompiles everything (segments are few and change rarely; every flag may use them).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::compile::{
    CompiledFlag, CompiledFlags, CompiledSegment, Diagnostic, SetCx, Severity, break_for_graph, compile_full,
    graph_faults,
};
use crate::model::{Flag, FlagSet, Segment};

/// One environment's flags, compiled and kept current by [`Incremental::upsert`] and
/// [`Incremental::remove`]. [`Incremental::compiled`] is a cheap, immutable copy to publish.
#[derive(Debug, Clone)]
pub struct Incremental {
    environment: String,
    set: FlagSet,
    flags: Vec<Arc<CompiledFlag>>,
    index: Arc<HashMap<Arc<str>, usize, foldhash::fast::RandomState>>,
    segments: Arc<[CompiledSegment]>,
    broken_segments: HashSet<usize>,
    /// The prerequisite graph's edges, by flag index.
    edges: Vec<Vec<usize>>,
    /// Which flags are broken by a fault of the graph.
    faulty: Vec<bool>,
    /// Flag key → the keys of the flags that name it as a prerequisite in this environment
    /// (whether or not it exists).
    dependents: HashMap<String, HashSet<String>>,
}

/// The prerequisites a flag names in `environment`.
fn prerequisite_keys<'a>(flag: &'a Flag, environment: &str) -> impl Iterator<Item = &'a str> {
    flag.environments.get(environment).into_iter().flat_map(|c| c.prerequisites.iter().map(|p| p.flag.as_str()))
}

impl Incremental {
    /// Compiles `set` in full for `environment`, with its diagnostics (as [`crate::compile()`]'s).
    pub fn new(set: FlagSet, environment: &str) -> (Self, Vec<Diagnostic>) {
        let full = compile_full(&set, environment, Severity::Warning);
        let mut dependents: HashMap<String, HashSet<String>> = HashMap::new();
        for (key, flag) in &set.flags {
            for p in prerequisite_keys(flag, environment) {
                dependents.entry(p.to_owned()).or_default().insert(key.clone());
            }
        }
        let this = Self {
            environment: environment.to_owned(),
            flags: full.compiled.flags.into_vec(),
            index: full.compiled.index,
            segments: full.compiled.segments,
            broken_segments: full.broken_segments,
            edges: full.edges,
            faulty: full.faulty,
            dependents,
            set,
        };
        (this, full.diags)
    }

    fn segment_index(&self) -> HashMap<&str, usize> {
        self.set.segments.keys().enumerate().map(|(i, k)| (k.as_str(), i)).collect()
    }

    fn cx<'a>(&'a self, segment_index: &'a HashMap<&'a str, usize>) -> SetCx<'a> {
        SetCx {
            set: &self.set,
            environment: &self.environment,
            segment_index,
            broken_segments: &self.broken_segments,
            key_severity: Severity::Warning,
        }
    }

    /// The flag set as it now stands.
    pub fn set(&self) -> &FlagSet {
        &self.set
    }

    /// The environment.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The compiled flags as they now stand: a copy that shares every flag with this state.
    pub fn compiled(&self) -> CompiledFlags {
        CompiledFlags {
            environment: self.environment.as_str().into(),
            index: self.index.clone(),
            flags: self.flags.clone().into_boxed_slice(),
            segments: self.segments.clone(),
        }
    }

    /// Adds or replaces the flag `key`: it and the flags naming it as a prerequisite are
    /// recompiled.
    pub fn upsert(&mut self, key: &str, flag: Flag) {
        let mut affected: HashSet<String> = self.dependents.get(key).cloned().unwrap_or_default();
        affected.insert(key.to_owned());
        if let Some(old) = self.set.flags.get(key) {
            let old: Vec<String> = prerequisite_keys(old, &self.environment).map(str::to_owned).collect();
            self.forget_dependent(key, &old);
        } else {
            // A new flag takes the next position, in the set and in the compiled form.
            self.flags.push(Arc::new(CompiledFlag { key: key.into(), variants: Box::default(), body: placeholder() }));
            self.edges.push(Vec::new());
            self.faulty.push(false);
            Arc::make_mut(&mut self.index).insert(key.into(), self.set.flags.len());
        }
        for p in prerequisite_keys(&flag, &self.environment) {
            self.dependents.entry(p.to_owned()).or_default().insert(key.to_owned());
        }
        self.set.flags.insert(key.to_owned(), flag);
        self.recompile(affected);
    }

    /// Removes the flag `key` (archived or deleted), if present: the flags naming it (and those
    /// naming the flag that takes its position) are recompiled.
    pub fn remove(&mut self, key: &str) {
        let Some((at, _, old)) = self.set.flags.swap_remove_full(key) else { return };
        let old: Vec<String> = prerequisite_keys(&old, &self.environment).map(str::to_owned).collect();
        self.forget_dependent(key, &old);
        let mut affected: HashSet<String> = self.dependents.get(key).cloned().unwrap_or_default();
        self.flags.swap_remove(at);
        self.edges.swap_remove(at);
        self.faulty.swap_remove(at);
        let index = Arc::make_mut(&mut self.index);
        index.remove(key);
        if let Some((moved, _)) = self.set.flags.get_index(at) {
            index.insert(moved.as_str().into(), at);
            affected.extend(self.dependents.get(moved).cloned().unwrap_or_default());
        }
        self.recompile(affected);
    }

    /// Replaces every segment: a full recompile.
    pub fn replace_segments(&mut self, segments: indexmap::IndexMap<String, Segment>) {
        let mut set = std::mem::take(&mut self.set);
        set.segments = segments;
        *self = Self::new(set, &self.environment).0;
    }

    fn forget_dependent(&mut self, key: &str, prerequisites: &[String]) {
        for p in prerequisites {
            if let Some(users) = self.dependents.get_mut(p) {
                users.remove(key);
                if users.is_empty() {
                    self.dependents.remove(p);
                }
            }
        }
    }

    /// Recompiles the flags `keys` (those present), then the graph's faults; flags whose fault
    /// appears, changes or goes are recompiled too.
    fn recompile(&mut self, keys: HashSet<String>) {
        let mut done = HashSet::new();
        let fresh: Vec<(usize, CompiledFlag, Vec<usize>)> = {
            let segment_index = self.segment_index();
            let cx = self.cx(&segment_index);
            keys.iter()
                .filter_map(|key| self.set.flags.get_full(key.as_str()))
                .map(|(i, k, flag)| {
                    let (compiled, edges, _) = cx.flag(k, flag);
                    (i, compiled, edges)
                })
                .collect()
        };
        for (i, compiled, edges) in fresh {
            self.flags[i] = Arc::new(compiled);
            self.edges[i] = edges;
            done.insert(i);
        }
        let faults = graph_faults(&self.edges);
        // A flag broken by the graph before and not recompiled above gets its own body back
        // before the fault (if any) is applied again.
        let restored: Vec<(usize, CompiledFlag)> = {
            let segment_index = self.segment_index();
            let cx = self.cx(&segment_index);
            faults
                .iter()
                .enumerate()
                .filter(|(i, fault)| (self.faulty[*i] || fault.is_some()) && !done.contains(i))
                .filter_map(|(i, _)| self.set.flags.get_index(i).map(|(k, flag)| (i, cx.flag(k, flag).0)))
                .collect()
        };
        for (i, compiled) in restored {
            self.flags[i] = Arc::new(compiled);
        }
        for (i, fault) in faults.into_iter().enumerate() {
            self.faulty[i] = fault.is_some();
            if let Some(message) = fault {
                break_for_graph(&mut self.flags[i], &self.set, i, &self.environment, message);
            }
        }
    }
}

/// The body of a flag's slot between its insertion and its compilation (never published).
fn placeholder() -> crate::compile::Body {
    crate::compile::Body::Broken { fallback: None, message: "not compiled yet".into() }
}
