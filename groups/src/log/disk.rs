//! A durable acceptor store: [`DiskStorage`] keeps one log's omnipaxos state in an append-only
//! write-ahead file and fsyncs it before any write call returns.
//!
//! # File format
//!
//! One file per log per node, `<data_dir>/node-<id>/log-<log>.wal` ([`log_path`]):
//!
//! ```text
//! header:  b"CHORWAL" 0x01                                  (8 bytes, [`MAGIC`])
//! record:  len: u32 LE | hcrc: u32 LE | pcrc: u32 LE | payload (len bytes)
//!          hcrc = CRC32 of the 4 length bytes, pcrc = CRC32 of the payload
//! payload: bitcode (serde) encoding of a `Record`:
//!          Ops([Op, ...])        one `write_atomically` call (or one single-op call)
//!          Image(StorageImage)   the whole state (written only by compaction, as the
//!                                first record of a rewritten file)
//! ```
//!
//! The node's directory also holds an identity file ([`super::identity`]), which the node
//! checks before it opens any log file: a store never opens a file of another cluster or node.
//!
//! At open the records are replayed in order into a [`MemStorage`], which then serves every
//! read; the file is only ever appended to, truncated back, or replaced by compaction.
//!
//! # What fsync covers: the group-commit rule
//!
//! Every mutating call of the [`Storage`] trait (omnipaxos calls `write_atomically` for its
//! multi-part updates, and `set_promise`, `set_decided_idx`, `append_entries`, `set_stopsign`
//! on their own) appends exactly ONE record holding all of its operations and calls
//! `File::sync_data` once before returning `Ok`. The in-memory image is updated only after the
//! sync, so omnipaxos never sends a promise or an accept for state that is not on disk. A batch
//! of entries that omnipaxos hands over in one call therefore costs one fsync: that is the
//! group commit (our leaders batch many multicasts into one `LogEntry::Batch`, and omnipaxos
//! hands an acceptor every entry of one `AcceptDecide` in one call). A failed write is rolled
//! back: the file is truncated to its previous length and the image is untouched; if even the
//! truncation fails, the store refuses every later write ([`DiskError::Poisoned`]).
//!
//! # Torn writes
//!
//! A crash during an append can leave a prefix of the last record, or garbage where it should
//! be. At open, the first record that does not check (short header, header CRC mismatch,
//! length past the end of the file, payload CRC mismatch) is treated as the torn tail if no
//! well-formed record (header and payload CRCs both matching) starts at any later byte: the
//! file is truncated there (with a `tracing::warn!`) and the store holds the state of the last
//! complete call, which is the state before the unfinished one. A bad record followed by a
//! well-formed one cannot come from a crash (every earlier record was synced before the next
//! was written), so it is reported as [`DiskError::Corrupt`]; a record whose checksums match
//! but that does not decode is [`DiskError::Undecodable`]. Neither panics.
//!
//! # Compaction
//!
//! Trimmed entries stay in the file as dead bytes. After a write, once the file is larger than
//! [`DiskOptions::compact_bytes`] (64 MiB by default) and the encoded current state is less than
//! half of it, the store writes the header and one `Image` record to `log-<log>.wal.tmp`,
//! syncs it, renames it over the log file and syncs the directory. A crash at any point leaves
//! either the old or the new file, both complete; a leftover `.tmp` is deleted at open. A
//! failed compaction is logged and the old file kept.
//!
//! # Not covered
//!
//! - A disk or controller that acknowledges a flush it has not made durable (volatile write
//!   caches without power-loss protection, some virtualised disks, `nobarrier` mounts): a
//!   power loss can then lose or reorder acknowledged records; CRCs detect the damage only
//!   where it leaves an invalid record, and a lost synced record is not detected at all.
//! - Losing the whole disk or directory: the node restarts empty and rejoins like a new
//!   acceptor, which omnipaxos does not make safe if it had promised or accepted anything.
//!   Replace such a node only while a majority of the log's acceptors keep their state.
//! - Bit rot inside a record followed by valid records is detected ([`DiskError::Corrupt`])
//!   but not repaired; the operator must restore the file or replace the node.
//! - Logs with a single acceptor (f = 0, [`super::solo::SoloLog`]) stay in memory even in the
//!   durable node mode: with no second copy there is nothing to recover from anyway.

use super::storage::{MemStorage, StorageImage};
use crate::ids::{LogId, NodeId};
use crate::message::LogEntry;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{NoSnapshot, StopSign, Storage, StorageOp, StorageResult};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The first bytes of every log file (format version 1).
pub const MAGIC: [u8; 8] = *b"CHORWAL\x01";
const RECORD_HEADER: usize = 12;

