//! The engine's public surface changes only on purpose: every public item (`pub` at the top level of a public
//! module, and every `pub use`), read from the source, is compared with `tests/public_api.txt`. A change to the
//! surface is then a deliberate diff of that file: `LENET5_BLESS=1 cargo test -p lenet5-core --test public_api`
//! writes it anew. Everything else is `pub(crate)`; the surface stays at most 80 items.

use std::path::{Path, PathBuf};

const SNAPSHOT: &str = "tests/public_api.txt";
const MAX_ITEMS: usize = 80;

/// The file of module `name` declared in `dir` (`dir/name.rs` or `dir/name/mod.rs`).
fn module_file(dir: &Path, name: &str) -> PathBuf {
    let flat = dir.join(format!("{name}.rs"));
    if flat.is_file() { flat } else { dir.join(name).join("mod.rs") }
}

/// `text` before its first test module: the sources keep their tests at the end.
fn code(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests {").next().unwrap_or(text)
}

/// The public items of the module at `path` (named `module`), and of its public submodules, as
/// `module kind name` lines.
fn items(module: &str, path: &Path, out: &mut Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let dir = if path.ends_with("mod.rs") || path.ends_with("lib.rs") {
        path.parent().unwrap().to_path_buf()
    } else {
        path.with_extension("")
    };
    let mut lines = code(&text).lines().peekable();
    let mut test_only = false;
    while let Some(line) = lines.next() {
        if line.starts_with("#[cfg(test)]") {
            test_only = true;
            continue;
        }
        let skip = std::mem::take(&mut test_only);
        let Some(rest) = line.strip_prefix("pub ") else { continue };
        if skip {
            continue;
        }
        let mut words = rest.split(|c: char| c.is_whitespace() || c == '(' || c == '<' || c == ':' || c == ';');
        let kind = match words.next().unwrap_or_default() {
            "const" if rest.starts_with("const fn") => "fn",
            "unsafe" | "extern" => "fn",
            k => k,
        };
        if kind == "use" {
            // A re-export names its items once, however its braces are laid out.
            let mut statement = rest.to_string();
            while !statement.contains(';') {
                statement.push_str(lines.next().unwrap_or(";"));
            }
            out.push(format!("{module} {}", statement.split_whitespace().collect::<Vec<_>>().join(" ")));
            continue;
        }
        let name =
            rest.split_whitespace().find(|w| !["const", "fn", "unsafe", "extern", "\"C\""].contains(w) && *w != kind);
        let name = name.unwrap_or_default().split(['(', '<', ':', ';', '{', '=']).next().unwrap_or_default();
        if kind == "mod" {
            items(&format!("{module}::{name}"), &module_file(&dir, name), out);
        } else {
            out.push(format!("{module} {kind} {name}"));
        }
    }
}

fn surface() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    items("lenet5_core", &root.join("src/lib.rs"), &mut out);
    out
}

#[test]
fn the_public_api_is_the_snapshot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let now = surface().join("\n") + "\n";
    if std::env::var_os("LENET5_BLESS").is_some() {
        std::fs::write(root.join(SNAPSHOT), &now).unwrap();
    }
    let recorded = std::fs::read_to_string(root.join(SNAPSHOT)).unwrap_or_default();
    let (was, is): (Vec<&str>, Vec<&str>) = (recorded.lines().collect(), now.lines().collect());
    let gone: Vec<&&str> = was.iter().filter(|l| !is.contains(l)).collect();
    let new: Vec<&&str> = is.iter().filter(|l| !was.contains(l)).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "the public API changed; if on purpose, run LENET5_BLESS=1 cargo test -p lenet5-core --test public_api\n\
         removed: {gone:#?}\nadded: {new:#?}"
    );
}

#[test]
fn the_public_api_stays_small() {
    // Items as rustdoc lists them: each re-exported name once, wherever it is defined.
    let mut names: Vec<String> = Vec::new();
    for line in surface() {
        let mut parts = line.splitn(3, ' ');
        let (_, kind, rest) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if kind == "mod" {
            continue;
        }
        if kind == "use" {
            let inner = rest.trim_end_matches(';').trim_start_matches("use ");
            let list = match inner.split_once('{') {
                Some((_, list)) => list.trim_end_matches('}').to_string(),
                None => inner.rsplit("::").next().unwrap().to_string(),
            };
            names.extend(list.split(',').map(|n| n.split(" as ").last().unwrap().trim().to_string()));
        } else {
            names.push(rest.to_string());
        }
    }
    names.retain(|n| !n.is_empty());
    names.sort();
    names.dedup();
    assert!(names.len() <= MAX_ITEMS, "{} public items, more than {MAX_ITEMS}: {names:?}", names.len());
    assert!(names.len() > 40, "the scanner found only {} items: {names:?}", names.len());
    println!("{} public items", names.len());
}
