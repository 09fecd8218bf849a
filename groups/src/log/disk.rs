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
//! # What fsync covers: group commit
//!
//! Every mutating call of the [`Storage`] trait (omnipaxos calls `write_atomically` for its
//! multi-part updates, and `set_promise`, `set_decided_idx`, `append_entries`, `set_stopsign`
//! on their own) updates the in-memory image at once and queues its operations (calls that
//! change nothing queue nothing). [`WalSync::sync`] writes everything queued as ONE record and
//! calls `File::sync_data` once. The node ([`crate::node::GroupsNode`]) holds a [`WalSync`] of
//! each of its durable logs and syncs them before any message leaves it (`take_outgoing`; the
//! leader's replication messages excepted, below) and before it hands any decision up
//! (`take_delivered`, `take_entries`), so no promise and no acceptance is
//! counted by anyone for state that is not on disk, and all that one loop iteration of a runtime did to a log (every batch of
//! entries an `AcceptDecide` hands a follower, the leader's appends of every proposal that
//! arrived, the promises and rounds) costs one fsync per log: that is the group commit.
//!
//! A decided index alone is never a reason to sync: it is queued and goes to disk with the
//! next record that must be synced (or at a clean close). Losing it (a crash before that
//! record) only moves the decided index back to an earlier one; every entry up to the true
//! one was accepted by a majority, which keeps it, and the node learns the decided index
//! again from its log's leader. Syncing a later record makes it durable as well, since the
//! file is written in order and `fdatasync` covers all of it.
//!
//! Pipelined with the network: each turn, before its application takes deliveries (which
//! syncs), the TCP runtime sends the leader's replication messages (`AcceptDecide`, `Decide`,
//! each behind nothing else to the same peer;
//! [`crate::node::GroupsNode::take_replication_before_sync`]), then the sync, then the rest,
//! so the leader's fsync overlaps the followers'. The leader counts its own acceptance of entries it has not synced yet, but only together with a
//! follower's, which it handles in a later turn of its loop, after this turn's sync: every
//! acceptance it counts is on disk by then. A leader that crashes before its sync loses
//! entries nobody learned were decided (followers may hold them; a new leader keeps them or
//! not, as after any leader crash). A failed sync cannot be rolled back (the image already
//! holds its operations): the store is poisoned, the node stops
//! ([`crate::node::GroupsNode::stopped`]) and sends nothing more.
//!
//! With [`DiskOptions::group_commit`] off (`wal_group_commit = false` in `[tuning]`), every
//! call writes one record and syncs it before it returns, and the image is updated only after
//! the sync; a failed write is rolled back (the file truncated to its previous length, the
//! image untouched; if even the truncation fails, the store refuses every later write,
//! [`DiskError::Poisoned`]).
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
//! [`DiskOptions::compact_bytes`] (64 MiB by default; `wal_compact_bytes` in `[tuning]`) and the encoded current state is less than
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
use std::sync::{Arc, Mutex};

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
    /// Group commit (the default; module docs): a mutating call updates the image at once and
    /// queues its operations; [`WalSync::sync`] writes everything queued as one record and
    /// syncs it once, and the node calls it before any message leaves or any decision is
    /// handed up. Off: every call writes its own record and syncs before it returns (what
    /// the store did first; kept to measure against).
    pub group_commit: bool,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            compact_bytes: 64 << 20,
            group_commit: true,
        }
    }
}

/// Counters of one store since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Records appended (one per mutating call, or with group commit one per sync that had
    /// something to write).
    pub records: u64,
    /// `sync_data` calls on the file (compactions not counted).
    pub syncs: u64,
    pub bytes_written: u64,
    pub compactions: u64,
    /// Bytes of a torn tail cut off at open (0 if the file ended cleanly).
    pub torn_tail_bytes: u64,
}

/// One storage operation as written to disk (`StorageOp` without the snapshot, which we never
/// use: `LogEntry`'s snapshot type is `NoSnapshot`).
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// The file side of a store, shared with the node's [`WalSync`] handle (omnipaxos owns the
/// store itself).
struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes of the file that hold complete records (the file's length between writes).
    len: u64,
    poisoned: bool,
    stats: DiskStats,
    /// Group commit: operations applied to the image but not in the file yet.
    queued: Vec<Op>,
    /// Whether `queued` holds anything but decided indexes (which need no sync of their own:
    /// module docs).
    must_sync: bool,
}

impl Wal {
    fn poisoned_err(&self) -> DiskError {
        DiskError::Poisoned {
            path: self.path.clone(),
        }
    }

