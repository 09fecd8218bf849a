//! Durable checkpoints: a replica's checkpoints in files of its data directory, so a
//! restarted replica loads its latest checkpoint and replays only the log suffix after it,
//! and the logs can be trimmed below it with `durability = "disk"`.
//!
//! # Where
//!
//! Node N of a cluster with `data_dir = D` keeps its checkpoints in `D/node-N.checkpoints/`
//! ([`checkpoint_dir`]), beside the node's log directory `D/node-N/` (which `groups` owns and
//! assembles elsewhere before renaming it into place, so nothing else may write into it), one
//! file per round: `checkpoint-<round, 20 digits>.ckpt`. The two newest are kept, so a damaged
//! newest file still leaves one to load.
//!
//! # File format (version 2)
//!
//! ```text
//! magic     b"CHORCKP" 0x02                          8 bytes
//! cluster   u128 LE                                  the cluster id the checkpoint belongs to
//! node      u32 LE                                   the node that wrote it
//! round     u64 LE
//! logs      u32 LE, then per log: id u32 LE, next u64 LE   the first entry not covered
//! length    u64 LE, then the checkpoint's bytes       as `ReplicaCore::install` takes them
//! crc32     u32 LE                                   CRC32 of every byte before it
//! ```
//!
//! Version 2 differs from version 1 only in the checkpoint's bytes, which the engine's wire
//! encoding ([`crate::wire::encode`]) writes: `postcard` since version 2, `bitcode` before. A
//! version-1 file is refused ([`CheckpointFileError::OldFormat`]) rather than set aside: it
//! may hold the only copy of the state below the trimmed logs, so the operator decides.
//!
//! # Atomic writes
//!
//! [`CheckpointDir::save`] writes `checkpoint-<round>.tmp`, syncs it, renames it to its
//! `.ckpt` name and syncs the directory; only then does the replica report the checkpoint's
//! positions to the acceptors (which trim below them). A crash at any point leaves either no
//! new file or a complete one; a leftover `.tmp` is deleted at the next load. At load
//! ([`CheckpointDir::load`]) the newest file that passes its checksum and header checks is
//! used; a damaged one (torn, truncated, a flipped byte, a bad header) is renamed to
//! `.damaged` with a warning naming it and the reason, and the one before it is tried. A
//! file of another cluster or another node is refused ([`CheckpointFileError::Foreign`]): the
//! replica does not start on a stale directory.
//!
//! A directory holds at most [`KEEP`] files, except between a save's rename and its pruning
//! (a crash there leaves `KEEP + 1`); a load that finds a valid file prunes to `KEEP` again.

use bytes::Bytes;
use groups::ids::{ClusterId, LogId, NodeId};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The first bytes of every checkpoint file (format version 2).
pub const MAGIC: [u8; 8] = *b"CHORCKP\x02";

/// The first bytes of a checkpoint file of format version 1 (refused, see the module docs).
pub const MAGIC_V1: [u8; 8] = *b"CHORCKP\x01";

/// Checkpoint files kept in a directory (the newest first).
pub const KEEP: usize = 2;

/// The fixed part of a file before the positions: magic, cluster, node, round, log count.
const HEAD: usize = 8 + 16 + 4 + 8 + 4;

/// The directory where node `node` keeps its checkpoints under `data_dir`.
pub fn checkpoint_dir(data_dir: &Path, node: NodeId) -> PathBuf {
    data_dir.join(format!("node-{}.checkpoints", node.0))
}

/// One checkpoint as it is kept on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointFile {
    pub cluster: ClusterId,
    pub node: NodeId,
    pub round: u64,
    /// Per log, the first entry the checkpoint does not cover.
    pub positions: Vec<(LogId, u64)>,
    /// The checkpoint, as the replica's core encoded it.
    pub bytes: Bytes,
}

