//! Cluster files (operator input): `ClusterConfig::from_toml` on arbitrary UTF-8. A file that
//! is accepted is rendered again (`to_toml`) and parsed back, and its lookups are used.
#![no_main]

use groups::config::ClusterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = ClusterConfig::from_toml(text) {
        let all = c.all_groups();
        let _ = (c.route(&all), c.logs_for(&all));
        for g in all.iter().take(64) {
            let _ = c.members(g);
        }
        let _ = ClusterConfig::from_toml(&c.to_toml());
    }
});
