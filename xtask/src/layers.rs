//! `cargo xtask layers`: netpath's import graph, checked against its layers.
//!
//! Every `crate::…` and `super::…` path in `netpath/src` (in `use` items and inline) is an
//! arrow from its file to the file of the module it names. Arrows must point down the layers
//! (frontend → view → core → state | kernel → types → error, fault), state and kernel never
//! point at each other, frontends reach only the core's API (never the store, netlink or the
//! datapath), and no chain of arrows between files comes back to where it started.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::sh::workspace_root;

/// A file's module path, `["core", "network"]` for `core/network.rs` or `core/network/mod.rs`.
type Module = Vec<String>;

/// The layer of a top-level module: a higher rank may point at a lower one.
fn rank(top: &str) -> Option<u8> {
    Some(match top {
        "lib" | "main" => 6,
        "frontend" => 5,
        "view" => 4,
        "core" => 3,
        "state" | "kernel" => 2,
        "types" => 1,
        "error" | "fault" => 0,
        _ => return None,
    })
}

/// What a frontend may name: the core's API and what every layer speaks in, nothing beneath.
const FRONTEND_REACHES: [&str; 6] = ["frontend", "view", "core", "types", "error", "fault"];

pub fn run() -> Result<()> {
    let src = workspace_root().join("netpath/src");
    let graph = graph(&src)?;
    let problems = check(&graph);
    let arrows: usize = graph.values().map(BTreeSet::len).sum();
    if problems.is_empty() {
        println!(
            "{} files, {arrows} arrows, the longest chain {} files: every arrow points down and no cycle",
            graph.len(),
            longest_chain(&graph)
        );
        return Ok(());
    }
    for p in &problems {
        eprintln!("{p}");
    }
    bail!("{} layering problem(s) in {}", problems.len(), src.display())
}

/// File → the files it names.
fn graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let files = rust_files(src)?;
    // The crate root (`lib.rs`, module `[]`) only declares the layers: `crate::Error` names
    // `error.rs` through its re-export, so the root is no target.
    let modules: BTreeMap<Module, String> = files.iter().map(|f| (module_of(src, f), display(src, f))).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let me = module_of(src, file);
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let mut targets = BTreeSet::new();
        let text = strip_comments(&text);
        let children = child_modules(&text);
        for path in paths(&text, &children) {
            let full = absolute(&me, &path);
            if let Some(target) = longest_module(&modules, &full).filter(|t| !t.is_empty() && **t != me) {
                targets.insert(modules[target].clone());
            }
        }
        graph.insert(display(src, file), targets);
    }
    Ok(graph)
}

fn check(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (from, targets) in graph {
        for to in targets {
            if let Some(why) = wrong_arrow(from, to) {
                problems.push(format!("{from} → {to}: {why}"));
            }
        }
    }
    problems.extend(cycles(graph).into_iter().map(|c| format!("cycle: {}", c.join(" → "))));
    problems
}

fn top(file: &str) -> &str {
    file.split(['/', '.']).next().unwrap_or(file)
}

fn wrong_arrow(from: &str, to: &str) -> Option<String> {
    let (a, b) = (top(from), top(to));
    let (Some(ra), Some(rb)) = (rank(a), rank(b)) else {
        return Some(format!("'{a}' or '{b}' is not a known layer"));
    };
    if a == b {
        return None;
    }
    if ra <= rb {
        return Some(format!("{a} may not use {b} (same or higher layer)"));
    }
    if a == "frontend" && !FRONTEND_REACHES.contains(&b) {
        return Some(format!("a frontend reaches {b}; go through the core's API"));
    }
    None
}

/// Every strongly connected set of two or more files (Tarjan), as a path through it.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut members = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    members.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if members.len() > 1 {
                    members.reverse();
                    self.found.push(members);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// How many files the longest chain of arrows passes through (the graph has no cycle).
fn longest_chain(graph: &BTreeMap<String, BTreeSet<String>>) -> usize {
    fn depth<'g>(
        v: &'g str,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        memo: &mut BTreeMap<&'g str, usize>,
    ) -> usize {
        if let Some(d) = memo.get(v) {
            return *d;
        }
        let d = 1 + graph.get(v).into_iter().flatten().map(|w| depth(w, graph, memo)).max().unwrap_or(0);
        memo.insert(v, d);
        d
    }
    let mut memo = BTreeMap::new();
    graph.keys().map(|v| depth(v, graph, &mut memo)).max().unwrap_or(0)
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn display(src: &Path, file: &Path) -> String {
    file.strip_prefix(src).unwrap_or(file).display().to_string()
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// A path as written (`crate::a::b`, `super::c`) made absolute from the file's module.
fn absolute(me: &Module, path: &[String]) -> Module {
    match path.first().map(String::as_str) {
        Some("crate") => path[1..].to_vec(),
        Some("self") => me.iter().chain(&path[1..]).cloned().collect(),
        Some("super") => {
            // `super` in `a/b.rs` and in `a/b/mod.rs` (both module `a::b`) is `a`.
            let mut base = me.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            base
        }
        _ => path.to_vec(),
    }
}

fn longest_module<'m>(modules: &'m BTreeMap<Module, String>, path: &[String]) -> Option<&'m Module> {
    (1..=path.len()).rev().find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
}