    /// Appends one record and syncs it; on failure, truncates back (or poisons the store).
    fn append_record(&mut self, rec: &Record) -> Result<(), DiskError> {
        if self.poisoned {
            return Err(self.poisoned_err());
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
        self.stats.syncs += 1;
        self.stats.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// Queues operations already applied to the image (group commit). Consecutive decided
    /// indexes keep only the last.
    fn queue(&mut self, ops: Vec<Op>) {
        for op in ops {
            match (&op, self.queued.last_mut()) {
                (Op::Decided(i), Some(Op::Decided(last))) => *last = *i,
                (Op::Decided(_), _) => self.queued.push(op),
                _ => {
                    self.must_sync = true;
                    self.queued.push(op);
                }
            }
        }
    }

    /// Writes what is queued as one record and syncs it, if anything queued needs it (or
    /// `all`, for a clean close). A failure poisons the store: the image already holds the
    /// operations, so it cannot be rolled back.
    fn sync(&mut self, all: bool) -> Result<bool, DiskError> {
        if self.poisoned {
            return Err(self.poisoned_err());
        }
        if !(self.must_sync || all && !self.queued.is_empty()) {
            return Ok(false);
        }
        let rec = Record::Ops(std::mem::take(&mut self.queued));
        self.must_sync = false;
        let res = self.append_record(&rec);
        if res.is_err() {
            self.poisoned = true;
        }
        res.map(|()| true)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.sync(true) {
            tracing::warn!(error = %e, "closing a log file: its last operations were not written");
        }
    }
}

/// The node's handle on a store that omnipaxos owns: syncs what the store queued (group
/// commit, see the module docs).
#[derive(Clone)]
pub struct WalSync(Arc<Mutex<Wal>>);

impl WalSync {
    /// Writes and syncs everything queued that must be durable; `Ok(true)` if it synced.
    /// After an error the store refuses every write ([`DiskError::Poisoned`]) and the node
    /// must stop.
    pub fn sync(&self) -> Result<bool, DiskError> {
        lock(&self.0).sync(false)
    }

    /// Whether the next [`WalSync::sync`] has something to sync.
    pub fn must_sync(&self) -> bool {
        lock(&self.0).must_sync
    }
}

fn lock(wal: &Mutex<Wal>) -> std::sync::MutexGuard<'_, Wal> {
    // Nothing panics while holding it; a poisoned lock still holds a consistent `Wal`.
    wal.lock().unwrap_or_else(|p| p.into_inner())
}

/// One log's acceptor state, durable. See the module docs.
pub struct DiskStorage {
    mem: MemStorage,
    wal: Arc<Mutex<Wal>>,
    /// Length at which compaction is next considered.
    next_compact_check: u64,
    opts: DiskOptions,
}

impl std::fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = lock(&self.wal);
        f.debug_struct("DiskStorage")
            .field("path", &w.path)
            .field("len", &w.len)
            .field("stats", &w.stats)
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
            wal: Arc::new(Mutex::new(Wal {
                file,
                path,
                len,
                poisoned: false,
                stats: DiskStats {
                    torn_tail_bytes: torn,
                    ..DiskStats::default()
                },
                queued: Vec::new(),
                must_sync: false,
            })),
            // Checked at the first write: a file reopened past the threshold is compacted then if
            // mostly dead (starting from twice its length instead let every restart double how
            // large a file could grow before the next check).
            next_compact_check: opts.compact_bytes,
            opts,
        })
    }

    /// The file this store writes.
    pub fn path(&self) -> PathBuf {
        lock(&self.wal).path.clone()
    }

    /// Current length of the file in bytes (what is queued for the next sync not counted).
    pub fn file_len(&self) -> u64 {
        lock(&self.wal).len
    }

    pub fn stats(&self) -> DiskStats {
        lock(&self.wal).stats
    }

    /// A handle that syncs this store after it has moved into omnipaxos.
    pub fn sync_handle(&self) -> WalSync {
        WalSync(self.wal.clone())
    }

    /// Writes and syncs everything queued (group commit), decided indexes included;
    /// `Ok(true)` if there was anything. See [`WalSync::sync`] for errors.
    pub fn sync(&mut self) -> Result<bool, DiskError> {
        lock(&self.wal).sync(true)
    }

    /// A copy of the whole state (what a reopen would recover).
    pub fn image(&self) -> StorageImage {
        self.mem.image()
    }

    /// Rewrites the file as one image record if it is large and mostly dead (module docs).
    fn maybe_compact(&mut self) {
        let mut wal = lock(&self.wal);
        if wal.len < self.next_compact_check || wal.poisoned {
            return;
        }
        let image = Record::Image(self.mem.image());
        let Some(bytes) = bitcode::serialize(&image).ok().and_then(|p| frame(&p)) else {
            return;
        };
        let live = (MAGIC.len() + bytes.len()) as u64;
        if live.saturating_mul(2) > wal.len {
            self.next_compact_check = self.opts.compact_bytes.max(live.saturating_mul(2));
            return;
        }
        let mut content = MAGIC.to_vec();
        content.extend_from_slice(&bytes);
        match replace_file(&wal.path, &content) {
            Ok(file) => {
                tracing::debug!(path = %wal.path.display(), from = wal.len, to = live, "log file compacted");
                wal.file = file;
                wal.len = live;
                wal.stats.compactions += 1;
                // The image (synced with the new file) holds everything queued.
                wal.queued.clear();
                wal.must_sync = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "log file compaction failed; keeping the old file")
            }
        }
        self.next_compact_check = self.opts.compact_bytes.max(wal.len.saturating_mul(2));
    }
}

fn replace_file(path: &Path, content: &[u8]) -> Result<File, DiskError> {
    let tmp = tmp_path(path);
    let res = (|| {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(content).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        sync_parent(path)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

impl DiskStorage {
    fn write_ops(&mut self, ops: Vec<Op>) -> Result<(), DiskError> {
        if ops.is_empty() {
            return Ok(());
        }
        if self.opts.group_commit {
            let mut wal = lock(&self.wal);
            if wal.poisoned {
                return Err(wal.poisoned_err());
            }
            let mut queued = Vec::with_capacity(ops.len());
            for op in ops {
                // `apply` consumes; the queue keeps what the file must get.
                queued.push(op.clone());
                apply(&mut self.mem, op);
            }
            wal.queue(queued);
        } else {
            let rec = Record::Ops(ops);
            lock(&self.wal).append_record(&rec)?;
            let Record::Ops(ops) = rec else {
                unreachable!()
            };
            ops.into_iter().for_each(|op| apply(&mut self.mem, op));
        }
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