/// The directory where node `node` keeps its logs under `data_dir`: `<data_dir>/node-<id>`.
pub fn node_dir(data_dir: &Path, node: NodeId) -> PathBuf {
    data_dir.join(format!("node-{}", node.0))
}

/// Where node `node` keeps log `log` under `data_dir`.
pub fn log_path(data_dir: &Path, node: NodeId, log: LogId) -> PathBuf {
    node_dir(data_dir, node).join(format!("log-{}.wal", log.0))
}

/// Why a durable store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a Chorus log file (bad or short header)", path.display())]
    BadHeader { path: PathBuf },
    #[error(
        "{}: corrupt record at byte {offset}, followed by valid records (not a torn write)",
        path.display()
    )]
    Corrupt { path: PathBuf, offset: u64 },
    #[error("{}: record at byte {offset} passes its checksums but does not decode: {reason}", path.display())]
    Undecodable {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{}: cannot encode a record: {reason}", path.display())]
    Encode { path: PathBuf, reason: String },
    #[error("{}: an earlier failed write could not be rolled back; reopen the store", path.display())]
    Poisoned { path: PathBuf },
    /// The data directory belongs to someone else, or cannot be told to be this node's.
    #[error(transparent)]
    Identity(Box<super::identity::IdentityError>),
}

impl From<super::identity::IdentityError> for DiskError {
    fn from(e: super::identity::IdentityError) -> Self {
        DiskError::Identity(Box::new(e))
    }
}

/// Tuning of a [`DiskStorage`].
#[derive(Clone, Copy, Debug)]
pub struct DiskOptions {
    /// The file is rewritten only once it is larger than this, and more than half dead.
    pub compact_bytes: u64,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            compact_bytes: 64 << 20,
        }
    }
}

/// Counters of one store since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Records appended (one per mutating call), each followed by one `sync_data`.
    pub records: u64,
    pub bytes_written: u64,
    pub compactions: u64,
    /// Bytes of a torn tail cut off at open (0 if the file ended cleanly).
    pub torn_tail_bytes: u64,
}

/// One storage operation as written to disk (`StorageOp` without the snapshot, which we never
/// use: `LogEntry`'s snapshot type is `NoSnapshot`).
#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Append(Vec<LogEntry>),
    AppendOnPrefix(u64, Vec<LogEntry>),
    Promise(Ballot),
    Decided(u64),
    Accepted(Ballot),
    Compacted(u64),
    Trim(u64),
    Stopsign(Option<StopSign>),
}

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Ops(Vec<Op>),
    Image(StorageImage),
}

fn to_op(op: StorageOp<LogEntry>) -> Option<Op> {
    Some(match op {
        StorageOp::AppendEntry(e) => Op::Append(vec![e]),
        StorageOp::AppendEntries(es) => Op::Append(es),
        StorageOp::AppendOnPrefix(i, es) => Op::AppendOnPrefix(i as u64, es),
        StorageOp::SetPromise(b) => Op::Promise(b),
        StorageOp::SetDecidedIndex(i) => Op::Decided(i as u64),
        StorageOp::SetAcceptedRound(b) => Op::Accepted(b),
        StorageOp::SetCompactedIdx(i) => Op::Compacted(i as u64),
        StorageOp::Trim(i) => Op::Trim(i as u64),
        StorageOp::SetStopsign(s) => Op::Stopsign(s),
        StorageOp::SetSnapshot(_) => return None,
    })
}

fn apply(mem: &mut MemStorage, op: Op) {
    // MemStorage never fails.
    let _ = match op {
        Op::Append(es) => mem.append_entries(es),
        Op::AppendOnPrefix(i, es) => mem.append_on_prefix(i as usize, es),
        Op::Promise(b) => mem.set_promise(b),
        Op::Decided(i) => mem.set_decided_idx(i as usize),
        Op::Accepted(b) => mem.set_accepted_round(b),
        Op::Compacted(i) => mem.set_compacted_idx(i as usize),
        Op::Trim(i) => mem.trim(i as usize),
        Op::Stopsign(s) => mem.set_stopsign(s),
    };
}

