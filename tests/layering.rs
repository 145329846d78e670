//! The crate's layers import downward only: contract → codec → storage → analytics →
//! pipeline → facade (`lib.rs`), with the network adapters (`serve`, `relay`) above the
//! facade, importing only what it re-exports. Every `crate::` path in `src/` is checked,
//! including the grouped form `use crate::{a::b, c}`. A path through the facade
//! (`crate::Stats`) from inside a layer counts as an import of the top layer: layers
//! name the module they depend on.

use std::fmt;
use std::path::{Path, PathBuf};

/// The layers, lowest first; a module may import its own layer and those before it.
const LAYERS: &[&str] = &["contract", "codec", "storage", "analytics", "pipeline"];
/// Top-level files of the facade: they may import every layer.
const FACADE_FILES: &[&str] = &["lib.rs", "fuzzing.rs"];
/// Adapters over the public API: they may import only the facade's re-exports.
const ADAPTERS: &[&str] = &["serve", "relay"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Layer(usize),
    Facade,
    Adapter,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Layer(i) => f.write_str(LAYERS[*i]),
            Level::Facade => f.write_str("the facade (lib.rs re-exports)"),
            Level::Adapter => f.write_str("an adapter"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    path: String,
    from: Level,
    to: Level,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `crate::{}` — {} may not import {}",
            self.file, self.line, self.path, self.from, self.to
        )
    }
}

/// The level of a file from its path relative to `src/`, or `None` when it belongs to
/// no known layer (a new top-level module must be given one).
fn level_of_file(relative: &Path) -> Option<Level> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    if FACADE_FILES.contains(&first) {
        return Some(Level::Facade);
    }
    let module = first.strip_suffix(".rs").unwrap_or(first);
    if let Some(i) = LAYERS.iter().position(|l| *l == module) {
        return Some(Level::Layer(i));
    }
    ADAPTERS.contains(&module).then_some(Level::Adapter)
}

/// The level a `crate::` path's first segment names.
fn level_of_target(segment: &str) -> Level {
    match LAYERS.iter().position(|l| *l == segment) {
        Some(i) => Level::Layer(i),
        None if ADAPTERS.contains(&segment) => Level::Adapter,
        None => Level::Facade,
    }
}

/// Whether a module at `from` may import `to`.
fn allowed(from: Level, to: Level) -> bool {
    match (from, to) {
        (Level::Layer(a), Level::Layer(b)) => b <= a,
        (Level::Layer(_), _) => false,
        (Level::Facade, _) => true,
        (Level::Adapter, Level::Facade) => true,
        (Level::Adapter, _) => false,
    }
}

/// Source text without `//` comments (doc links may name any path) and string literals.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first segments of the paths in a `{...}` group starting at `text` (just after the
/// `{`), at the group's top level only.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expect_head = true;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_head = true,
            c if expect_head && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                heads.push(ident_at(rest).to_string());
                expect_head = false;
            }
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    heads
}

/// Every `crate::` import in `source` that the layering forbids for a file at `relative`
/// (a path relative to `src/`).
fn violations(relative: &Path, source: &str) -> Vec<Violation> {
    let Some(from) = level_of_file(relative) else {
        return vec![Violation {
            file: relative.display().to_string(),
            line: 0,
            path: String::new(),
            from: Level::Facade,
            to: Level::Facade,
        }];
    };
    // Join the lines so that a grouped `use` spanning several lines is read whole,
    // remembering where each line starts.
    let mut code = String::new();
    let mut starts = Vec::new();
    for line in source.lines() {
        starts.push(code.len());
        code.push_str(&code_of(line));
        code.push('\n');
    }
    let line_of = |offset: usize| starts.partition_point(|&s| s <= offset);
    let mut found = Vec::new();
    for (offset, _) in code.match_indices("crate::") {
        let before = code[..offset].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `arbiter_crate::`, `$crate::` and the like
        }
        let after = &code[offset + "crate::".len()..];
        let heads = match after.strip_prefix('{') {
            Some(group) => group_heads(group),
            None => vec![ident_at(after).to_string()],
        };
        for head in heads.into_iter().filter(|h| !h.is_empty()) {
            let to = level_of_target(&head);
            if !allowed(from, to) {
                found.push(Violation {
                    file: relative.display().to_string(),
                    line: line_of(offset),
                    path: head,
                    from,
                    to,
                });
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn smoke_the_crate_imports_downward_only() -> Result<(), Box<dyn std::error::Error>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    let mut all = Vec::new();
    let mut checked = 0;
    for path in &files {
        let relative = path.strip_prefix(&src)?;
        if relative.starts_with("bin") {
            continue; // the CLI is a separate crate: it can only use the public API
        }
        checked += 1;
        all.extend(violations(relative, &std::fs::read_to_string(path)?));
    }
    assert!(
        checked > 30,
        "only {checked} files found under {}",
        src.display()
    );
    let report: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "upward imports:\n{}", report.join("\n"));
    Ok(())
}

#[test]
fn every_layer_exists_and_lib_declares_it() -> Result<(), Box<dyn std::error::Error>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs"))?;
    for layer in LAYERS {
        assert!(
            src.join(layer).join("mod.rs").is_file(),
            "src/{layer}/mod.rs is missing"
        );
        assert!(
            lib.contains(&format!("\nmod {layer};")),
            "lib.rs does not declare `mod {layer};`"
        );
    }
    Ok(())
}

#[test]
fn an_upward_import_is_caught() {
    let store = Path::new("storage/store.rs");
    let found = violations(store, "use crate::pipeline::collector::Collector;\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "pipeline");
    assert_eq!(
        (found[0].from, found[0].to),
        (Level::Layer(2), Level::Layer(4))
    );
    assert_eq!(found[0].line, 1);
}

#[test]
fn a_grouped_import_over_several_lines_is_read_whole() {
    let source = "use std::fmt;\nuse crate::{\n    contract::event::Event,\n    analytics::Aggregator, Stats,\n};\n";
    let found = violations(Path::new("codec/encode.rs"), source);
    let paths: Vec<_> = found.iter().map(|v| (v.path.as_str(), v.line)).collect();
    assert_eq!(paths, [("analytics", 2), ("Stats", 2)]);
}

#[test]
fn downward_and_same_layer_imports_pass() {
    let source = "use crate::contract::event::Event;\nuse crate::codec::encode::encode_record;\nuse crate::storage::store::Store;\nfn f() { crate::storage::log::dir::key(); }\n";
    assert_eq!(violations(Path::new("storage/log/mod.rs"), source), []);
}

#[test]
fn a_path_through_the_facade_counts_as_upward() {
    let found = violations(
        Path::new("contract/config.rs"),
        "let x = crate::MacKey::from_bytes(b);\n",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].to, Level::Facade);
}

#[test]
fn comments_and_strings_are_not_imports() {
    let source = "/// See [`Collector`](crate::Collector).\nlet s = \"crate::pipeline\"; // crate::pipeline\n";
    assert_eq!(violations(Path::new("contract/clock.rs"), source), []);
}

#[test]
fn adapters_use_only_the_public_api() {
    let ok = violations(
        Path::new("serve/mod.rs"),
        "use crate::{Collector, Stats};\n",
    );
    assert_eq!(ok, []);
    let found = violations(Path::new("relay/mod.rs"), "use crate::storage::log::dir;\n");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].from, found[0].to),
        (Level::Adapter, Level::Layer(2))
    );
}

#[test]
fn a_module_outside_every_layer_is_refused() {
    let found = violations(Path::new("misc.rs"), "");
    assert_eq!(found.len(), 1);
}
