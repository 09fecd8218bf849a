//! Goal: `docs/tutorial.md` quotes the example it walks through as it is, so the tutorial and
//! the tested code cannot drift apart (its runnable snippets are doctests of this crate).
//!
//! Method: every code block that follows a `<!-- from PATH -->` line must stand verbatim in
//! `PATH` (relative to the repository root); the tutorial must quote at least one block of
//! each file it names, and its doctests must not be marked `ignore`.

use std::path::Path;

/// `(line, path, block)` for every quoted block of `text`.
fn quotes(text: &str) -> Vec<(usize, String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(path) = lines[i]
            .strip_prefix("<!-- from ")
            .and_then(|r| r.strip_suffix(" -->"))
        {
            assert!(
                lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
                "line {}: a `from` line must be followed by a code block",
                i + 1
            );
            let start = i + 2;
            let end = (start..lines.len())
                .find(|&j| lines[j].starts_with("```"))
                .unwrap_or_else(|| panic!("line {start}: an unterminated code block"));
            out.push((start, path.to_string(), lines[start..end].join("\n")));
            i = end;
        }
        i += 1;
    }
    out
}

#[test]
fn the_tutorial_quotes_the_example_verbatim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docs/tutorial.md")).expect("docs/tutorial.md");
    let quoted = quotes(&text);
    assert!(quoted.len() >= 5, "only {} quoted blocks", quoted.len());
    let mut stale = Vec::new();
    for (line, path, block) in &quoted {
        let source = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("docs/tutorial.md:{line}: {path}: {e}"));
        if !source.contains(block.as_str()) {
            stale.push(format!("docs/tutorial.md:{line}: not in {path}:\n{block}"));
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n\n"));
    for file in ["engine/examples/kv.rs", "engine/tests/kv_example.rs"] {
        assert!(
            quoted.iter().any(|(_, p, _)| p == file),
            "{file} is never quoted"
        );
    }
    let doctests = text.matches("\n```rust\n").count();
    assert!(doctests >= 2, "{doctests} runnable snippets");
}

#[test]
fn a_changed_quote_is_found() {
    let text = "<!-- from x.rs -->\n```rust,ignore\nfn a() {}\n```\nprose\n";
    assert_eq!(
        quotes(text),
        vec![(2, "x.rs".to_string(), "fn a() {}".to_string())]
    );
}