/// Why a checkpoint file or directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the file is {len} bytes long, too short for a checkpoint ({need} at least)")]
    Short { len: usize, need: usize },
    #[error("not a Chorus checkpoint file of format version 2 (bad magic)")]
    BadMagic,
    #[error(
        "{}: a checkpoint of format version 1 (bitcode-encoded state), which this build does not read; \
         start this replica with the build that wrote it, or move the directory away to let it recover its state from its peers",
        path.display()
    )]
    OldFormat { path: PathBuf },
    #[error("checksum mismatch: the file holds {stored:08x}, its bytes hash to {computed:08x} (torn or damaged)")]
    Checksum { stored: u32, computed: u32 },
    #[error("the header says {what}, which does not fit the file's {len} bytes")]
    Length { what: String, len: usize },
    #[error(
        "{}: a checkpoint of cluster {found_cluster:#x} node {found_node}, but this is cluster {cluster:#x} node {node}: \
         the directory belongs to another deployment or node; move it away",
        path.display()
    )]
    Foreign {
        path: PathBuf,
        found_cluster: u128,
        found_node: u32,
        cluster: u128,
        node: u32,
    },
}

impl CheckpointFile {
    /// The bytes of the header (everything before the checkpoint's bytes).
    fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEAD + 12 * self.positions.len() + 8);
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&self.cluster.0.to_le_bytes());
        h.extend_from_slice(&self.node.0.to_le_bytes());
        h.extend_from_slice(&self.round.to_le_bytes());
        h.extend_from_slice(&(self.positions.len() as u32).to_le_bytes());
        for (log, next) in &self.positions {
            h.extend_from_slice(&log.0.to_le_bytes());
            h.extend_from_slice(&next.to_le_bytes());
        }
        h.extend_from_slice(&(self.bytes.len() as u64).to_le_bytes());
        h
    }

    /// Writes the whole file to `w` (header, bytes, checksum).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let header = self.header();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(&self.bytes);
        w.write_all(&header)?;
        w.write_all(&self.bytes)?;
        w.write_all(&crc.finalize().to_le_bytes())
    }

    /// The whole file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD + 12 * self.positions.len() + 12 + self.bytes.len());
        self.write_to(&mut out).expect("writing to a Vec");
        out
    }

    /// Parses a file's bytes: the checksum first, then every length against the file.
    pub fn decode(file: &[u8]) -> Result<CheckpointFile, CheckpointFileError> {
        let len = file.len();
        let need = HEAD + 8 + 4;
        if len < need {
            return Err(CheckpointFileError::Short { len, need });
        }
        if file[..8] != MAGIC {
            return Err(CheckpointFileError::BadMagic);
        }
        let (body, tail) = file.split_at(len - 4);
        let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(CheckpointFileError::Checksum { stored, computed });
        }
        let mut r = Reader { buf: body, at: 8 };
        let cluster = ClusterId(u128::from_le_bytes(r.take::<16>()?));
        let node = NodeId(u32::from_le_bytes(r.take::<4>()?));
        let round = u64::from_le_bytes(r.take::<8>()?);
        let logs = u32::from_le_bytes(r.take::<4>()?) as usize;
        if logs.saturating_mul(12) > body.len() - r.at {
            return Err(CheckpointFileError::Length {
                what: format!("{logs} logs"),
                len,
            });
        }
        let mut positions = Vec::with_capacity(logs);
        for _ in 0..logs {
            let log = LogId(u32::from_le_bytes(r.take::<4>()?));
            let next = u64::from_le_bytes(r.take::<8>()?);
            positions.push((log, next));
        }
        let n = u64::from_le_bytes(r.take::<8>()?);
        if n != (body.len() - r.at) as u64 {
            return Err(CheckpointFileError::Length {
                what: format!("a checkpoint of {n} bytes"),
                len,
            });
        }
        Ok(CheckpointFile {
            cluster,
            node,
            round,
            positions,
            bytes: Bytes::copy_from_slice(&body[r.at..]),
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CheckpointFileError> {
        let end = self.at + N;
        let Some(s) = self.buf.get(self.at..end) else {
            return Err(CheckpointFileError::Length {
                what: format!("a field at byte {}", self.at),
                len: self.buf.len() + 4,
            });
        };
        self.at = end;
        Ok(s.try_into().expect("N bytes"))
    }
}

/// Where a replica keeps its checkpoints durably (see the module docs). The host calls it
/// through a [`super::saver::Saver`] (on its own thread or on a writer thread): a
/// checkpoint's positions are reported only once `save` returned.
pub trait DurableCheckpoints: Send + 'static {
    /// Makes `file` durable; returns once it is.
    fn save(&mut self, file: &CheckpointFile) -> Result<(), CheckpointFileError>;
}

