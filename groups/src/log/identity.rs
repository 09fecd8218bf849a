//! The identity file of a node's data directory: which cluster, node and logs the write-ahead
//! files next to it belong to.
//!
//! A durable node keeps its logs under `<data_dir>/node-<id>/` ([`super::disk::log_path`]).
//! Log files record no identity of their own, and a directory copied from another cluster (or
//! from another node of the same cluster) would otherwise be replayed as if it were this node's
//! state: the acceptor would vote with promises and entries it never made, which breaks
//! consensus (issue 18: reads returned the other cluster's values). So every data directory
//! holds an identity file, `IDENTITY`, written when the directory is created and checked at
//! every start before anything else in the directory is opened, created, truncated or removed.
//!
//! # Format
//!
//! Plain text, one `key value` pair per line, so an operator can read it:
//!
//! ```text
//! chorus-data-directory 1              format version (FORMAT_VERSION)
//! cluster 0x5f0c...                    the cluster id, 32 hex digits
//! node 3                               the node id
//! logs 0 1 2 3                         the logs whose acceptor state the directory holds
//! incarnation 4                        starts of the node on this directory (1 at creation)
//! crc32 1a2b3c4d                       CRC32 of every byte before this line
//! ```
//!
//! It is written atomically: to `IDENTITY.tmp`, synced, renamed over `IDENTITY`, and the
//! directory synced; a crash leaves the old file or the new one, never a mix.
//!
//! # The check at start ([`check_dir`])
//!
//! - no directory, or an empty one: a fresh node; [`Verdict::Fresh`] (the caller creates the
//!   directory and writes the identity before its first log file);
//! - an identity for this cluster, node and logs: [`Verdict::Known`];
//! - anything else is refused with an [`IdentityError`] naming both identities, and the
//!   directory is left exactly as it was: an identity of another cluster, node or set of logs,
//!   files but no identity, an identity of an unknown format version, or one that does not
//!   check (CRC, syntax).

use crate::ids::{ClusterId, LogId, NodeId};
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The identity file's name inside a node's data directory.
pub const IDENTITY_FILE: &str = "IDENTITY";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC_KEY: &str = "chorus-data-directory";

/// Who a data directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster: ClusterId,
    pub node: NodeId,
    /// The logs whose acceptor state the directory holds, in increasing order.
    pub logs: Vec<LogId>,
    /// How many times a node started on this directory (1 when it is created).
    pub incarnation: u64,
}

impl Identity {
    /// A new directory's identity: incarnation 1, logs sorted.
    pub fn new(cluster: ClusterId, node: NodeId, mut logs: Vec<LogId>) -> Self {
        logs.sort();
        logs.dedup();
        Identity {
            cluster,
            node,
            logs,
            incarnation: 1,
        }
    }

    /// Whether `self` (found on disk) is the directory of `other` (the node starting): same
    /// cluster, node and logs; the incarnation does not count.
    pub fn same_owner(&self, other: &Identity) -> bool {
        self.cluster == other.cluster && self.node == other.node && self.logs == other.logs
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let logs: Vec<String> = self.logs.iter().map(|l| l.0.to_string()).collect();
        let body = format!(
            "{MAGIC_KEY} {FORMAT_VERSION}\ncluster {}\nnode {}\nlogs {}\nincarnation {}\n",
            self.cluster,
            self.node.0,
            logs.join(" "),
            self.incarnation
        );
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}crc32 {crc:08x}\n")
    }

    /// Parses a file's text (see the module docs for the format).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let first = text.lines().next().unwrap_or("");
        let version = match first.split_once(' ') {
            Some((MAGIC_KEY, v)) => v
                .trim()
                .parse::<u32>()
                .map_err(|_| ParseError::Syntax(format!("bad format line {first:?}")))?,
            _ => {
                return Err(ParseError::Syntax(format!(
                    "does not start with \"{MAGIC_KEY} <version>\""
                )))
            }
        };
        if version != FORMAT_VERSION {
            return Err(ParseError::UnknownVersion(version));
        }
        let crc_at = text
            .rfind("crc32 ")
            .ok_or_else(|| ParseError::Syntax("no crc32 line".into()))?;
        let (body, crc_line) = text.split_at(crc_at);
        let want = crc_line["crc32 ".len()..].trim();
        let got = format!("{:08x}", crc32fast::hash(body.as_bytes()));
        if want != got {
            return Err(ParseError::Checksum);
        }
        let mut cluster = None;
        let mut node = None;
        let mut logs = None;
        let mut incarnation = None;
        for line in body.lines().skip(1) {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let bad = |what: &str| ParseError::Syntax(format!("bad {what} line {line:?}"));
            match key {
                "cluster" => cluster = Some(ClusterId::parse(value).map_err(|_| bad("cluster"))?),
                "node" => node = Some(NodeId(value.trim().parse().map_err(|_| bad("node"))?)),
                "logs" => {
                    logs = Some(
                        value
                            .split_whitespace()
                            .map(|l| l.parse().map(LogId))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|_| bad("logs"))?,
                    )
                }
                "incarnation" => {
                    incarnation = Some(value.trim().parse().map_err(|_| bad("incarnation"))?)
                }
                _ => return Err(ParseError::Syntax(format!("unknown line {line:?}"))),
            }
        }
        let missing = |k: &str| ParseError::Syntax(format!("no {k} line"));
        Ok(Identity {
            cluster: cluster.ok_or_else(|| missing("cluster"))?,
            node: node.ok_or_else(|| missing("node"))?,
            logs: logs.ok_or_else(|| missing("logs"))?,
            incarnation: incarnation.ok_or_else(|| missing("incarnation"))?,
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let logs: Vec<String> = self.logs.iter().map(|l| l.0.to_string()).collect();
        write!(
            f,
            "cluster {}, node {}, logs [{}]",
            self.cluster,
            self.node.0,
            logs.join(", ")
        )
    }
}