/// The code the crate is built from: comments dropped, and the `#[cfg(test)]` module at the
/// end of a file left out (its `super` is the file itself, and tests are not the crate's arrows).
fn strip_comments(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The modules a file declares (`mod x;`), whose names start relative paths.
fn child_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches("pub ").strip_prefix("mod "))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(|name| name.trim().to_string())
        .collect()
}

/// Every `crate::`/`super::` path, and `use` paths into the file's own child modules (as
/// `self::…`): `use` trees expanded, inline paths as written.
fn paths(text: &str, children: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("use ") {
        let after = &rest[at + 4..];
        let boundary = at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        match after.find(';') {
            Some(end) if boundary && (after.starts_with("crate::") || after.starts_with("super::")) => {
                expand(&[], after[..end].trim(), &mut found);
                rest = &after[end..];
            }
            Some(end) if boundary && children.iter().any(|c| after.starts_with(&format!("{c}::"))) => {
                expand(&["self".to_string()], after[..end].trim(), &mut found);
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    found.extend(inline_paths(text));
    found
}

/// Expands a use tree (`a::{b, c::{d, self}}`) into its paths.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    for item in split_top(tree) {
        let item = item.split(" as ").next().unwrap_or(item).trim();
        if let Some(open) = item.find('{') {
            let head: Vec<String> =
                item[..open].trim_end_matches("::").split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            let inner = item[open + 1..].trim_end().trim_end_matches('}');
            let full: Vec<String> = prefix.iter().cloned().chain(head).collect();
            expand(&full, inner, out);
        } else {
            let mut path: Vec<String> = prefix.to_vec();
            path.extend(item.split("::").filter(|s| *s != "self" && *s != "*").map(String::from));
            out.push(path);
        }
    }
}

fn split_top(tree: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0, 0, Vec::new());
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(tree[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(tree[start..].trim());
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

fn inline_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            if text[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = text[start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(text.len(), |e| start + e);
            // `super::{a::X, b::Y}` is a use tree, read whole by `paths`: its head alone names
            // no item, and would point at the parent module.
            if text[end..].starts_with('{') {
                continue;
            }
            out.push(text[start..end].trim_end_matches(':').split("::").map(String::from).collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_of(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    #[test]
    fn use_trees_and_inline_paths_are_read() {
        let text = "use crate::{core::{Controller, request::{self, Spec}}, error::Result};\nfn f() { crate::kernel::link::x(); super::y::z(); }";
        let got = paths(text, &[]);
        let want = |p: &str| got.contains(&p.split("::").map(String::from).collect());
        assert!(want("crate::core::Controller") && want("crate::core::request::Spec") && want("crate::core::request"));
        assert!(want("crate::error::Result") && want("crate::kernel::link::x") && want("super::y::z"), "{got:?}");
        let tree = paths("use super::{\n    env::{Attachment, endpoint_id},\n    reply::CniError,\n};", &[]);
        let tree: Vec<String> = tree.iter().map(|p| p.join("::")).collect();
        assert_eq!(tree, ["super::env::Attachment", "super::env::endpoint_id", "super::reply::CniError"]);
    }

    #[test]
    fn upward_sideways_and_frontend_arrows_are_refused() {
        assert!(wrong_arrow("core/network.rs", "frontend/cli/mod.rs").is_some());
        assert!(wrong_arrow("state/store/mod.rs", "kernel/netns.rs").is_some());
        assert!(wrong_arrow("frontend/cli/mod.rs", "state/store/mod.rs").is_some());
        assert!(wrong_arrow("frontend/cli/mod.rs", "core/request.rs").is_none());
        assert!(wrong_arrow("core/gc.rs", "kernel/link/mod.rs").is_none());
    }

    #[test]
    fn cycles_are_found_and_trees_are_not() {
        let tree = graph_of(&[("a.rs", "b.rs"), ("b.rs", "c.rs"), ("a.rs", "c.rs")]);
        assert!(cycles(&tree).is_empty());
        assert_eq!(longest_chain(&tree), 3);
        let looped = graph_of(&[("a.rs", "b.rs"), ("b.rs", "c.rs"), ("c.rs", "a.rs")]);
        assert_eq!(cycles(&looped), vec![vec!["a.rs".to_string(), "b.rs".into(), "c.rs".into()]]);
    }

    /// The real tree: this is what `cargo xtask test` holds the crate to.
    #[test]
    fn netpath_keeps_its_layers() {
        let graph = graph(&workspace_root().join("netpath/src")).unwrap();
        assert!(graph.len() > 30, "read only {} files", graph.len());
        let problems = check(&graph);
        assert!(problems.is_empty(), "layering problems:\n{}", problems.join("\n"));
    }
}
