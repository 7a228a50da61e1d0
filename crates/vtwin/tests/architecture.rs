//! The module map holds: no import circle between engine modules, and no
//! wire layer (api, the CLI) reaches into a managed-object file.
//!
//! Read from the sources: every `crate::…`, `super::…` and `self::…` path
//! (and each item of a `use …::{a, b}` group) is resolved to the module it
//! names, modules are grouped as `engine::<m>`, `engine::mo::<m>` and
//! `api::<m>`, and the engine's groups are checked for strongly connected
//! components; then the modules inside each engine package (`tasks::record`,
//! `tasks::vcd`, …) the same way. The roots (`engine`, `engine::mo`, a
//! package's mod.rs) are facades every module below may use and are left
//! out.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut m: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if m.last().is_some_and(|l| l == "mod" || l == "lib" || l == "main") {
        m.pop();
    }
    m
}

/// The group a module belongs to, for the checks.
fn group(m: &[String]) -> String {
    match m {
        [a, b, c, ..] if a == "engine" && b == "mo" => format!("engine::mo::{c}"),
        [a, b, ..] if a == "engine" || a == "api" => format!("{a}::{b}"),
        _ => m.join("::"),
    }
}

/// The source without comments and unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

/// Every path the code names that starts at `crate`, `super` or `self`, as
/// its segments (a `{a, b::c}` group gives one path per item).
fn paths(code: &str) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_' || s[i - 1] == b':');
        let (w, end) = ident_at(s, i);
        if w.is_empty() {
            i += 1;
            continue;
        }
        if !boundary || !matches!(w.as_str(), "crate" | "super" | "self" | "vtwin") || !code[end..].starts_with("::") {
            i = end;
            continue;
        }
        let mut segs = vec![if w == "vtwin" { "crate".to_string() } else { w }];
        let mut j = end;
        while code[j..].starts_with("::") {
            j += 2;
            if s.get(j) == Some(&b'{') {
                // One level of group: the first segment of each item.
                let close = code[j..].find('}').map_or(s.len(), |k| j + k);
                for item in code[j + 1..close].split(',') {
                    let first = item.trim().split("::").next().unwrap_or("").trim();
                    if !first.is_empty() && first.chars().all(|c| c.is_alphanumeric() || c == '_') {
                        let mut p = segs.clone();
                        p.push(first.to_string());
                        out.push(p);
                    }
                }
                j = close;
                break;
            }
            let (seg, e) = ident_at(s, j);
            if seg.is_empty() {
                break;
            }
            segs.push(seg);
            j = e;
        }
        out.push(segs);
        i = j.max(end);
    }
    out
}

/// The module a path names, from module `me` (the longest prefix that is a module).
fn resolve(me: &[String], path: &[String], modules: &BTreeSet<Module>) -> Module {
    let mut cur: Module = vec![];
    let mut rest = path;
    if path[0] == "crate" {
        rest = &path[1..];
    } else {
        cur = me.to_vec();
        while let Some(first) = rest.first() {
            match first.as_str() {
                "super" => {
                    cur.pop();
                }
                "self" => {}
                _ => break,
            }
            rest = &rest[1..];
        }
    }
    for seg in rest {
        let mut next = cur.clone();
        next.push(seg.clone());
        if !modules.contains(&next) {
            break;
        }
        cur = next;
    }
    cur
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    edges_by(group)
}

/// The edges between modules grouped by `group`.
fn edges_by(group: fn(&[String]) -> String) -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&root, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&root, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let me = module_of(&root, f);
        let from = group(&me);
        for p in paths(&code(&std::fs::read_to_string(f).unwrap())) {
            let to = group(&resolve(&me, &p, &modules));
            if to != from {
                g.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    g
}

/// Strongly connected components of more than one group (Tarjan's).
fn circles(g: &BTreeMap<String, BTreeSet<String>>, keep: impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    struct St<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(st: &mut St<'a>, v: &'a str, keep: &dyn Fn(&str) -> bool) {
        let n = st.index.len();
        st.index.insert(v, n);
        st.low.insert(v, n);
        st.stack.push(v);
        st.on.insert(v);
        for w in st.g.get(v).into_iter().flatten().filter(|w| keep(w)) {
            let w = w.as_str();
            if !st.index.contains_key(w) {
                visit(st, w, keep);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if st.on.contains(w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut c = vec![];
            while let Some(w) = st.stack.pop() {
                st.on.remove(w);
                c.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                st.out.push(c);
            }
        }
    }
    let mut st =
        St { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], on: BTreeSet::new(), out: vec![] };
    for v in g.keys().filter(|v| keep(v)) {
        if !st.index.contains_key(v.as_str()) {
            visit(&mut st, v, &keep);
        }
    }
    st.out
}

fn engine_module(m: &str) -> bool {
    m.starts_with("engine::") && m != "engine::mo"
}

#[test]
fn no_import_circle_between_engine_modules() {
    let g = edges();
    // The scan sees the edges it must: a known use, one way.
    assert!(
        g["engine::mo::cns_volume_manager"].contains("engine::storage"),
        "{:?}",
        g["engine::mo::cns_volume_manager"]
    );
    assert!(g["engine::vcd"].contains("engine::tasks"), "{:?}", g["engine::vcd"]);
    let c = circles(&g, engine_module);
    assert!(c.is_empty(), "engine modules that import each other: {c:?}");
}

#[test]
fn no_import_circle_inside_an_engine_package() {
    // Module by module (tasks::record, tasks::vcd, …); a package's root
    // (`engine::tasks`, its mod.rs) is its facade, left out like the
    // engine's.
    let g = edges_by(|m| m.join("::"));
    assert!(g["engine::tasks::vcd"].contains("engine::tasks::record"), "{:?}", g["engine::tasks::vcd"]);
    let roots: BTreeSet<&String> = g.keys().filter(|k| g.keys().any(|o| o.starts_with(&format!("{k}::")))).collect();
    let c = circles(&g, |m| engine_module(m) && !roots.iter().any(|r| r.as_str() == m));
    assert!(c.is_empty(), "modules of an engine package that import each other: {c:?}");
}

#[test]
fn wire_layers_never_reach_into_managed_object_files() {
    let g = edges();
    assert!(g.keys().any(|k| k.starts_with("api::")), "{:?}", g.keys());
    for (from, to) in &g {
        if from.starts_with("api") || from.is_empty() || from == "main" {
            let mo: Vec<_> = to.iter().filter(|t| t.starts_with("engine::mo")).collect();
            assert!(mo.is_empty(), "{from} uses {mo:?}: wire layers call the engine's API");
        }
    }
}

#[test]
fn the_scan_finds_a_circle_when_there_is_one() {
    let mut g = BTreeMap::new();
    g.insert("engine::a".to_string(), BTreeSet::from(["engine::b".to_string()]));
    g.insert("engine::b".to_string(), BTreeSet::from(["engine::a".to_string(), "engine".to_string()]));
    g.insert("engine".to_string(), BTreeSet::from(["engine::a".to_string()]));
    assert_eq!(circles(&g, engine_module), vec![vec!["engine::a".to_string(), "engine::b".to_string()]]);
    let p = paths("use super::{tasks::vcd, Engine};\nlet x = crate::engine::mo::task::f();");
    assert!(p.contains(&vec!["super".into(), "tasks".into()]), "{p:?}");
    assert!(p.contains(&vec!["crate".into(), "engine".into(), "mo".into(), "task".into(), "f".into()]), "{p:?}");
}
