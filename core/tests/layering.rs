//! The engine's layers hold: each module imports only the modules below it (docs/architecture.md lists
//! them). Read from the source: every `crate::<module>` path outside a test module.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every top-level module, lowest layer first, and the modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    // The foundation: constants, errors, random numbers, instruction sets, aligned buffers, file writes.
    ("base", &[]),
    ("error", &[]),
    ("rng", &[]),
    ("simd", &[]),
    ("math", &["simd"]),
    ("aligned", &[]),
    ("fs", &["error"]),
    // The layers and the model; the optimiser; the worker team; data sets.
    ("nn", &["aligned", "base", "math", "rng", "simd"]),
    ("optim", &["simd"]),
    ("parallel", &[]),
    ("data", &["base", "error", "math", "rng", "simd"]),
    ("digit", &["base"]),
    // Checkpoints, training, inference, and what is built on them.
    ("checkpoint", &["base", "error", "fs", "nn"]),
    ("train", &["aligned", "base", "data", "error", "nn", "optim", "parallel", "rng", "simd"]),
    ("run", &["checkpoint", "data", "error", "fs", "train"]),
    ("spec", &["data", "digit", "error", "nn", "optim", "train"]),
    ("folder", &["base", "data", "digit", "error", "spec"]),
    ("infer", &["base", "checkpoint", "nn"]),
    ("quant", &["base", "checkpoint", "data", "error", "fs", "infer", "math", "nn", "rng", "simd", "train"]),
    ("summary", &["base", "nn"]),
    ("machine", &["simd"]),
    // The tests against PyTorch and finite differences, which reach every layer.
    ("tests", &["base", "checkpoint", "data", "error", "math", "nn", "optim", "rng", "run", "spec", "train"]),
];

/// The `.rs` files under `dir`.
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

/// `text` without its `#[cfg(test)] mod tests { ... }` blocks (braces matched; the sources put no unmatched
/// brace in a string or comment).
fn without_tests(text: &str) -> String {
    let mut code = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]\nmod tests {") {
        code.push_str(&rest[..at]);
        let block = &rest[at..];
        let mut depth = 0;
        let mut end = block.len();
        for (i, c) in block.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => {
                    end = i + 1;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        rest = &block[end..];
    }
    code.push_str(rest);
    code
}

/// The modules named as `crate::<module>` in `text`, outside its test modules.
fn imports(text: &str) -> BTreeSet<String> {
    let code = without_tests(text);
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        // `$crate::` in a macro is the crate itself; the path after it is checked like any other.
        if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            found.insert(name);
        }
    }
    found
}

#[test]
fn each_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut unlisted = BTreeSet::new();
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
        for used in imports(&text) {
            if used != module && !allowed.contains(&used.as_str()) {
                violations.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(unlisted.is_empty(), "modules missing from the layer table: {unlisted:?}");
    assert!(violations.is_empty(), "imports across the layers:\n{}", violations.join("\n"));
}

#[test]
fn the_check_sees_an_import_across_the_layers() {
    // The scanner itself: a forbidden path is found, one in a test module is not.
    let text =
        "use crate::nn::model::Head;\n#[cfg(test)]\nmod tests { fn f() { crate::run::g(); } }\nuse crate::optim;";
    assert_eq!(imports(text), BTreeSet::from(["nn".to_string(), "optim".to_string()]));
}
