//! The text the binaries read from users: command lines of the B+-tree and Chirper clients and
//! servers (split into words as the binaries split them), mode and scheme names, and the CPU
//! lists the engine reads from sysfs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let _ = btree_service::cli::parse_command(&words);
        let _ = chirper::cli::parse_command(&words, line.len() as u64);
        let _ = btree_service::cli::parse_mode(line);
        let _ = chirper::cli::parse_scheme(line);
    }
    let _ = engine::topology::parse_cpu_list(text);
});