/// A node's checkpoint directory on disk (see the module docs).
#[derive(Debug)]
pub struct CheckpointDir {
    dir: PathBuf,
    cluster: ClusterId,
    node: NodeId,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointFileError + '_ {
    move |source| CheckpointFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointFileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The round of a file named `checkpoint-<round>.ckpt`.
fn round_of_name(name: &str) -> Option<u64> {
    name.strip_prefix("checkpoint-")?
        .strip_suffix(".ckpt")?
        .parse()
        .ok()
}

impl CheckpointDir {
    /// The checkpoint directory `dir` of node `node` of cluster `cluster`, created (and its
    /// parent synced) if missing.
    pub fn open(
        dir: PathBuf,
        cluster: ClusterId,
        node: NodeId,
    ) -> Result<Self, CheckpointFileError> {
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(CheckpointDir { dir, cluster, node })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file_path(&self, round: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("checkpoint-{round:020}.{ext}"))
    }

    /// The checkpoint files present, newest first: (round, path).
    pub fn files(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointFileError> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            if let Some(round) = name.to_str().and_then(round_of_name) {
                found.push((round, entry.path()));
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        Ok(found)
    }

    /// The newest valid checkpoint, if any (see the module docs): leftover `.tmp` files are
    /// deleted, damaged files renamed to `.damaged` (with a warning) and passed over; a file of
    /// another cluster or node is an error.
    pub fn load(&mut self) -> Result<Option<CheckpointFile>, CheckpointFileError> {
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                tracing::info!(path = %path.display(), "deleting a checkpoint file whose write was cut short");
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        for (round, path) in self.files()? {
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            if bytes.starts_with(&MAGIC_V1) {
                return Err(CheckpointFileError::OldFormat { path });
            }
            match CheckpointFile::decode(&bytes) {
                Ok(f) if f.cluster != self.cluster || f.node != self.node => {
                    return Err(CheckpointFileError::Foreign {
                        path,
                        found_cluster: f.cluster.0,
                        found_node: f.node.0,
                        cluster: self.cluster.0,
                        node: self.node.0,
                    });
                }
                Ok(f) if f.round != round => {
                    self.set_aside(
                        &path,
                        &format!("the file name says round {round}, its header {}", f.round),
                    )?;
                }
                Ok(f) => {
                    self.prune()?;
                    return Ok(Some(f));
                }
                Err(e) => self.set_aside(&path, &e.to_string())?,
            }
        }
        Ok(None)
    }

    /// Deletes all but the newest [`KEEP`] checkpoint files. A save that was cut short
    /// between its rename and its pruning leaves one file too many; the next save or load
    /// removes it.
    fn prune(&self) -> Result<(), CheckpointFileError> {
        for (_, old) in self.files()?.into_iter().skip(KEEP) {
            std::fs::remove_file(&old).map_err(io_err(&old))?;
        }
        Ok(())
    }

    fn set_aside(&self, path: &Path, why: &str) -> Result<(), CheckpointFileError> {
        let mut to = path.as_os_str().to_owned();
        to.push(".damaged");
        tracing::warn!(path = %path.display(), reason = why, "checkpoint file damaged: renamed to .damaged; trying the one before it");
        std::fs::rename(path, &to).map_err(io_err(path))?;
        sync_dir(&self.dir)
    }
}

impl DurableCheckpoints for CheckpointDir {
    fn save(&mut self, file: &CheckpointFile) -> Result<(), CheckpointFileError> {
        let tmp = self.file_path(file.round, "tmp");
        let dst = self.file_path(file.round, "ckpt");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w = io::BufWriter::with_capacity(1 << 20, &mut f);
        file.write_to(&mut w).map_err(io_err(&tmp))?;
        w.flush().map_err(io_err(&tmp))?;
        drop(w);
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        sync_dir(&self.dir)?;
        self.prune()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(round: u64, bytes: &[u8]) -> CheckpointFile {
        CheckpointFile {
            cluster: ClusterId(0x1234_5678_9abc_def0_1122_3344_5566_7788),
            node: NodeId(3),
            round,
            positions: vec![(LogId(0), 17), (LogId(2), 1 << 40)],
            bytes: Bytes::copy_from_slice(bytes),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("chorus-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    proptest! {
        #[test]
        fn a_file_round_trips(round in any::<u64>(), node in any::<u32>(), cluster in any::<u128>(),
                              positions in proptest::collection::vec((any::<u32>(), any::<u64>()), 0..8),
                              bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let f = CheckpointFile {
                cluster: ClusterId(cluster),
                node: NodeId(node),
                round,
                positions: positions.into_iter().map(|(l, n)| (LogId(l), n)).collect(),
                bytes: bytes.into(),
            };
            prop_assert_eq!(CheckpointFile::decode(&f.encode()).unwrap(), f);
        }

        #[test]
        fn every_truncation_and_every_flipped_byte_is_a_typed_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..300), at in any::<prop::sample::Index>(),
            bit in 0u8..8) {
            let enc = sample(9, &bytes).encode();
            // Every truncation.
            for cut in 0..enc.len() {
                prop_assert!(CheckpointFile::decode(&enc[..cut]).is_err(), "cut at {}", cut);
            }
            // A flipped bit anywhere.
            let mut bad = enc.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(CheckpointFile::decode(&bad).is_err(), "bit {} of byte {}", bit, i);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = CheckpointFile::decode(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = CheckpointFile::decode(&with_magic);
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let enc = sample(1, b"state").encode();
        assert!(matches!(
            CheckpointFile::decode(&enc[..10]),
            Err(CheckpointFileError::Short { len: 10, .. })
        ));
        let mut bad = enc.clone();
        bad[0] = b'X';
        assert!(matches!(
            CheckpointFile::decode(&bad),
            Err(CheckpointFileError::BadMagic)
        ));
        let mut bad = enc.clone();
        let n = bad.len();
        bad[n - 6] ^= 0xff;
        let e = CheckpointFile::decode(&bad).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        // A header whose lengths lie, with a checksum that matches: refused, not a panic.
        let mut f = sample(1, b"state");
        f.positions = vec![];
        let mut lying = f.encode();
        lying.truncate(lying.len() - 4);
        let at = HEAD - 4;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32fast::hash(&lying);
        lying.extend_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            CheckpointFile::decode(&lying),
            Err(CheckpointFileError::Length { .. })
        ));
    }

    #[test]
    fn the_newest_valid_file_loads_and_a_damaged_one_is_set_aside() {
        let d = temp("load");
        let f1 = sample(1, b"one");
        let mut dir = CheckpointDir::open(d.clone(), f1.cluster, f1.node).unwrap();
        assert!(
            dir.load().unwrap().is_none(),
            "an empty directory holds none"
        );
        dir.save(&f1).unwrap();
        dir.save(&sample(2, b"two")).unwrap();
        dir.save(&sample(3, b"three")).unwrap();
        let rounds: Vec<u64> = dir.files().unwrap().iter().map(|f| f.0).collect();
        assert_eq!(rounds, vec![3, 2], "the two newest are kept");
        assert_eq!(dir.load().unwrap().unwrap().bytes, &b"three"[..]);

        // Tear the newest (as a crash of a disk that lied about a sync would) and leave a
        // half-written temporary file: the one before loads.
        let newest = dir.files().unwrap()[0].1.clone();
        let len = std::fs::metadata(&newest).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        std::fs::write(d.join("checkpoint-00000000000000000004.tmp"), b"half").unwrap();
        let got = dir.load().unwrap().unwrap();
        assert_eq!((got.round, &got.bytes[..]), (2, &b"two"[..]));
        assert!(d
            .join("checkpoint-00000000000000000003.ckpt.damaged")
            .exists());
        assert!(!d.join("checkpoint-00000000000000000004.tmp").exists());

        // A flipped byte in the remaining one: nothing valid is left.
        let path = dir.files().unwrap()[0].1.clone();
        let mut b = std::fs::read(&path).unwrap();
        b[20] ^= 0x40;
        std::fs::write(&path, b).unwrap();
        assert!(dir.load().unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_save_cut_short_before_its_pruning_leaves_one_file_too_many_and_a_load_prunes_it() {
        let d = temp("prune");
        let f1 = sample(1, b"one");
        let mut dir = CheckpointDir::open(d.clone(), f1.cluster, f1.node).unwrap();
        dir.save(&f1).unwrap();
        dir.save(&sample(2, b"two")).unwrap();
        // What a kill between a save's rename and its pruning leaves: three files.
        let mut bytes = Vec::new();
        sample(3, b"three").write_to(&mut bytes).unwrap();
        std::fs::write(d.join("checkpoint-00000000000000000003.ckpt"), bytes).unwrap();
        assert_eq!(dir.files().unwrap().len(), KEEP + 1);
        let got = dir.load().unwrap().unwrap();
        assert_eq!((got.round, &got.bytes[..]), (3, &b"three"[..]));
        let rounds: Vec<u64> = dir.files().unwrap().iter().map(|f| f.0).collect();
        assert_eq!(rounds, vec![3, 2], "the load pruned the oldest");

        // A damaged newest among three: the load falls back and does not delete the fallback
        // the one after it would need.
        let mut bytes = Vec::new();
        sample(4, b"four").write_to(&mut bytes).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0x10;
        std::fs::write(d.join("checkpoint-00000000000000000004.ckpt"), bytes).unwrap();
        let got = dir.load().unwrap().unwrap();
        assert_eq!(got.round, 3);
        let rounds: Vec<u64> = dir.files().unwrap().iter().map(|f| f.0).collect();
        assert_eq!(rounds, vec![3, 2]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_checkpoint_of_another_cluster_or_node_is_refused() {
        let d = temp("foreign");
        let f = sample(5, b"x");
        let mut dir = CheckpointDir::open(d.clone(), f.cluster, f.node).unwrap();
        dir.save(&f).unwrap();
        for (cluster, node) in [(ClusterId(1), f.node), (f.cluster, NodeId(4))] {
            let mut other = CheckpointDir::open(d.clone(), cluster, node).unwrap();
            let e = other.load().unwrap_err();
            assert!(
                matches!(e, CheckpointFileError::Foreign { .. })
                    && e.to_string().contains("another deployment or node"),
                "{e}"
            );
        }
        assert!(
            d.join("checkpoint-00000000000000000005.ckpt").exists(),
            "left in place"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_checkpoint_of_format_version_1_is_refused_and_left_in_place() {
        let d = temp("old-format");
        let f = sample(6, b"state");
        let mut dir = CheckpointDir::open(d.clone(), f.cluster, f.node).unwrap();
        dir.save(&f).unwrap();
        let path = d.join("checkpoint-00000000000000000006.ckpt");
        let mut b = std::fs::read(&path).unwrap();
        b[..8].copy_from_slice(&MAGIC_V1);
        std::fs::write(&path, &b).unwrap();
        let e = dir.load().unwrap_err();
        assert!(
            matches!(e, CheckpointFileError::OldFormat { .. })
                && e.to_string().contains("version 1"),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b, "left in place, unchanged");
        let _ = std::fs::remove_dir_all(&d);
    }
}
