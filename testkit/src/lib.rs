//! Test support shared by Chorus's crates (a dev-dependency only): proptest settings, an
//! allocator that refuses absurd allocations, and damage of well-formed text inputs for
//! decoder property tests.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Refuses any single allocation over 1 GiB, so a decoder that trusts a size taken from its
/// input fails the test binary ("memory allocation of N bytes failed") instead of exhausting
/// the machine. Install it in a test binary with
/// `#[global_allocator] static ALLOC: testkit::Capped = testkit::Capped;`.
pub struct Capped;

pub const ALLOCATION_CAP: usize = 1 << 30;

unsafe impl std::alloc::GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

/// `cases` cases each; a failure is reported shrunk, not persisted to a regressions file.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Up to `n` arbitrary bytes.
pub fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> + Clone {
    vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

/// The char-boundary offset of `text` chosen by `i` (at most `text.len()`).
pub fn boundary(text: &str, i: Index) -> usize {
    let mut at = i.index(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Damaged versions of a configuration file's text: cut at `cut`, the line `line` dropped or
/// duplicated, the character at `at` replaced by `ch`, and the value of line `line` replaced
/// by `number` if it is `key = <a number>` (`is_number` says what counts as one).
pub fn damaged(
    text: &str,
    cut: Index,
    line: Index,
    at: Index,
    ch: char,
    number: &str,
    is_number: fn(&str) -> bool,
) -> Vec<String> {
    let mut out = vec![text[..boundary(text, cut)].to_string()];
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return out;
    }
    let l = line.index(lines.len());
    let mut v = lines.clone();
    v.remove(l);
    out.push(v.join("\n"));
    let mut v = lines.clone();
    v.insert(l, lines[l]);
    out.push(v.join("\n"));
    let i = boundary(text, at).min(text.len().saturating_sub(1));
    let mut changed = text.to_string();
    if let Some(c) = changed[i..].chars().next() {
        changed.replace_range(i..i + c.len_utf8(), &ch.to_string());
    }
    out.push(changed);
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    if let Some((key, value)) = lines[l].split_once(" = ") {
        if is_number(value) {
            v[l] = format!("{key} = {number}");
        }
    }
    out.push(v.join("\n"));
    out
}

/// Integers worth trying in a configuration value: zero, negatives, and the edges of `u32`,
/// `u64` and `i64` (TOML integers are `i64`).
pub fn integer_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("4294967295".to_string()),
        Just("4294967296".to_string()),
        Just("18446744073709551615".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        (0u32..10).prop_map(|v| v.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest! {
        #![proptest_config(config(500))]

        #[test]
        fn damage_cuts_drops_duplicates_replaces_and_renumbers(
            a in 0i64..1000,
            cut in any::<Index>(),
            at in any::<Index>(),
            ch in any::<char>(),
        ) {
            let text = format!("a = {a}\nb = \"x\"");
            // `line` picks one of the two lines; use both to see the number replaced once.
            let out = damaged(&text, cut, at, at, ch, "99", |v| v.parse::<i64>().is_ok());
            prop_assert_eq!(out.len(), 5);
            prop_assert!(text.starts_with(&out[0]));
            prop_assert_eq!(out[1].lines().count(), 1);
            prop_assert_eq!(out[2].lines().count(), 3);
            prop_assert_eq!(out[3].chars().count(), text.chars().count());
            let renumbered = out[4] == "a = 99\nb = \"x\"";
            let untouched = out[4] == text;
            prop_assert!(renumbered || untouched, "{:?}", out[4]);
        }
    }
}