/// A record as it goes to disk: header and payload.
fn frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok()?;
    let len_bytes = len.to_le_bytes();
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc32fast::hash(&len_bytes).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// The payload range and end of a well-formed record at `pos`, or `None`.
fn parse_at(buf: &[u8], pos: usize) -> Option<(std::ops::Range<usize>, usize)> {
    let h = buf.get(pos..pos.checked_add(RECORD_HEADER)?)?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if crc32fast::hash(&h[0..4]) != word(4) {
        return None;
    }
    let start = pos + RECORD_HEADER;
    let end = start.checked_add(word(0) as usize)?;
    let payload = buf.get(start..end)?;
    (crc32fast::hash(payload) == word(8)).then_some((start..end, end))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Syncs the directory `dir` itself, so an entry created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Syncs the directory holding `path`, so a file created or renamed in it survives a crash.
fn sync_parent(path: &Path) -> Result<(), DiskError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Creates `dir` (and its missing parents) durably: each new directory's parent is synced.
pub fn create_dir_durable(dir: &Path) -> Result<(), DiskError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_parent(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// One log's acceptor state, durable. See the module docs.
pub struct DiskStorage {
    mem: MemStorage,
    file: File,
    path: PathBuf,
    /// Bytes of the file that hold complete records (the file's length between calls).
    len: u64,
    /// Length at which compaction is next considered.
    next_compact_check: u64,
    opts: DiskOptions,
    poisoned: bool,
    stats: DiskStats,
}

impl std::fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStorage")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl DiskStorage {
    /// Opens the store at `path` with default options, creating it (and its directory) if it
    /// does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DiskError> {
        Self::open_with(path, DiskOptions::default())
    }

    /// Opens the store at `path`: creates it if missing, else replays it (cutting off a torn
    /// tail; see the module docs).
    pub fn open_with(path: impl AsRef<Path>, opts: DiskOptions) -> Result<Self, DiskError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir_durable(dir)?;
        }
        let tmp = tmp_path(&path);
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
        if !path.exists() {
            write_new_file(&path, &MAGIC)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io_err(&path))?;
        if buf.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(DiskError::BadHeader { path });
        }
        let mut mem = MemStorage::default();
        let mut pos = MAGIC.len();
        let mut torn = 0u64;
        while pos < buf.len() {
            match parse_at(&buf, pos) {
                Some((payload, next)) => {
                    let rec: Record = bitcode::deserialize(&buf[payload]).map_err(|e| {
                        DiskError::Undecodable {
                            path: path.clone(),
                            offset: pos as u64,
                            reason: e.to_string(),
                        }
                    })?;
                    match rec {
                        Record::Ops(ops) => ops.into_iter().for_each(|op| apply(&mut mem, op)),
                        Record::Image(img) => mem = MemStorage::from_image(img),
                    }
                    pos = next;
                }
                None => {
                    if (pos + 1..buf.len()).any(|q| parse_at(&buf, q).is_some()) {
                        return Err(DiskError::Corrupt {
                            path,
                            offset: pos as u64,
                        });
                    }
                    torn = (buf.len() - pos) as u64;
                    tracing::warn!(
                        path = %path.display(),
                        offset = pos,
                        bytes = torn,
                        "torn write at the end of the log file; cutting it off"
                    );
                    file.set_len(pos as u64).map_err(io_err(&path))?;
                    file.sync_all().map_err(io_err(&path))?;
                    break;
                }
            }
        }
        let len = pos as u64;
        Ok(DiskStorage {
            mem,
            file,
            path,
            len,
            next_compact_check: opts.compact_bytes.max(len.saturating_mul(2)),
            opts,
            poisoned: false,
            stats: DiskStats {
                torn_tail_bytes: torn,
                ..DiskStats::default()
            },
        })
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current length of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    /// A copy of the whole state (what a reopen would recover).
    pub fn image(&self) -> StorageImage {
        self.mem.image()
    }

    /// Appends one record and syncs it; on failure, truncates back (or poisons the store).
    fn append_record(&mut self, rec: &Record) -> Result<(), DiskError> {
        if self.poisoned {
            return Err(DiskError::Poisoned {
                path: self.path.clone(),
            });
        }
        let encode_err = |reason: String| DiskError::Encode {
            path: self.path.clone(),
            reason,
        };
        let payload = bitcode::serialize(rec).map_err(|e| encode_err(e.to_string()))?;
        let bytes = frame(&payload).ok_or_else(|| encode_err("record over 4 GiB".into()))?;
        let res = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&bytes))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = res {
            if self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(io_err(&self.path)(e));
        }
        self.len += bytes.len() as u64;
        self.stats.records += 1;
        self.stats.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// Rewrites the file as one image record if it is large and mostly dead (module docs).
    fn maybe_compact(&mut self) {
        if self.len < self.next_compact_check {
            return;
        }
        let image = Record::Image(self.mem.image());
        let Some(bytes) = bitcode::serialize(&image).ok().and_then(|p| frame(&p)) else {
            return;
        };
        let live = (MAGIC.len() + bytes.len()) as u64;
        if live.saturating_mul(2) > self.len {
            self.next_compact_check = self.opts.compact_bytes.max(live.saturating_mul(2));
            return;
        }
        let mut content = MAGIC.to_vec();
        content.extend_from_slice(&bytes);
        match self.replace_file(&content) {
            Ok(file) => {
                tracing::debug!(path = %self.path.display(), from = self.len, to = live, "log file compacted");
                self.file = file;
                self.len = live;
                self.stats.compactions += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "log file compaction failed; keeping the old file")
            }
        }
        self.next_compact_check = self.opts.compact_bytes.max(self.len.saturating_mul(2));
    }

    fn replace_file(&self, content: &[u8]) -> Result<File, DiskError> {
        let tmp = tmp_path(&self.path);
        let res = (|| {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(content).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
            sync_parent(&self.path)?;
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(io_err(&self.path))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    fn write_ops(&mut self, ops: Vec<Op>) -> Result<(), DiskError> {
        if ops.is_empty() {
            return Ok(());
        }
        let rec = Record::Ops(ops);
        self.append_record(&rec)?;
        let Record::Ops(ops) = rec else {
            unreachable!()
        };
        ops.into_iter().for_each(|op| apply(&mut self.mem, op));
        self.maybe_compact();
        Ok(())
    }

    fn write_one(&mut self, op: StorageOp<LogEntry>) -> StorageResult<()> {
        self.write_atomically(vec![op])
    }

    /// `ops` without those that leave the state exactly as it is, so that writing and syncing
    /// them can be skipped: appends of nothing (followers flush an empty batch on every tick),
    /// and a promise, accepted round or decided index equal to the one in force at that point
    /// of the batch. Only exact no-ops go, so what is on disk after a crash is the same as if
    /// they had been written. After any other kind of operation the rest of the batch is kept
    /// as it is.
    fn without_no_ops(&self, ops: Vec<Op>) -> Vec<Op> {
        let mut promise = self.mem.get_promise().ok().flatten();
        let mut accepted = self.mem.get_accepted_round().ok().flatten();
        let mut decided = self.mem.get_decided_idx().ok().map(|d| d as u64);
        let mut tracking = true;
        let mut kept = Vec::with_capacity(ops.len());
        for op in ops {
            let skip = match &op {
                Op::Append(es) => es.is_empty(),
                _ if !tracking => false,
                Op::Promise(b) => promise.replace(*b) == Some(*b),
                Op::Accepted(b) => accepted.replace(*b) == Some(*b),
                Op::Decided(i) => decided.replace(*i) == Some(*i),
                _ => {
                    tracking = false;
                    false
                }
            };
            if !skip {
                kept.push(op);
            }
        }
        kept
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Creates `path` holding `content`, atomically and durably (temporary file, sync, rename,
/// directory sync).
fn write_new_file(path: &Path, content: &[u8]) -> Result<(), DiskError> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(content).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_parent(path)
}

impl Storage<LogEntry> for DiskStorage {
    fn write_atomically(&mut self, ops: Vec<StorageOp<LogEntry>>) -> StorageResult<()> {
        let ops = self.without_no_ops(ops.into_iter().filter_map(to_op).collect());
        Ok(self.write_ops(ops)?)
    }
    fn append_entry(&mut self, entry: LogEntry) -> StorageResult<()> {
        self.write_one(StorageOp::AppendEntry(entry))
    }
    fn append_entries(&mut self, entries: Vec<LogEntry>) -> StorageResult<()> {
        self.write_one(StorageOp::AppendEntries(entries))
    }
    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<LogEntry>) -> StorageResult<()> {
        self.write_one(StorageOp::AppendOnPrefix(from_idx, entries))
    }
    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.write_one(StorageOp::SetPromise(n_prom))
    }
    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.write_one(StorageOp::SetDecidedIndex(ld))
    }
    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.mem.get_decided_idx()
    }
    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.write_one(StorageOp::SetAcceptedRound(na))
    }
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.mem.get_accepted_round()
    }
    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<LogEntry>> {
        self.mem.get_entries(from, to)
    }
    fn get_log_len(&self) -> StorageResult<usize> {
        self.mem.get_log_len()
    }
    fn get_suffix(&self, from: usize) -> StorageResult<Vec<LogEntry>> {
        self.mem.get_suffix(from)
    }
    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.mem.get_promise()
    }
    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.write_one(StorageOp::SetStopsign(s))
    }
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.mem.get_stopsign()
    }
    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.write_one(StorageOp::Trim(idx))
    }
    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.write_one(StorageOp::SetCompactedIdx(idx))
    }
    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.mem.get_compacted_idx()
    }
    fn set_snapshot(&mut self, _: Option<NoSnapshot>) -> StorageResult<()> {
        Ok(())
    }
    fn get_snapshot(&self) -> StorageResult<Option<NoSnapshot>> {
        Ok(None)
    }
}
