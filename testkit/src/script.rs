//! Data-driven tests in the style of etcd-raft's interaction tests: a `testdata/*.txt` script
//! is a list of cases, each a command line (and more input lines, if it has any), a `----`
//! line, and the expected output, ending at a blank line; `#` lines are comments. The test
//! runs every case through its interpreter in order and compares the output. With
//! `CHORUS_REWRITE=1` it writes the actual output into the file instead (review the diff).
//!
//! ```text
//! # a comment
//! push log=0 batch=a:0
//! poll
//! ----
//! a from L0 #0
//! ```

use std::path::{Path, PathBuf};

/// One case: its input lines (the first is the command) and its expected output.
#[derive(Debug, Clone)]
pub struct Case {
    /// The comment lines just before it (kept when the file is rewritten).
    pub comments: Vec<String>,
    /// Where the case starts in its file (1-based), for messages.
    pub line: usize,
    pub input: Vec<String>,
    pub expected: String,
}

impl Case {
    /// The command words of the first input line.
    pub fn words(&self) -> Vec<&str> {
        self.input
            .first()
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default()
    }

    /// `key=value` arguments of the first input line.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.input.first()?.split_whitespace().find_map(|w| {
            let (k, v) = w.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

/// Parses a script. Panics with the line number on a case without `----`.
pub fn parse(text: &str) -> (Vec<String>, Vec<Case>) {
    let mut cases = Vec::new();
    let mut preamble = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut comments = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.trim().is_empty() {
            // A blank line ends a comment block: the block belongs to the file, or stands
            // alone before the next case.
            if cases.is_empty() && !comments.is_empty() {
                preamble.append(&mut comments);
                preamble.push(String::new());
            }
            i += 1;
            continue;
        }
        if l.starts_with('#') {
            comments.push(l.to_string());
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut input = Vec::new();
        while i < lines.len() && lines[i] != "----" {
            input.push(lines[i].to_string());
            i += 1;
        }
        assert!(i < lines.len(), "line {start}: a case without ----");
        i += 1;
        let mut out = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            out.push(lines[i]);
            i += 1;
        }
        cases.push(Case {
            comments: std::mem::take(&mut comments),
            line: start,
            input,
            expected: out.join("\n"),
        });
    }
    (preamble, cases)
}

/// The `*.txt` scripts in `dir`, sorted by name. Panics if there are none (a test over no
/// script would pass vacuously).
pub fn script_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no *.txt scripts", dir.display());
    files
}

/// Runs every case of the script at `path` through `run` (which keeps whatever state the
/// script builds up) and compares outputs; with `CHORUS_REWRITE=1`, rewrites the file with
/// the outputs instead. Panics with every mismatch.
pub fn run_file(path: &Path, mut run: impl FnMut(&Case) -> String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (preamble, cases) = parse(&text);
    let rewrite = std::env::var("CHORUS_REWRITE").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut rewritten = preamble.join("\n");
    if !rewritten.is_empty() {
        rewritten.push('\n');
    }
    for case in &cases {
        let got = run(case).trim_end().to_string();
        if got != case.expected {
            failures.push(format!(
                "{}:{}: {}\n--- expected\n{}\n--- got\n{}",
                path.display(),
                case.line,
                case.input.join(" / "),
                case.expected,
                got
            ));
        }
        for c in &case.comments {
            rewritten.push_str(c);
            rewritten.push('\n');
        }
        rewritten.push_str(&case.input.join("\n"));
        rewritten.push_str("\n----\n");
        if !got.is_empty() {
            rewritten.push_str(&got);
            rewritten.push('\n');
        }
        rewritten.push('\n');
    }
    if rewrite {
        std::fs::write(path, rewritten.trim_end().to_string() + "\n")
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ (CHORUS_REWRITE=1 rewrites the expected output):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_split_at_dashes_and_blank_lines() {
        let (pre, cases) =
            parse("# intro\n\ncmd a=1 b\nmore\n----\nout 1\nout 2\n\n# why\nnext\n----\n");
        assert_eq!(pre, ["# intro", ""]);
        assert_eq!(cases[1].comments, ["# why"]);
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].input, ["cmd a=1 b", "more"]);
        assert_eq!(cases[0].expected, "out 1\nout 2");
        assert_eq!(cases[0].arg("a"), Some("1"));
        assert_eq!(cases[0].words(), ["cmd", "a=1", "b"]);
        assert_eq!(cases[1].expected, "");
        assert_eq!(cases[1].line, 10);
    }
}
