//! The module graph of `src/`: dependencies point one way. Each top-level module uses only
//! those before it in [`LAYERS`], and inside any folder the sibling modules form no cycle.
//! Read from the source text (`crate::…` and `super::…` paths outside comments and test
//! modules), so it needs no tool beyond the test itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, lowest first: each may use only the ones before it.
const LAYERS: &[&str] = &[
    "config", "observe", "domain", "source", "decode", "state", "events", "pipeline", "targets",
    "http", "cmd",
];

/// A module's path below the crate root, e.g. `["pipeline", "stream"]`.
type ModPath = Vec<String>;

#[test]
fn top_level_modules_depend_on_earlier_layers_only() {
    let graph = Graph::read();
    let mut wrong = BTreeSet::new();
    for (from, to, file) in graph.edges_at(&[]) {
        let (Some(a), Some(b)) = (layer(&from), layer(&to)) else {
            wrong.insert(format!("{file}: `{from}` or `{to}` is not in LAYERS"));
            continue;
        };
        if b >= a {
            wrong.insert(format!("{file}: `{from}` uses `{to}`, a later layer"));
        }
    }
    assert!(
        wrong.is_empty(),
        "layer order {LAYERS:?} broken:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
    let layers: BTreeSet<String> = graph
        .modules
        .iter()
        .filter_map(|m| m.first().cloned())
        .collect();
    let unknown: Vec<_> = layers.iter().filter(|m| layer(m).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "top-level modules missing from LAYERS: {unknown:?}"
    );
}

#[test]
fn sibling_modules_form_no_cycle() {
    let graph = Graph::read();
    let mut cycles = Vec::new();
    let folders: BTreeSet<ModPath> = graph
        .modules
        .iter()
        .flat_map(|m| (0..m.len()).map(|n| m[..n].to_vec()))
        .collect();
    for folder in &folders {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to, _) in graph.edges_at(folder) {
            edges.entry(from).or_default().insert(to);
        }
        if let Some(cycle) = find_cycle(&edges) {
            cycles.push(format!(
                "in `crate::{}`: {}",
                folder.join("::"),
                cycle.join(" → ")
            ));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    eprintln!(
        "{} modules in {} folders, no cycle",
        graph.modules.len(),
        folders.len()
    );
}

fn layer(name: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == name)
}

/// Every module of the crate and the modules each one's code names.
struct Graph {
    modules: BTreeSet<ModPath>,
    /// (user, used, file of the user) with both as full module paths.
    uses: Vec<(ModPath, ModPath, String)>,
}

impl Graph {
    fn read() -> Graph {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        collect(&root, &mut files);
        let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(&root, f)).collect();
        let mut uses = Vec::new();
        for file in &files {
            let this = module_of(&root, file);
            // lib.rs and main.rs only declare and wire; a `tests` module is test code.
            if this.is_empty() || this.last().is_some_and(|m| m == "tests") {
                continue;
            }
            let text = std::fs::read_to_string(file).expect("source file is readable");
            let shown = file
                .strip_prefix(&root)
                .unwrap_or(file)
                .display()
                .to_string();
            for path in referenced_paths(&code_only(&text), &this) {
                if let Some(used) = longest_module(&modules, &path) {
                    uses.push((this.clone(), used, shown.clone()));
                }
            }
        }
        Graph { modules, uses }
    }

    /// Edges between the direct children of `folder`: (child used from, child used, file).
    fn edges_at(&self, folder: &[String]) -> Vec<(String, String, String)> {
        let depth = folder.len();
        self.uses
            .iter()
            .filter(|(a, b, _)| {
                a.len() > depth && b.len() > depth && a.starts_with(folder) && b.starts_with(folder)
            })
            .filter(|(a, b, _)| a[depth] != b[depth])
            .map(|(a, b, f)| (a[depth].clone(), b[depth].clone(), f.clone()))
            .collect()
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/pipeline/stream.rs` → `[pipeline, stream]`; `src/pipeline/mod.rs` → `[pipeline]`.
fn module_of(root: &Path, file: &Path) -> ModPath {
    let relative = file.strip_prefix(root).expect("file under src/");
    let mut parts: ModPath = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The text without comments and without the `#[cfg(test)] mod tests` at the end of a file.
fn code_only(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    body.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Absolute module paths named in `code` (`crate::a::b::Item`, `super::x::Y`).
fn referenced_paths(code: &str, this: &[String]) -> Vec<ModPath> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let starts_word = at == 0
            || !(bytes[at - 1].is_ascii_alphanumeric()
                || bytes[at - 1] == b'_'
                || bytes[at - 1] == b':');
        let (base, skip) = if starts_word && rest.starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else if starts_word && rest.starts_with("super::") {
            // In `a/b.rs` (module a::b), `super` is `a`; in `a/mod.rs` (module a), it is the root.
            let parent = this[..this.len().saturating_sub(1)].to_vec();
            (parent, "super::".len())
        } else {
            at += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let (paths, used) = use_tree(&rest[skip..]);
        for path in paths {
            let mut full = base.clone();
            full.extend(path);
            out.push(full);
        }
        at += skip + used.max(1);
    }
    out
}

/// The paths of a use tree (`a::b`, `a::{b, c::{d, e}}`, `self`) at the start of `text`,
/// and how many bytes it took.
fn use_tree(text: &str) -> (Vec<ModPath>, usize) {
    let ident = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut prefix = ModPath::new();
    let mut at = 0;
    loop {
        let rest = &text[at..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut paths = Vec::new();
            let mut used = 1;
            let mut inner = inner;
            loop {
                let trimmed = inner.trim_start_matches([' ', '\n', ',']);
                used += inner.len() - trimmed.len();
                if let Some(after) = trimmed.strip_prefix('}') {
                    let _ = after;
                    used += 1;
                    break;
                }
                if trimmed.is_empty() {
                    break;
                }
                let (sub, n) = use_tree(trimmed);
                for p in sub {
                    let mut full = prefix.clone();
                    full.extend(p.into_iter().filter(|s| s != "self"));
                    paths.push(full);
                }
                used += n.max(1);
                inner = &trimmed[n.max(1)..];
            }
            return (paths, at + used);
        }
        let n = ident(rest);
        if n == 0 {
            return (vec![prefix], at);
        }
        prefix.push(rest[..n].to_owned());
        at += n;
        match text[at..].strip_prefix("::") {
            Some(_) => at += 2,
            None => return (vec![prefix], at),
        }
    }
}

/// The longest prefix of `path` that is a module of the crate.
fn longest_module(modules: &BTreeSet<ModPath>, path: &[String]) -> Option<ModPath> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// A cycle in `edges`, as the list of nodes around it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|start| visit(start, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_checker_sees_a_cycle_and_a_layer_break() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    let paths = referenced_paths(
        "use crate::pipeline::stream::run;\nuse super::job::Job;",
        &["pipeline".into(), "stuck".into()],
    );
    assert_eq!(
        paths,
        vec![
            vec!["pipeline".to_owned(), "stream".into(), "run".into()],
            vec!["pipeline".to_owned(), "job".into(), "Job".into()],
        ]
    );
    assert_eq!(
        use_tree("a::{b, c::{d, self}, e};").0,
        vec![
            vec!["a".to_owned(), "b".into()],
            vec!["a".to_owned(), "c".into(), "d".into()],
            vec!["a".to_owned(), "c".into()],
            vec!["a".to_owned(), "e".into()],
        ]
    );
    assert!(layer("config") < layer("cmd"));
}