/// Why an identity file's text was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("format version {0}, this build reads version {FORMAT_VERSION}")]
    UnknownVersion(u32),
    #[error("checksum mismatch (the file is damaged)")]
    Checksum,
    #[error("{0}")]
    Syntax(String),
}

/// Why a data directory was refused. The directory was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "data directory {} belongs to {found} (incarnation {}), but this node is {expected}: it is \
         another cluster's or another node's directory (or the cluster file changed the node's \
         logs). Refusing to start; nothing in the directory was changed. Move it away to start \
         this node on a fresh directory",
        dir.display(), found.incarnation
    )]
    Foreign {
        dir: PathBuf,
        found: Box<Identity>,
        expected: Box<Identity>,
    },
    #[error(
        "data directory {} holds {files} file(s) ({first:?} ...) but no {IDENTITY_FILE} file, so \
         nothing says which cluster and node they belong to (this node is {expected}). Refusing \
         to start; nothing in the directory was changed. Move it away if it is not this \
         node's, or restore its {IDENTITY_FILE} file",
        dir.display()
    )]
    Missing {
        dir: PathBuf,
        files: usize,
        first: String,
        expected: Identity,
    },
    #[error(
        "{}: {reason}; this node is {expected}. Refusing to start; nothing in the directory was \
         changed",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        reason: String,
        expected: Identity,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What [`check_dir`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No directory, or an empty one: nothing to check; create it.
    Fresh,
    /// This node's directory, with the identity as found.
    Known(Identity),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks the data directory `dir` of the node `expected` describes, reading only (see the
/// module docs). Touches nothing, whatever it finds.
pub fn check_dir(dir: &Path, expected: &Identity) -> Result<Verdict, IdentityError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err(dir))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verdict::Fresh),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let path = dir.join(IDENTITY_FILE);
    if !entries.iter().any(|e| e == IDENTITY_FILE) {
        // A leftover temporary identity alone means a creation that never completed.
        let mut others: Vec<&String> = entries.iter().filter(|e| **e != tmp_name()).collect();
        if others.is_empty() {
            return Ok(Verdict::Fresh);
        }
        others.sort();
        return Err(IdentityError::Missing {
            dir: dir.to_path_buf(),
            files: others.len(),
            first: others[0].clone(),
            expected: expected.clone(),
        });
    }
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let unreadable = |reason: String| IdentityError::Unreadable {
        path: path.clone(),
        reason,
        expected: expected.clone(),
    };
    let text = String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))?;
    let found = Identity::parse(&text).map_err(|e| match e {
        ParseError::UnknownVersion(v) => unreadable(format!(
            "identity file of format version {v}, but this build reads version {FORMAT_VERSION} \
             (written by another version of Chorus?)"
        )),
        other => unreadable(format!("not a valid identity file: {other}")),
    })?;
    if !found.same_owner(expected) {
        return Err(IdentityError::Foreign {
            dir: dir.to_path_buf(),
            found: Box::new(found),
            expected: Box::new(expected.clone()),
        });
    }
    Ok(Verdict::Known(found))
}

fn tmp_name() -> String {
    format!("{IDENTITY_FILE}.tmp")
}

/// Writes `id` as `dir`'s identity file atomically and durably (temporary file, sync, rename,
/// directory sync). `dir` must exist.
pub fn write(dir: &Path, id: &Identity) -> Result<(), IdentityError> {
    let tmp = dir.join(tmp_name());
    let path = dir.join(IDENTITY_FILE);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(id.render().as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity::new(
            ClusterId(0x5f0c_8a11 << 64 | 7),
            NodeId(3),
            vec![LogId(2), LogId(0), LogId(1)],
        )
    }

    #[test]
    fn renders_and_parses_back() {
        let i = id();
        assert_eq!(i.logs, vec![LogId(0), LogId(1), LogId(2)]);
        let text = i.render();
        assert!(text.starts_with("chorus-data-directory 1\ncluster 0x"));
        assert_eq!(Identity::parse(&text), Ok(i));
    }

    #[test]
    fn damage_unknown_versions_and_garbage_are_refused() {
        let text = id().render();
        let flipped = text.replace("node 3", "node 4");
        assert_eq!(Identity::parse(&flipped), Err(ParseError::Checksum));
        let v2 = text.replacen(" 1\n", " 2\n", 1);
        assert_eq!(Identity::parse(&v2), Err(ParseError::UnknownVersion(2)));
        for bad in [
            "",
            "hello",
            "chorus-data-directory x\n",
            "chorus-data-directory 1\n",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad:?}");
        }
        let mut body = "chorus-data-directory 1\nnode 3\nlogs 0\nincarnation 1\n".to_string();
        let crc = crc32fast::hash(body.as_bytes());
        body.push_str(&format!("crc32 {crc:08x}\n"));
        assert!(
            matches!(Identity::parse(&body), Err(ParseError::Syntax(s)) if s.contains("cluster"))
        );
    }
}
