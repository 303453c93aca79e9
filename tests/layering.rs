//! The application's layers hold, as the engine's do (`core/tests/layering.rs`): each module of `src/` uses only
//! the modules of the layers below it, read from the source (every `crate::<module>` path, and in the command
//! line, every `lenet5::<module>` path, outside test modules). From the bottom:
//!
//! 1. `error` (the application's errors around the engine's), `lock` (a run directory held by one process),
//!    `text` (names from files made safe for a terminal);
//! 2. `preprocess` (pictures as the network's input), `download` (a known data set fetched and verified),
//!    `interop` (PyTorch's files read safely, ONNX written);
//! 3. `folder` (image folders), `source` (where a run's data come from);
//! 4. `training` (a run as every front end starts it, from its specification), `deploy` (int8 networks, the C
//!    export, and float or int8 weights ready to run);
//! 5. `viz` (pictures), `web` (the training page's files), `serve` (the pages and the JSON API);
//! 6. `cli` and `main`: the command line, over all of them.
//!
//! The engine (`lenet5-core`) is below them all, and never uses the application (it cannot: it is a crate of
//! its own).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("text", &[]),
    ("lock", &["error"]),
    ("preprocess", &["error"]),
    ("download", &["error"]),
    ("interop", &["error"]),
    ("folder", &["error", "preprocess"]),
    ("source", &["download", "error", "folder", "preprocess"]),
    ("training", &["error", "interop", "lock", "source"]),
    ("deploy", &["error", "interop", "source"]),
    ("viz", &["error"]),
    ("web", &["error"]),
    ("serve", &["deploy", "error", "preprocess", "text", "web"]),
    (
        "cli",
        &[
            "cli",
            "deploy",
            "download",
            "error",
            "folder",
            "interop",
            "lock",
            "preprocess",
            "serve",
            "source",
            "text",
            "training",
            "viz",
            "web",
        ],
    ),
    ("main", &["cli"]),
];

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `text` up to its first test module: the application's sources keep their tests at the end.
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

/// The modules named as `prefix<module>` in `text`, outside its test modules.
fn imports(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
    let code = without_tests(text);
    let mut found = BTreeSet::new();
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            // `lenet5_core::` is the engine, not `lenet5::`.
            if code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn each_module_of_the_application_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (mut violations, mut unlisted) = (Vec::new(), BTreeSet::new());
    for file in sources(&src) {
        let rel = file.strip_prefix(&src).unwrap();
        let module = rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == module) else {
            unlisted.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for used in imports(&text, &["crate::", "lenet5::"]) {
            if used != module && !allowed.contains(&used.as_str()) {
                violations.push(format!("{} uses {used}", rel.display()));
            }
        }
    }
    assert!(unlisted.is_empty(), "modules missing from the layer table: {unlisted:?}");
    assert!(violations.is_empty(), "imports across the layers:\n{}", violations.join("\n"));
}

#[test]
fn the_check_sees_an_import_across_the_layers() {
    let text = "use crate::error::Error;\nuse lenet5_core::spec::RunSpec;\nfn f() { lenet5::serve::x(); }\n\
                #[cfg(test)]\nmod tests { use crate::cli; }";
    assert_eq!(imports(text, &["crate::", "lenet5::"]), BTreeSet::from(["error".into(), "serve".into()]));
}
