//! The library's layers point down only: a module may name (`crate::…`) only modules on lower
//! floors. The floors are ARCHITECTURE.md's table; this test reads the sources and fails on an
//! import that runs up or sideways, so the layering cannot erode unnoticed. Doc comments and
//! test files are not imports and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom up; ARCHITECTURE.md explains each floor.
const FLOORS: &[&[&str]] = &[
    &["lifecycle", "version", "backoff", "trust"],
    &["config"],
    &["staging"],
    &["error"],
    &["api", "probe", "guest"],
    &["process"],
    &["host"],
    &["network", "snapshot"],
    &["executor"],
    &["vm"],
    &["images", "pool"],
    &["options"],
    &["smartvm"],
    &["agent"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// The names lib.rs re-exports at the crate root (`crate::SmartVm`), with their modules.
fn root_names() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut names = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.trim().strip_prefix("pub use crate::")) {
        let (module, rest) = line.split_once("::").unwrap();
        let list = rest.trim_end_matches(';').trim_start_matches('{').trim_end_matches('}');
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            names.insert(name.to_string(), module.to_string());
        }
    }
    names
}

/// Every `.rs` file of `module` (a file or a folder), test files left out.
fn files_of(module: &str) -> Vec<PathBuf> {
    let dir = src().join(module);
    let file = src().join(format!("{module}.rs"));
    if !dir.is_dir() {
        return vec![file];
    }
    // `module.rs` with its submodules in `module/`, or `module/mod.rs`.
    let mut out: Vec<PathBuf> = file.exists().then_some(file).into_iter().collect();
    let mut todo = vec![dir];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "tests.rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The modules a line of code names through `crate::`.
fn named_modules(line: &str, roots: &BTreeMap<String, String>) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        let names: Vec<String> = match rest.strip_prefix('{') {
            Some(group) => group.split('}').next().unwrap_or("").split(',').map(|n| ident(n.trim())).collect(),
            None => vec![ident(rest)],
        };
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                out.push(name);
            } else if let Some(module) = roots.get(&name) {
                out.push(module.clone());
            }
        }
    }
    out
}

#[test]
fn every_import_points_down() {
    let roots = root_names();
    let mut violations = BTreeSet::new();
    for (floor, modules) in FLOORS.iter().enumerate() {
        for module in *modules {
            for file in files_of(module) {
                let text = std::fs::read_to_string(&file).unwrap();
                let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
                for target in code.flat_map(|l| named_modules(l, &roots)) {
                    if target == *module {
                        continue;
                    }
                    let why = match floor_of(&target) {
                        Some(f) if f < floor => continue,
                        Some(f) => format!("floor {floor} -> {f}"),
                        None => "not on any floor".to_string(),
                    };
                    violations.insert(format!("{} -> {target} ({why})", file.display()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that do not point down:\n{}",
        violations.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn every_module_is_on_a_floor() {
    let mut modules: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().trim_end_matches(".rs").to_string())
        .filter(|m| m != "lib")
        .collect();
    modules.sort();
    let unplaced: Vec<_> = modules.iter().filter(|m| floor_of(m).is_none()).collect();
    assert!(unplaced.is_empty(), "modules on no floor (add them to FLOORS and ARCHITECTURE.md): {unplaced:?}");
}

#[test]
fn the_checker_sees_grouped_and_root_imports() {
    let roots = root_names();
    assert_eq!(roots.get("SmartVm").map(String::as_str), Some("smartvm"));
    let seen = named_modules("use crate::{SmartVmError, MicroVm}; let x = crate::vm::steps::Step::Spawn;", &roots);
    assert_eq!(seen, ["error", "vm", "vm"]);
}
