//! Deployment files (operator input) of the B+-tree and Chirper binaries: a cluster file plus
//! a `[service]` table. A file that is accepted is rendered again and parsed back, and every
//! node's role is asked for (Chirper).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    use engine::serve::ConfigFile;
    if let Ok(f) = btree_service::cli::DeploymentFile::parse(text) {
        if let Ok(t) = f.render() {
            let _ = btree_service::cli::DeploymentFile::parse(&t);
        }
    }
    if let Ok(f) = chirper::cli::DeploymentFile::parse(text) {
        for n in &f.cluster.nodes {
            let _ = f.role(n.id);
        }
        if let Ok(t) = f.render() {
            let _ = chirper::cli::DeploymentFile::parse(&t);
        }
    }
});
