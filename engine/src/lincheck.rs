//! # Linearizability checking of recorded client histories
//!
//! A *history* is a slice of [`Operation`]s. Each was invoked by a client at time `call` and
//! either completed at time `ret` with an output, or has an *unknown outcome* (`ret == None`: the
//! client timed out or crashed before it saw a reply). Times are `u64` in any unit, taken from one
//! clock (or clocks whose skew is accounted for by the recorder).
//!
//! ## Semantics
//!
//! The history is *linearizable* iff there is a total order of all completed operations plus any
//! subset of the unknown-outcome operations such that
//!
//! * real time is respected: if `a.ret < b.call` then `a` precedes `b` (equal timestamps impose no
//!   order: an operation that returned at `t` and one invoked at `t` are concurrent), and
//! * replaying the order through the sequential specification ([`Model::step`]) from
//!   [`Model::init`] accepts every output that was observed.
//!
//! An unknown-outcome operation may take effect at any single point after its call, or never; if
//! it takes effect its output is unobserved, so [`Model::step`] is called with `output == None`
//! and must accept any output. It has no return time, so it never forces anything to come after
//! it. A recorded return time earlier than the call time is treated as equal to the call time.
//!
//! ## Algorithm
//!
//! Wing & Gong's search with Lowe's memoization, as in Porcupine (Athalye), with an explicit stack
//! so long histories cannot overflow the call stack:
//!
//! 1. The call and return *entries* of the completed operations are sorted by
//!    `(time, kind, operation)` with calls before returns at equal times, so a return at `t` is
//!    never ordered before a call at `t` (that would wrongly order the two operations). They form
//!    a doubly linked list over indices ("dancing links": removal and LIFO re-insertion are O(1)).
//!    Unknown-outcome operations have only a call entry, kept in a second list sorted by call
//!    time.
//! 2. Depth first: the *candidates* for the next linearization point are the completed
//!    operations whose call entry precedes the first remaining return entry (time `t`), then the
//!    unknown-outcome operations with `call <= t`. (Trying unknown-outcome operations last only
//!    changes the order in which the same candidates are tried; it finds linearizable histories
//!    faster, since most lost operations matter only when a completed one cannot be placed.)
//! 3. Linearizing a candidate applies [`Model::step`]; if it is accepted and the configuration
//!    (set of linearized operations, new state) has not been seen before, the operation's
//!    entries are unlinked, the previous state is pushed and the search continues from the first
//!    candidate. Otherwise the next candidate is tried. When no candidate is left, the search
//!    backtracks: it pops the last linearized operation, re-links its entries, restores the
//!    state and tries the candidate after it.
//! 4. Success once no return entry remains (unknown-outcome operations left over simply never
//!    took effect). Failure when backtracking with an empty stack.
//!
//! The memo (Lowe's cache) is an `FxHashMap`. The set of linearized operations is kept as two
//! `Vec<u64>` bitsets, one over the completed operations (numbered in call order) and one over
//! the unknown-outcome ones. Every configuration the search reaches has linearized all completed
//! operations that returned before the first remaining return and none invoked after it, so the
//! completed bitset is all ones, a window about as wide as the concurrency, then all zeros: the
//! memo key stores only that window (with its offset), which keeps memory linear rather than
//! quadratic in the length of a part. States are interned (numbered once, shared through `Rc`),
//! so keys and the stack hold numbers. The unknown-outcome sets are compared by inclusion rather
//! than equality: a configuration is pruned when one with the same completed set and state but a
//! *subset* of its linearized unknown-outcome operations was seen, since those extra lost
//! operations could as well never have taken effect. For the same reason an unknown-outcome operation whose step
//! leaves the state unchanged (e.g. a lost read) is never linearized.
//!
//! ## Partitioning (P-compositionality)
//!
//! [`Model::keys`] names the keys an operation touches. Operations whose key sets intersect,
//! transitively, form one *part* (union-find); [`Keys::All`] anywhere in the history makes the
//! whole history one part. Each part is checked on its own from [`Model::init`], and the history
//! is linearizable iff every part is. This is sound when the model's state is a product over keys
//! and each operation's step reads and writes only the components of the keys it names (then the
//! components of keys outside a part stay at their initial value and never influence the part's
//! operations). There is no per-part restriction of the model: a part's states simply only ever
//! contain what its own operations put there (for [`models::KvMap`], the part's keys).
//!
//! ## Budget
//!
//! [`Budget::states_max`] bounds the number of [`Model::step`] evaluations (candidate
//! linearization points tried), summed over all parts. When it runs out, [`check`] stops and
//! returns [`Verdict::Unknown`]; parts not yet checked are not examined. Parts are checked in the
//! order of their smallest operation index, and the first part found not linearizable is
//! reported. Memory grows with the number of configurations visited (each costs a few words
//! plus the window) and of distinct states. A linearizable history is usually confirmed by a
//! nearly greedy descent; refuting one is an exhaustive search of the configurations before the
//! violation, which is where partitioning and few unknown outcomes pay off most.

use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::hash_map::Entry;
use std::fmt::{self, Write as _};
use std::hash::Hash;
use std::rc::Rc;

/// The sequential specification.
pub trait Model {
    /// The specification's state; hashed for memoization, so keep it small.
    type State: Clone + Eq + Hash + fmt::Debug;
    type Input: fmt::Debug;
    type Output: fmt::Debug;

    /// The initial state (also the initial state of every part).
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`. `output` is `None` for an operation whose outcome is unknown
    /// (any output is acceptable). Returns the next state if `output` is what the specification
    /// allows from `state`, `None` otherwise. Must be deterministic.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// The keys an operation touches, for checking independent parts of a history separately
    /// (P-compositionality). Operations whose key sets intersect (transitively) are checked
    /// together. Default: [`Keys::All`] (one part). An operation with an empty key set must not
    /// depend on the state at all: it is checked alone, from [`Model::init`].
    fn keys(&self, _input: &Self::Input) -> Keys {
        Keys::All
    }
}

/// The keys an operation touches; see [`Model::keys`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Keys {
    /// The operation may touch any key: the whole history is checked as one part.
    All,
    /// The operation touches exactly these keys.
    Some(Vec<u64>),
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Operation<I, O> {
    /// The client that invoked it (informational: real-time order comes from the timestamps).
    pub client: u64,
    pub input: I,
    /// Invocation time.
    pub call: u64,
    /// Return time and output, or `None` if the outcome is unknown.
    pub ret: Option<(u64, O)>,
}

impl<I, O> Operation<I, O> {
    /// An operation that completed at `ret` with `output`.
    pub fn completed(client: u64, input: I, call: u64, ret: u64, output: O) -> Self {
        Self {
            client,
            input,
            call,
            ret: Some((ret, output)),
        }
    }

    /// An operation invoked at `call` whose outcome is unknown.
    pub fn unknown(client: u64, input: I, call: u64) -> Self {
        Self {
            client,
            input,
            call,
            ret: None,
        }
    }

    /// The observed output, `None` if the outcome is unknown.
    pub fn output(&self) -> Option<&O> {
        self.ret.as_ref().map(|(_, output)| output)
    }

    /// The return time (never before the call time), `None` if the outcome is unknown.
    fn return_time(&self) -> Option<u64> {
        self.ret.as_ref().map(|(ret, _)| (*ret).max(self.call))
    }
}

/// The outcome of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// `operations`: indices (into the input slice, ascending) of the part that has no
    /// linearization; `detail`: a human-readable explanation (the longest linearizable prefix
    /// found, the state after it and the operations that could not be placed next).
    NotLinearizable {
        operations: Vec<usize>,
        detail: String,
    },
    /// The search exceeded its budget (`explored` step evaluations) without a verdict.
    Unknown {
        explored: u64,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable { operations, detail } => {
                const SHOWN: usize = 32;
                let shown = &operations[..operations.len().min(SHOWN)];
                write!(f, "not linearizable (operations {shown:?}")?;
                if operations.len() > SHOWN {
                    write!(f, " and {} more", operations.len() - SHOWN)?;
                }
                write!(f, "): {detail}")
            }
            Verdict::Unknown { explored } => {
                write!(
                    f,
                    "unknown: search budget exhausted after {explored} states"
                )
            }
        }
    }
}

/// Limits on the search; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Maximum number of [`Model::step`] evaluations, summed over all parts.
    pub states_max: u64,
}

impl Budget {
    pub const DEFAULT_STATES_MAX: u64 = 10_000_000;

    pub const fn new(states_max: u64) -> Self {
        Self { states_max }
    }

    pub const fn unlimited() -> Self {
        Self {
            states_max: u64::MAX,
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(Self::DEFAULT_STATES_MAX)
    }
}

/// Splits `history` into independent parts (see [`Model::keys`]): each part is the ascending list
/// of its operations' indices, and parts are ordered by their smallest index.
pub fn partition<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
) -> Vec<Vec<usize>> {
    let n = history.len();
    if n == 0 {
        return Vec::new();
    }
    let mut sets = UnionFind::new(n);
    let mut owner: FxHashMap<u64, usize> = FxHashMap::default();
    for (i, op) in history.iter().enumerate() {
        match model.keys(&op.input) {
            Keys::All => return vec![(0..n).collect()],
            Keys::Some(keys) => {
                for key in keys {
                    match owner.entry(key) {
                        Entry::Occupied(first) => sets.union(*first.get(), i),
                        Entry::Vacant(slot) => {
                            slot.insert(i);
                        }
                    }
                }
            }
        }
    }
    let mut part_of_root: FxHashMap<usize, usize> = FxHashMap::default();
    let mut parts: Vec<Vec<usize>> = Vec::new();
    for i in 0..n {
        let root = sets.find(i);
        let part = *part_of_root.entry(root).or_insert_with(|| {
            parts.push(Vec::new());
            parts.len() - 1
        });
        parts[part].push(i);
    }
    parts
}

/// Checks whether `history` is linearizable with respect to `model`.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: Budget,
) -> Verdict {
    let mut explored = 0u64;
    for part in partition(model, history) {
        match search(model, history, &part, budget.states_max, &mut explored) {
            Outcome::Linearizable => {}
            Outcome::Exhausted => return Verdict::Unknown { explored },
            Outcome::Violation { longest_prefix } => {
                let detail = describe(model, history, &part, &longest_prefix);
                return Verdict::NotLinearizable {
                    operations: part,
                    detail,
                };
            }
        }
    }
    Verdict::Linearizable
}

struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        let (big, small) = if self.size[a] >= self.size[b] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[small] = big;
        self.size[big] += self.size[small];
    }
}

const NONE: usize = usize::MAX;
/// Sentinels of the list of completed operations' call and return entries.
const HEAD: usize = 0;
const TAIL: usize = 1;
/// Sentinels of the list of unknown-outcome operations' call entries.
const UNKNOWN_HEAD: usize = 2;
const UNKNOWN_TAIL: usize = 3;
const FIRST_ENTRY: usize = 4;

/// Two index-linked lists of entries sharing one arena.
///
/// Operations get part-local numbers: the completed ones `0..completed` in the order of their
/// call times, then the unknown-outcome ones.
struct Entries {
    prev: Vec<usize>,
    next: Vec<usize>,
    /// The local operation of each entry.
    op: Vec<usize>,
    time: Vec<u64>,
    /// Return entries, and `TAIL` (which bounds the candidates like a return at infinity).
    is_return: Vec<bool>,
    /// Per local operation: its return entry, `NONE` for an unknown-outcome operation.
    return_entry: Vec<usize>,
    /// Per local operation: its index in the history.
    global: Vec<usize>,
    /// Number of completed operations.
    completed: usize,
    /// Number of return entries still linked.
    returns: usize,
}

impl Entries {
    fn build<I, O>(history: &[Operation<I, O>], part: &[usize]) -> Self {
        let mut completed: Vec<(u64, u64, usize)> = Vec::with_capacity(part.len());
        let mut unknown: Vec<(u64, usize)> = Vec::new();
        for &i in part {
            let op = &history[i];
            match op.return_time() {
                Some(ret) => completed.push((op.call, ret, i)),
                None => unknown.push((op.call, i)),
            }
        }
        completed.sort_unstable();
        unknown.sort_unstable();
        let global: Vec<usize> = completed
            .iter()
            .map(|&(_, _, i)| i)
            .chain(unknown.iter().map(|&(_, i)| i))
            .collect();

        // (time, is_return, local operation): `false < true`, so at equal times calls sort
        // before returns.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * completed.len());
        for (j, &(call, ret, _)) in completed.iter().enumerate() {
            events.push((call, false, j));
            events.push((ret, true, j));
        }
        events.sort_unstable();

        let total = FIRST_ENTRY + events.len() + unknown.len();
        let mut entries = Entries {
            prev: vec![NONE; total],
            next: vec![NONE; total],
            op: vec![NONE; total],
            time: vec![0; total],
            is_return: vec![false; total],
            return_entry: vec![NONE; part.len()],
            global,
            completed: completed.len(),
            returns: completed.len(),
        };
        entries.time[TAIL] = u64::MAX;
        entries.is_return[TAIL] = true;
        entries.time[UNKNOWN_TAIL] = u64::MAX;

        let mut last = HEAD;
        for (k, &(time, is_return, j)) in events.iter().enumerate() {
            let e = FIRST_ENTRY + k;
            entries.op[e] = j;
            entries.time[e] = time;
            entries.is_return[e] = is_return;
            if is_return {
                entries.return_entry[j] = e;
            }
            entries.next[last] = e;
            entries.prev[e] = last;
            last = e;
        }
        entries.next[last] = TAIL;
        entries.prev[TAIL] = last;

        let mut last = UNKNOWN_HEAD;
        for (k, &(time, _)) in unknown.iter().enumerate() {
            let e = FIRST_ENTRY + events.len() + k;
            entries.op[e] = completed.len() + k;
            entries.time[e] = time;
            entries.next[last] = e;
            entries.prev[e] = last;
            last = e;
        }
        entries.next[last] = UNKNOWN_TAIL;
        entries.prev[UNKNOWN_TAIL] = last;
        entries
    }

    fn unlink(&mut self, e: usize) {
        let (prev, next) = (self.prev[e], self.next[e]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Undoes `unlink(e)`; unlinks must be undone in reverse order.
    fn relink(&mut self, e: usize) {
        let (prev, next) = (self.prev[e], self.next[e]);
        self.next[prev] = e;
        self.prev[next] = e;
    }

    /// Removes the operation of call entry `e` (and its return entry) from the lists.
    fn lift(&mut self, e: usize) {
        self.unlink(e);
        let ret = self.return_entry[self.op[e]];
        if ret != NONE {
            self.unlink(ret);
            self.returns -= 1;
        }
    }

    /// Undoes `lift(e)`.
    fn unlift(&mut self, e: usize) {
        let ret = self.return_entry[self.op[e]];
        if ret != NONE {
            self.relink(ret);
            self.returns += 1;
        }
        self.relink(e);
    }
}

/// The set of linearized operations: a bitset over the completed operations (in call order) and
/// one over the unknown-outcome ones.
///
/// Every configuration the search reaches has linearized all completed operations that returned
/// before the first remaining return, and none invoked after it, so the completed bitset is all
/// ones, then a window about as wide as the history's concurrency, then all zeros. The memo key
/// stores only the window ([`Linearized::window_key`]), which keeps memory linear in the length
/// of the history rather than quadratic.
struct Linearized {
    done: Vec<u64>,
    lost: Vec<u64>,
    completed: usize,
    /// The first word of `done` that is not full.
    low: usize,
    /// One past the last nonzero word of `done`.
    high: usize,
}

impl Linearized {
    fn new(completed: usize, unknown: usize) -> Self {
        Self {
            done: vec![0; completed.div_ceil(64)],
            lost: vec![0; unknown.div_ceil(64)],
            completed,
            low: 0,
            high: 0,
        }
    }

    fn full(&self, word: usize) -> u64 {
        let rest = self.completed - 64 * word;
        if rest >= 64 {
            u64::MAX
        } else {
            (1 << rest) - 1
        }
    }

    fn insert(&mut self, j: usize) {
        if j >= self.completed {
            let k = j - self.completed;
            self.lost[k / 64] |= 1 << (k % 64);
            return;
        }
        let word = j / 64;
        self.done[word] |= 1 << (j % 64);
        self.high = self.high.max(word + 1);
        while self.low < self.done.len() && self.done[self.low] == self.full(self.low) {
            self.low += 1;
        }
    }

    fn remove(&mut self, j: usize) {
        if j >= self.completed {
            let k = j - self.completed;
            self.lost[k / 64] &= !(1 << (k % 64));
            return;
        }
        let word = j / 64;
        self.done[word] &= !(1 << (j % 64));
        self.low = self.low.min(word);
        if word + 1 == self.high {
            while self.high > 0 && self.done[self.high - 1] == 0 {
                self.high -= 1;
            }
        }
    }

    /// Identifies the completed operations linearized and the state: `state`, `low`, then the
    /// words from `low` to the last nonzero one (all words before `low` are full, all after the
    /// slice are zero).
    fn window_key(&self, state: usize) -> Box<[u64]> {
        let mut key = Vec::with_capacity(2 + self.high.saturating_sub(self.low));
        key.push(state as u64);
        key.push(self.low as u64);
        key.extend_from_slice(&self.done[self.low..self.high.max(self.low)]);
        key.into_boxed_slice()
    }
}

/// Whether every bit of `a` is set in `b`.
fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(a, b)| a & !b == 0)
}

/// Where the search looks for the next candidate.
#[derive(Clone, Copy)]
enum Cursor {
    /// At an entry of the completed operations' list.
    Completed(usize),
    /// At an entry of the unknown-outcome list; candidates there must have `call <= bound`.
    Unknown { entry: usize, bound: u64 },
}

impl Cursor {
    /// The candidate after `entry`, which was found under `bound`.
    fn after(entries: &Entries, entry: usize, bound: Option<u64>) -> Self {
        let next = entries.next[entry];
        match bound {
            None => Cursor::Completed(next),
            Some(bound) => Cursor::Unknown { entry: next, bound },
        }
    }
}

struct Frame {
    /// The call entry linearized at this depth.
    entry: usize,
    /// `Some(bound)` if it came from the unknown-outcome list.
    bound: Option<u64>,
    /// The state before it.
    state: usize,
}

/// The distinct states met, numbered in order of discovery (so that the memo and the stack
/// hold numbers, not copies of states).
struct States<S> {
    all: Vec<Rc<S>>,
    ids: FxHashMap<Rc<S>, usize>,
}

impl<S: Eq + Hash> States<S> {
    fn new() -> Self {
        Self {
            all: Vec::new(),
            ids: FxHashMap::default(),
        }
    }

    fn intern(&mut self, state: S) -> usize {
        if let Some(&id) = self.ids.get(&state) {
            return id;
        }
        let id = self.all.len();
        let state = Rc::new(state);
        self.all.push(Rc::clone(&state));
        self.ids.insert(state, id);
        id
    }
}

enum Outcome {
    Linearizable,
    /// `longest_prefix`: history indices of the longest linearizable prefix found.
    Violation {
        longest_prefix: Vec<usize>,
    },
    Exhausted,
}

/// Searches for a linearization of the operations `part` of `history`.
fn search<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    part: &[usize],
    states_max: u64,
    explored: &mut u64,
) -> Outcome {
    let mut entries = Entries::build(history, part);
    let mut linearized = Linearized::new(entries.completed, part.len() - entries.completed);
    // Configurations explored (or being explored, on the stack): per (completed operations
    // linearized, state), the sets of unknown-outcome operations linearized. A configuration
    // whose unknown-outcome set is a superset of a recorded one is dominated (the extra lost
    // operations could as well never have taken effect), so it is pruned too.
    let mut seen: FxHashMap<Box<[u64]>, Vec<Box<[u64]>>> = FxHashMap::default();
    let mut states = States::new();
    let mut state = states.intern(model.init());
    let mut stack: Vec<Frame> = Vec::new();
    // The longest prefix so far; its first `best_valid` operations are those of `stack`, which
    // lets it be maintained in amortized O(1) per push.
    let mut best: Vec<usize> = Vec::new();
    let mut best_valid = 0usize;
    let mut cursor = Cursor::Completed(entries.next[HEAD]);

    loop {
        if entries.returns == 0 {
            return Outcome::Linearizable;
        }
        let (entry, bound) = match cursor {
            Cursor::Completed(e) => {
                if entries.is_return[e] {
                    let bound = entries.time[e];
                    cursor = Cursor::Unknown {
                        entry: entries.next[UNKNOWN_HEAD],
                        bound,
                    };
                    continue;
                }
                (e, None)
            }
            Cursor::Unknown { entry, bound } => {
                if entry == UNKNOWN_TAIL || entries.time[entry] > bound {
                    // No candidate left at this depth: backtrack.
                    let Some(frame) = stack.pop() else {
                        let longest_prefix = best.iter().map(|&j| entries.global[j]).collect();
                        return Outcome::Violation { longest_prefix };
                    };
                    linearized.remove(entries.op[frame.entry]);
                    entries.unlift(frame.entry);
                    state = frame.state;
                    best_valid = best_valid.min(stack.len());
                    cursor = Cursor::after(&entries, frame.entry, frame.bound);
                    continue;
                }
                (entry, Some(bound))
            }
        };

        if *explored >= states_max {
            return Outcome::Exhausted;
        }
        *explored += 1;
        let j = entries.op[entry];
        let op = &history[entries.global[j]];
        let output = op.output();
        let mut accepted = None;
        if let Some(next_state) = model.step(&states.all[state], &op.input, output) {
            let next_state = states.intern(next_state);
            // A lost operation that changes nothing is better left out (see the module docs).
            if output.is_some() || next_state != state {
                linearized.insert(j);
                match seen.entry(linearized.window_key(next_state)) {
                    Entry::Vacant(slot) => {
                        slot.insert(vec![linearized.lost.clone().into_boxed_slice()]);
                        accepted = Some(next_state);
                    }
                    Entry::Occupied(mut slot) => {
                        let lost = &linearized.lost;
                        if !slot.get().iter().any(|known| is_subset(known, lost)) {
                            let sets = slot.get_mut();
                            sets.retain(|known| !is_subset(lost, known));
                            sets.push(lost.clone().into_boxed_slice());
                            accepted = Some(next_state);
                        }
                    }
                }
                if accepted.is_none() {
                    linearized.remove(j);
                }
            }
        }
        cursor = match accepted {
            Some(next_state) => {
                let previous = std::mem::replace(&mut state, next_state);
                stack.push(Frame {
                    entry,
                    bound,
                    state: previous,
                });
                entries.lift(entry);
                if stack.len() > best.len() {
                    best.truncate(best_valid);
                    best.extend(stack[best_valid..].iter().map(|f| entries.op[f.entry]));
                    best_valid = stack.len();
                }
                Cursor::Completed(entries.next[HEAD])
            }
            None => Cursor::after(&entries, entry, bound),
        };
    }
}

/// How many operations the explanation lists at most per section.
const LISTED_MAX: usize = 12;
/// How many characters of the state's `Debug` form the explanation shows at most.
const STATE_CHARS_MAX: usize = 1000;

fn describe_op<I: fmt::Debug, O: fmt::Debug>(index: usize, op: &Operation<I, O>) -> String {
    match &op.ret {
        Some((ret, output)) => format!(
            "#{index} client {}: {:?} -> {:?} [{}, {}]",
            op.client, op.input, output, op.call, ret
        ),
        None => format!(
            "#{index} client {}: {:?} -> unknown outcome [{}, ...)",
            op.client, op.input, op.call
        ),
    }
}

fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Explains why the operations `part` of `history` have no linearization; `prefix` holds the
/// history indices of the longest linearizable prefix found.
fn describe<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    part: &[usize],
    prefix: &[usize],
) -> String {
    let unknown = part.iter().filter(|&&i| history[i].ret.is_none()).count();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "no linearization of a part of {} operations ({} completed, {unknown} with unknown \
         outcome); the longest linearizable prefix found has {} operations",
        part.len(),
        part.len() - unknown,
        prefix.len()
    );
    let skipped = prefix.len().saturating_sub(LISTED_MAX);
    if skipped > 0 {
        let _ = writeln!(text, "  ... {skipped} earlier operations");
    }
    for &i in &prefix[skipped..] {
        let _ = writeln!(text, "  {}", describe_op(i, &history[i]));
    }

    let mut state = model.init();
    for &i in prefix {
        let op = &history[i];
        match model.step(&state, &op.input, op.output()) {
            Some(next) => state = next,
            None => break,
        }
    }
    let _ = writeln!(
        text,
        "state after that prefix: {}",
        truncated(format!("{state:?}"), STATE_CHARS_MAX)
    );

    let placed: FxHashSet<usize> = prefix.iter().copied().collect();
    let remaining = || part.iter().copied().filter(|i| !placed.contains(i));
    let blocker = remaining()
        .filter_map(|i| history[i].return_time().map(|ret| (ret, i)))
        .min();
    if let Some((deadline, b)) = blocker {
        let candidates: Vec<usize> = remaining()
            .filter(|&i| history[i].call <= deadline)
            .collect();
        let _ = writeln!(
            text,
            "{} must take effect by time {deadline}, but none of these {} operations can be \
             linearized next (each is rejected by the specification or leads to a dead end):",
            describe_op(b, &history[b]),
            candidates.len()
        );
        for &i in candidates.iter().take(LISTED_MAX) {
            let _ = writeln!(text, "  {}", describe_op(i, &history[i]));
        }
        if candidates.len() > LISTED_MAX {
            let _ = writeln!(text, "  ... {} more", candidates.len() - LISTED_MAX);
        }
    }
    while text.ends_with('\n') {
        text.pop();
    }
    text
}

/// Ready-made sequential specifications.
pub mod models {
    use super::{Keys, Model};
    use std::collections::BTreeMap;

    /// A single `u64` register with read, write and compare-and-set. Keys: [`Keys::All`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Register {
        /// The register's value before the history starts.
        pub initial: u64,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum RegisterInput {
        Read,
        Write(u64),
        /// Sets the register to `new` if it holds `expect`.
        Cas {
            expect: u64,
            new: u64,
        },
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum RegisterOutput {
        /// Output of `Read`.
        Value(u64),
        /// Output of `Write`.
        Ok,
        /// Output of `Cas`: whether it swapped.
        Cas(bool),
    }

    impl Model for Register {
        type State = u64;
        type Input = RegisterInput;
        type Output = RegisterOutput;

        fn init(&self) -> u64 {
            self.initial
        }

        fn step(
            &self,
            state: &u64,
            input: &RegisterInput,
            output: Option<&RegisterOutput>,
        ) -> Option<u64> {
            match (input, output) {
                (RegisterInput::Read, None) => Some(*state),
                (RegisterInput::Read, Some(RegisterOutput::Value(v))) => {
                    (v == state).then_some(*state)
                }
                (RegisterInput::Write(v), None | Some(RegisterOutput::Ok)) => Some(*v),
                (RegisterInput::Cas { expect, new }, output) => {
                    let swapped = state == expect;
                    match output {
                        None => {}
                        Some(RegisterOutput::Cas(observed)) if *observed == swapped => {}
                        Some(_) => return None,
                    }
                    Some(if swapped { *new } else { *state })
                }
                _ => None,
            }
        }
    }

    /// Scans over more keys than this are treated as touching every key ([`Keys::All`]).
    pub const SCAN_KEYS_MAX: u64 = 4096;

    /// A map `u64 -> Vec<u8>`, initially empty.
    ///
    /// Keys: single-key operations touch their key; `Scan { lo, hi }` touches every key in
    /// `[lo, hi)`, so it joins the parts of all those keys (keep scan ranges small, or the history
    /// degenerates into one part; a range of more than [`SCAN_KEYS_MAX`] keys counts as
    /// [`Keys::All`]); `Size` touches everything ([`Keys::All`]).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct KvMap;

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum KvInput {
        Get(u64),
        Put(u64, Vec<u8>),
        Delete(u64),
        /// The entries with `lo <= key < hi`, sorted by key.
        Scan {
            lo: u64,
            hi: u64,
        },
        /// The number of entries.
        Size,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum KvOutput {
        /// Output of `Get`.
        Value(Option<Vec<u8>>),
        /// Output of `Put`.
        Ok,
        /// Output of `Delete`: whether the key existed.
        Deleted(bool),
        /// Output of `Scan`.
        Entries(Vec<(u64, Vec<u8>)>),
        /// Output of `Size`.
        Size(u64),
    }

    impl Model for KvMap {
        type State = BTreeMap<u64, Vec<u8>>;
        type Input = KvInput;
        type Output = KvOutput;

        fn init(&self) -> Self::State {
            BTreeMap::new()
        }

        fn step(
            &self,
            state: &Self::State,
            input: &KvInput,
            output: Option<&KvOutput>,
        ) -> Option<Self::State> {
            let accepted = match (input, output) {
                (_, None) => true,
                (KvInput::Get(k), Some(KvOutput::Value(v))) => v.as_ref() == state.get(k),
                (KvInput::Put(..), Some(KvOutput::Ok)) => true,
                (KvInput::Delete(k), Some(KvOutput::Deleted(existed))) => {
                    *existed == state.contains_key(k)
                }
                (KvInput::Scan { lo, hi }, Some(KvOutput::Entries(entries))) => {
                    if lo < hi {
                        let expected = state.range(*lo..*hi).map(|(k, v)| (*k, v));
                        expected.eq(entries.iter().map(|(k, v)| (*k, v)))
                    } else {
                        entries.is_empty()
                    }
                }
                (KvInput::Size, Some(KvOutput::Size(n))) => *n == state.len() as u64,
                _ => false,
            };
            if !accepted {
                return None;
            }
            match input {
                KvInput::Put(k, v) => {
                    let mut next = state.clone();
                    next.insert(*k, v.clone());
                    Some(next)
                }
                KvInput::Delete(k) => {
                    let mut next = state.clone();
                    next.remove(k);
                    Some(next)
                }
                KvInput::Get(_) | KvInput::Scan { .. } | KvInput::Size => Some(state.clone()),
            }
        }

        fn keys(&self, input: &KvInput) -> Keys {
            match input {
                KvInput::Get(k) | KvInput::Put(k, _) | KvInput::Delete(k) => Keys::Some(vec![*k]),
                KvInput::Scan { lo, hi } if hi <= lo => Keys::Some(Vec::new()),
                KvInput::Scan { lo, hi } if hi - lo > SCAN_KEYS_MAX => Keys::All,
                KvInput::Scan { lo, hi } => Keys::Some((*lo..*hi).collect()),
                KvInput::Size => Keys::All,
            }
        }
    }
}

/// The sequential specification of a P-SMR service: the service itself, executing each
/// command alone on the whole state (one worker). A history linearizable against it is what
/// the engine promises: replicated, parallel execution equivalent to executing the commands one
/// at a time, in an order that respects real time. (It cannot catch a bug of the service's own
/// `execute`: for that, write an independent model.) `keys` splits histories into independent
/// parts, as [`Model::keys`].
pub struct Sequential<S: crate::Service> {
    service: std::sync::Arc<S>,
    keys: fn(&S::Command) -> Keys,
}

impl<S: crate::Service> Sequential<S> {
    pub fn new(service: std::sync::Arc<S>, keys: fn(&S::Command) -> Keys) -> Self {
        Sequential { service, keys }
    }
}

impl<S: crate::Service> Model for Sequential<S>
where
    S::Shard: Clone + Eq + Hash + fmt::Debug,
{
    type State = S::Shard;
    type Input = S::Command;
    type Output = S::Reply;

    fn init(&self) -> S::Shard {
        self.service
            .shards(1)
            .pop()
            .expect("one shard for one worker")
    }

    fn step(
        &self,
        state: &S::Shard,
        input: &S::Command,
        output: Option<&S::Reply>,
    ) -> Option<S::Shard> {
        let mut next = state.clone();
        let mut one = [(0, &mut next)];
        let mut shards = crate::Shards::new(&mut one, 1);
        let reply = self
            .service
            .execute(&mut shards, input, &mut crate::Access::recording(false));
        output.is_none_or(|o| *o == reply).then_some(next)
    }

    fn keys(&self, input: &S::Command) -> Keys {
        (self.keys)(input)
    }
}

#[cfg(test)]
mod tests {
    use super::models::{
        KvInput as KI, KvMap, KvOutput as KO, Register, RegisterInput as RI, RegisterOutput as RO,
    };
    use super::*;
    use proptest::prelude::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashMap;
    use std::time::Instant;

    type RegOp = Operation<RI, RO>;
    type KvOp = Operation<KI, KO>;

    fn done<I, O>(client: u64, call: u64, ret: u64, input: I, output: O) -> Operation<I, O> {
        Operation::completed(client, input, call, ret, output)
    }

    fn lost<I, O>(client: u64, call: u64, input: I) -> Operation<I, O> {
        Operation::unknown(client, input, call)
    }

    fn check_register(history: &[RegOp]) -> Verdict {
        check(&Register::default(), history, Budget::default())
    }

    fn check_kv(history: &[KvOp]) -> Verdict {
        check(&KvMap, history, Budget::default())
    }

    fn failing_part(verdict: &Verdict) -> Vec<usize> {
        match verdict {
            Verdict::NotLinearizable { operations, .. } => operations.clone(),
            other => panic!("expected NotLinearizable, got {other}"),
        }
    }

    fn bytes(b: u8) -> Vec<u8> {
        vec![b]
    }

    /// Exhaustive reference: tries every order of every admissible subset.
    fn brute_force<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
        fn go<M: Model>(
            model: &M,
            history: &[Operation<M::Input, M::Output>],
            placed: &mut [bool],
            state: &M::State,
        ) -> bool {
            if history
                .iter()
                .zip(placed.iter())
                .all(|(op, &p)| p || op.ret.is_none())
            {
                return true;
            }
            for (x, op) in history.iter().enumerate() {
                if placed[x] {
                    continue;
                }
                let blocked = history.iter().enumerate().any(|(y, other)| {
                    y != x && !placed[y] && matches!(other.ret, Some((r, _)) if r < op.call)
                });
                if blocked {
                    continue;
                }
                if let Some(next) = model.step(state, &op.input, op.output()) {
                    placed[x] = true;
                    if go(model, history, placed, &next) {
                        return true;
                    }
                    placed[x] = false;
                }
            }
            false
        }
        let mut placed = vec![false; history.len()];
        go(model, history, &mut placed, &model.init())
    }

    // ---------------------------------------------------------------- register

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_register(&[]), Verdict::Linearizable);
        assert_eq!(check_kv(&[]), Verdict::Linearizable);
    }

    #[test]
    fn register_sequential_history_is_linearizable() {
        let h = vec![
            done(0, 0, 1, RI::Write(1), RO::Ok),
            done(1, 2, 3, RI::Read, RO::Value(1)),
            done(0, 4, 5, RI::Cas { expect: 1, new: 2 }, RO::Cas(true)),
            done(1, 6, 7, RI::Read, RO::Value(2)),
            done(0, 8, 9, RI::Cas { expect: 1, new: 3 }, RO::Cas(false)),
            done(1, 10, 11, RI::Read, RO::Value(2)),
        ];
        assert_eq!(check_register(&h), Verdict::Linearizable);
    }

    #[test]
    fn register_concurrent_overlapping_writes_and_reads_are_linearizable() {
        let h = vec![
            done(0, 0, 10, RI::Write(1), RO::Ok),
            done(1, 1, 11, RI::Write(2), RO::Ok),
            done(2, 2, 3, RI::Read, RO::Value(2)),
            done(3, 4, 12, RI::Read, RO::Value(1)),
            done(2, 13, 14, RI::Read, RO::Value(1)),
        ];
        assert_eq!(check_register(&h), Verdict::Linearizable);
    }

    #[test]
    fn register_stale_read_after_completed_write_is_not_linearizable() {
        let h = vec![
            done(0, 0, 1, RI::Write(1), RO::Ok),
            done(1, 2, 3, RI::Read, RO::Value(0)),
        ];
        let verdict = check_register(&h);
        assert_eq!(failing_part(&verdict), vec![0, 1]);
        let Verdict::NotLinearizable { detail, .. } = verdict else {
            unreachable!()
        };
        assert!(detail.contains("longest linearizable prefix found has 1 operations"));
        assert!(
            detail.contains("#1 client 1: Read -> Value(0) [2, 3]"),
            "{detail}"
        );
    }

    #[test]
    fn register_read_of_never_written_value_is_not_linearizable() {
        let h = vec![
            done(0, 0, 10, RI::Write(1), RO::Ok),
            done(1, 1, 9, RI::Read, RO::Value(7)),
        ];
        assert!(!check_register(&h).is_linearizable());
    }

    #[test]
    fn register_unknown_write_observed_later_is_linearizable() {
        let h = vec![
            lost(0, 0, RI::Write(1)),
            done(1, 1, 2, RI::Read, RO::Value(0)),
            done(1, 3, 4, RI::Read, RO::Value(1)),
            done(2, 50, 60, RI::Read, RO::Value(1)),
        ];
        assert_eq!(check_register(&h), Verdict::Linearizable);
    }

    #[test]
    fn register_unknown_write_that_never_took_effect_is_linearizable() {
        let h = vec![
            lost(0, 0, RI::Write(1)),
            done(1, 5, 6, RI::Read, RO::Value(0)),
            done(1, 10, 11, RI::Read, RO::Value(0)),
            lost(2, 12, RI::Cas { expect: 0, new: 5 }),
            done(1, 20, 21, RI::Read, RO::Value(0)),
        ];
        assert_eq!(check_register(&h), Verdict::Linearizable);
    }

    #[test]
    fn register_unknown_operation_cannot_take_effect_before_its_call() {
        let h = vec![
            done(1, 0, 1, RI::Read, RO::Value(1)),
            lost(0, 2, RI::Write(1)),
        ];
        assert!(!check_register(&h).is_linearizable());
    }

    #[test]
    fn register_unknown_operation_takes_effect_at_most_once() {
        let h = vec![
            lost(0, 0, RI::Write(1)),
            done(1, 1, 2, RI::Read, RO::Value(1)),
            done(1, 3, 4, RI::Write(0), RO::Ok),
            done(1, 5, 6, RI::Read, RO::Value(1)),
        ];
        assert!(!check_register(&h).is_linearizable());
    }

    #[test]
    fn register_equal_timestamps_are_concurrent() {
        // The read is invoked at the write's return time: it may be ordered first.
        let h = vec![
            done(0, 0, 5, RI::Write(1), RO::Ok),
            done(1, 5, 6, RI::Read, RO::Value(0)),
        ];
        assert_eq!(check_register(&h), Verdict::Linearizable);
        // A call at the same time as a lost operation's call may see its effect.
        let h = vec![
            lost(0, 5, RI::Write(1)),
            done(1, 0, 5, RI::Read, RO::Value(1)),
        ];
        assert_eq!(check_register(&h), Verdict::Linearizable);
        // One tick later the order is forced.
        let h = vec![
            done(0, 0, 4, RI::Write(1), RO::Ok),
            done(1, 5, 6, RI::Read, RO::Value(0)),
        ];
        assert!(!check_register(&h).is_linearizable());
    }

    #[test]
    fn register_instantaneous_operations_are_allowed() {
        let h = vec![
            done(0, 3, 3, RI::Write(4), RO::Ok),
            done(1, 3, 3, RI::Read, RO::Value(4)),
            done(2, 3, 3, RI::Read, RO::Value(0)),
        ];
        assert_eq!(check_register(&h), Verdict::Linearizable);
    }

    #[test]
    fn register_wrong_cas_result_is_not_linearizable() {
        let h = vec![
            done(0, 0, 1, RI::Write(1), RO::Ok),
            done(1, 2, 3, RI::Cas { expect: 1, new: 2 }, RO::Cas(false)),
        ];
        assert!(!check_register(&h).is_linearizable());
        let h = vec![
            done(0, 0, 1, RI::Write(1), RO::Ok),
            done(1, 2, 3, RI::Cas { expect: 0, new: 2 }, RO::Cas(true)),
        ];
        assert!(!check_register(&h).is_linearizable());
    }

    #[test]
    fn register_initial_value_is_respected() {
        let h = vec![done(0, 0, 1, RI::Read, RO::Value(9))];
        assert!(check(&Register { initial: 9 }, &h, Budget::default()).is_linearizable());
        assert!(!check_register(&h).is_linearizable());
    }

    #[test]
    fn exhausted_budget_gives_unknown() {
        let h = vec![
            done(0, 0, 10, RI::Write(1), RO::Ok),
            done(1, 0, 10, RI::Write(2), RO::Ok),
            done(2, 0, 10, RI::Read, RO::Value(1)),
        ];
        assert_eq!(
            check(&Register::default(), &h, Budget::new(1)),
            Verdict::Unknown { explored: 1 }
        );
        assert_eq!(
            check(&Register::default(), &h, Budget::unlimited()),
            Verdict::Linearizable
        );
    }

    #[test]
    fn verdicts_display_their_explanation() {
        let h = vec![
            done(0, 0, 1, RI::Write(1), RO::Ok),
            done(1, 2, 3, RI::Read, RO::Value(0)),
        ];
        let text = check_register(&h).to_string();
        assert!(
            text.starts_with("not linearizable (operations [0, 1]): "),
            "{text}"
        );
        assert!(text.contains("state after that prefix: 1"), "{text}");
        assert!(text.contains("must take effect by time 3"), "{text}");
        assert_eq!(Verdict::Linearizable.to_string(), "linearizable");
        assert!(Verdict::Unknown { explored: 5 }.to_string().contains('5'));
    }

    #[test]
    fn long_sequential_history_does_not_overflow_the_stack() {
        let h: Vec<RegOp> = (0..100_000u64)
            .map(|t| done(0, 2 * t, 2 * t + 1, RI::Write(t), RO::Ok))
            .collect();
        assert_eq!(check_register(&h), Verdict::Linearizable);
    }

    // ---------------------------------------------------------------- kv map

    #[test]
    fn kv_per_key_partition_reports_only_the_bad_key() {
        let mut h = Vec::new();
        let bad_key = 17;
        for k in 0..50u64 {
            let t = k % 7;
            h.push(done(k % 5, t, t + 3, KI::Put(k, bytes(k as u8)), KO::Ok));
            let seen = if k == bad_key {
                None
            } else {
                Some(bytes(k as u8))
            };
            h.push(done(k % 5 + 5, t + 4, t + 6, KI::Get(k), KO::Value(seen)));
            h.push(done(k % 5, t + 7, t + 8, KI::Delete(k), KO::Deleted(true)));
        }
        assert_eq!(partition(&KvMap, &h).len(), 50);
        let bad = (3 * bad_key as usize..3 * bad_key as usize + 3).collect::<Vec<_>>();
        assert_eq!(failing_part(&check_kv(&h)), bad);
    }

    #[test]
    fn kv_size_forces_a_single_part() {
        let h = vec![
            done(0, 0, 1, KI::Put(1, bytes(1)), KO::Ok),
            done(1, 0, 1, KI::Put(2, bytes(2)), KO::Ok),
            done(2, 0, 1, KI::Put(3, bytes(3)), KO::Ok),
        ];
        assert_eq!(partition(&KvMap, &h).len(), 3);
        let mut with_size = h.clone();
        with_size.push(done(3, 2, 3, KI::Size, KO::Size(3)));
        assert_eq!(partition(&KvMap, &with_size), vec![vec![0, 1, 2, 3]]);
        assert_eq!(check_kv(&with_size), Verdict::Linearizable);
        with_size[3] = done(3, 2, 3, KI::Size, KO::Size(2));
        assert_eq!(failing_part(&check_kv(&with_size)), vec![0, 1, 2, 3]);
    }

    #[test]
    fn kv_scan_missing_a_completed_put_is_not_linearizable() {
        let h = vec![
            done(0, 0, 1, KI::Put(1, bytes(1)), KO::Ok),
            done(1, 0, 1, KI::Put(2, bytes(2)), KO::Ok),
            done(
                2,
                2,
                3,
                KI::Scan { lo: 0, hi: 10 },
                KO::Entries(vec![(1, bytes(1))]),
            ),
        ];
        assert_eq!(failing_part(&check_kv(&h)), vec![0, 1, 2]);
    }

    #[test]
    fn kv_scan_concurrent_with_a_put_may_miss_it() {
        let h = vec![
            done(0, 0, 1, KI::Put(1, bytes(1)), KO::Ok),
            done(1, 0, 5, KI::Put(2, bytes(2)), KO::Ok),
            done(
                2,
                2,
                3,
                KI::Scan { lo: 0, hi: 10 },
                KO::Entries(vec![(1, bytes(1))]),
            ),
            done(
                2,
                6,
                7,
                KI::Scan { lo: 2, hi: 3 },
                KO::Entries(vec![(2, bytes(2))]),
            ),
            done(2, 8, 9, KI::Scan { lo: 3, hi: 3 }, KO::Entries(vec![])),
        ];
        assert_eq!(check_kv(&h), Verdict::Linearizable);
    }

    #[test]
    fn kv_scans_join_the_parts_of_their_keys() {
        let h = vec![
            done(0, 0, 1, KI::Put(1, bytes(1)), KO::Ok),
            done(0, 0, 1, KI::Put(5, bytes(5)), KO::Ok),
            done(0, 0, 1, KI::Put(2, bytes(2)), KO::Ok),
            done(1, 2, 3, KI::Scan { lo: 0, hi: 3 }, KO::Entries(vec![])),
            done(
                1,
                2,
                3,
                KI::Scan { lo: 0, hi: 1 << 40 },
                KO::Entries(vec![]),
            ),
        ];
        let kv = KvMap;
        assert_eq!(partition(&kv, &h[..4]), vec![vec![0, 2, 3], vec![1]]);
        assert_eq!(kv.keys(&h[4].input), Keys::All);
        assert_eq!(partition(&kv, &h).len(), 1);
    }

    #[test]
    fn kv_delete_reports_whether_the_key_existed() {
        let h = vec![
            done(0, 0, 1, KI::Delete(1), KO::Deleted(false)),
            done(0, 2, 3, KI::Put(1, bytes(1)), KO::Ok),
            done(0, 4, 5, KI::Delete(1), KO::Deleted(true)),
            done(0, 6, 7, KI::Get(1), KO::Value(None)),
        ];
        assert_eq!(check_kv(&h), Verdict::Linearizable);
        let mut bad = h.clone();
        bad[2] = done(0, 4, 5, KI::Delete(1), KO::Deleted(false));
        assert!(!check_kv(&bad).is_linearizable());
    }

    // ---------------------------------------------------------------- randomized

    /// Timing of one generated operation.
    struct Slot {
        client: u64,
        call: u64,
        ret: u64,
        unknown: bool,
        /// When it takes effect, `None` if it never does (only for unknown outcomes).
        effect: Option<u64>,
    }

    /// Clients issue operations one after another; each takes effect at a random point inside its
    /// interval or, with unknown outcome, at a random point after its call or never.
    fn schedule(rng: &mut ChaCha8Rng, ops: usize, clients: u64, unknown_p: f64) -> Vec<Slot> {
        let mut clock: Vec<u64> = (0..clients).map(|_| rng.random_range(0..10)).collect();
        (0..ops)
            .map(|_| {
                let client = rng.random_range(0..clients);
                let call = clock[client as usize] + rng.random_range(0..5);
                let ret = call + rng.random_range(0..20);
                clock[client as usize] = ret;
                let unknown = rng.random_bool(unknown_p);
                let effect = if !unknown {
                    Some(rng.random_range(call..=ret))
                } else if rng.random_bool(0.5) {
                    Some(call + rng.random_range(0..60))
                } else {
                    None
                };
                Slot {
                    client,
                    call,
                    ret,
                    unknown,
                    effect,
                }
            })
            .collect()
    }

    /// Applies the operations to a real object in the order of their effect points.
    fn realize<I, O>(
        slots: &[Slot],
        inputs: Vec<I>,
        mut apply: impl FnMut(&I) -> O,
    ) -> Vec<Operation<I, O>> {
        let mut order: Vec<usize> = (0..slots.len())
            .filter(|&i| slots[i].effect.is_some())
            .collect();
        order.sort_by_key(|&i| (slots[i].effect, i));
        let mut outputs: Vec<Option<O>> = (0..slots.len()).map(|_| None).collect();
        for i in order {
            outputs[i] = Some(apply(&inputs[i]));
        }
        inputs
            .into_iter()
            .zip(outputs)
            .zip(slots)
            .map(|((input, output), slot)| Operation {
                client: slot.client,
                input,
                call: slot.call,
                ret: if slot.unknown {
                    None
                } else {
                    Some((slot.ret, output.expect("completed operations take effect")))
                },
            })
            .collect()
    }

    fn apply_kv(map: &mut HashMap<u64, Vec<u8>>, input: &KI) -> KO {
        match input {
            KI::Get(k) => KO::Value(map.get(k).cloned()),
            KI::Put(k, v) => {
                map.insert(*k, v.clone());
                KO::Ok
            }
            KI::Delete(k) => KO::Deleted(map.remove(k).is_some()),
            KI::Scan { lo, hi } => {
                let mut entries: Vec<(u64, Vec<u8>)> = map
                    .iter()
                    .filter(|(k, _)| (*lo..*hi).contains(*k))
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                entries.sort();
                KO::Entries(entries)
            }
            KI::Size => KO::Size(map.len() as u64),
        }
    }

    fn random_kv_input(rng: &mut ChaCha8Rng, keys: u64, with_size: bool) -> KI {
        let k = rng.random_range(0..keys);
        match rng.random_range(0..100) {
            0..30 => KI::Get(k),
            30..60 => KI::Put(k, bytes(rng.random_range(0..4))),
            60..72 => KI::Delete(k),
            72..92 => KI::Scan {
                lo: k,
                hi: k + rng.random_range(0..4),
            },
            _ if with_size => KI::Size,
            _ => KI::Get(k),
        }
    }

    /// A linearizable KvMap history by construction (see `schedule`).
    fn random_kv_history(seed: u64) -> Vec<KvOp> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ops = rng.random_range(50..=200);
        let clients = rng.random_range(3..=8);
        let keys = rng.random_range(2..=8);
        let with_size = seed.is_multiple_of(3);
        let unknown_p = if seed.is_multiple_of(2) { 0.0 } else { 0.05 };
        let slots = schedule(&mut rng, ops, clients, unknown_p);
        let inputs = (0..ops)
            .map(|_| random_kv_input(&mut rng, keys, with_size))
            .collect();
        let mut map = HashMap::new();
        realize(&slots, inputs, |input| apply_kv(&mut map, input))
    }

    fn apply_register(value: &mut u64, input: &RI) -> RO {
        match input {
            RI::Read => RO::Value(*value),
            RI::Write(v) => {
                *value = *v;
                RO::Ok
            }
            RI::Cas { expect, new } => {
                let swapped = *value == *expect;
                if swapped {
                    *value = *new;
                }
                RO::Cas(swapped)
            }
        }
    }

    fn random_register_history(seed: u64) -> Vec<RegOp> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ops = rng.random_range(50..=200);
        let clients = rng.random_range(3..=8);
        let unknown_p = if seed.is_multiple_of(2) { 0.0 } else { 0.05 };
        let slots = schedule(&mut rng, ops, clients, unknown_p);
        let inputs = (0..ops)
            .map(|_| match rng.random_range(0..10) {
                0..4 => RI::Read,
                4..8 => RI::Write(rng.random_range(0..5)),
                _ => RI::Cas {
                    expect: rng.random_range(0..5),
                    new: rng.random_range(0..5),
                },
            })
            .collect();
        let mut value = 0;
        realize(&slots, inputs, |input| apply_register(&mut value, input))
    }

    #[test]
    fn random_kv_histories_are_linearizable() {
        for seed in 0..300 {
            let h = random_kv_history(seed);
            let verdict = check_kv(&h);
            assert_eq!(verdict, Verdict::Linearizable, "seed {seed}: {verdict}");
        }
    }

    #[test]
    fn random_register_histories_are_linearizable() {
        for seed in 0..300 {
            let h = random_register_history(seed);
            let verdict = check_register(&h);
            assert_eq!(verdict, Verdict::Linearizable, "seed {seed}: {verdict}");
        }
    }

    #[test]
    fn random_kv_histories_with_a_corrupted_get_are_not_linearizable() {
        let mut corrupted = 0;
        for seed in 0..300 {
            let mut h = random_kv_history(seed);
            // A victim in the first half keeps the (exhaustive) refutation affordable.
            let gets: Vec<usize> = (0..h.len() / 2)
                .filter(|&i| matches!(h[i].input, KI::Get(_)) && h[i].ret.is_some())
                .collect();
            if gets.is_empty() {
                continue;
            }
            let victim = gets[seed as usize % gets.len()];
            // The generator only writes one-byte values: this one was never written.
            h[victim].ret.as_mut().unwrap().1 = KO::Value(Some(vec![0xEE, 0xEE]));
            let part = failing_part(&check_kv(&h));
            assert!(part.contains(&victim), "seed {seed}");
            corrupted += 1;
        }
        assert!(corrupted > 250);
    }

    #[test]
    fn random_register_histories_with_a_corrupted_read_are_not_linearizable() {
        let mut corrupted = 0;
        for seed in 0..300 {
            let mut h = random_register_history(seed);
            let reads: Vec<usize> = (0..h.len())
                .filter(|&i| h[i].input == RI::Read && h[i].ret.is_some())
                .collect();
            if reads.is_empty() {
                continue;
            }
            let victim = reads[seed as usize % reads.len()];
            h[victim].ret.as_mut().unwrap().1 = RO::Value(1_000);
            assert!(!check_register(&h).is_linearizable(), "seed {seed}");
            corrupted += 1;
        }
        assert!(corrupted > 250);
    }

    fn big_kv_history(seed: u64) -> Vec<KvOp> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let slots = schedule(&mut rng, 2_000, 8, 0.02);
        let inputs = (0..2_000)
            .map(|_| {
                let k = rng.random_range(0..100);
                match rng.random_range(0..10) {
                    0..4 => KI::Get(k),
                    4..8 => KI::Put(k, bytes(rng.random_range(0..4))),
                    _ => KI::Delete(k),
                }
            })
            .collect();
        let mut map = HashMap::new();
        realize(&slots, inputs, |input| apply_kv(&mut map, input))
    }

    #[test]
    fn kv_history_of_2000_operations_over_100_keys_is_checked_quickly() {
        let mut h = big_kv_history(7);
        assert!(partition(&KvMap, &h).len() > 90);
        let start = Instant::now();
        let verdict = check_kv(&h);
        eprintln!("2000-operation history checked in {:?}", start.elapsed());
        assert_eq!(verdict, Verdict::Linearizable, "{verdict}");

        let victim = (0..h.len())
            .find(|&i| matches!(h[i].input, KI::Get(_)) && h[i].ret.is_some())
            .unwrap();
        h[victim].ret.as_mut().unwrap().1 = KO::Value(Some(vec![0xEE]));
        let part = failing_part(&check_kv(&h));
        assert!(part.contains(&victim) && part.len() < 100);
    }

    #[test]
    fn register_history_of_2000_operations_with_8_clients_is_checked() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let slots = schedule(&mut rng, 2_000, 8, 0.0);
        let inputs = (0..2_000)
            .map(|_| {
                if rng.random_bool(0.5) {
                    RI::Read
                } else {
                    RI::Write(rng.random_range(0..3))
                }
            })
            .collect();
        let mut value = 0;
        let h = realize(&slots, inputs, |input| apply_register(&mut value, input));
        let start = Instant::now();
        let verdict = check_register(&h);
        eprintln!(
            "2000-operation register history checked in {:?}",
            start.elapsed()
        );
        assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
    }

    // ---------------------------------------------------------------- reference comparison

    fn small_register_history() -> impl Strategy<Value = Vec<RegOp>> {
        let op = (
            0u64..10,
            0u64..6,
            0u8..4,
            0u8..4,
            0u64..3,
            0u64..3,
            any::<bool>(),
        );
        prop::collection::vec(op, 0..7).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (call, duration, kind, lost, a, b, flag))| {
                    let (input, output) = match kind {
                        0 => (RI::Read, RO::Value(a)),
                        1 => (RI::Write(a), RO::Ok),
                        _ => (RI::Cas { expect: a, new: b }, RO::Cas(flag)),
                    };
                    Operation {
                        client: i as u64,
                        input,
                        call,
                        ret: (lost != 0).then_some((call + duration, output)),
                    }
                })
                .collect()
        })
    }

    fn small_kv_history() -> impl Strategy<Value = Vec<KvOp>> {
        let op = (
            0u64..10,
            0u64..6,
            0u8..6,
            0u8..4,
            0u64..3,
            0u8..3,
            any::<bool>(),
        );
        prop::collection::vec(op, 0..7).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (call, duration, kind, lost, k, v, flag))| {
                    let (input, output) = match kind {
                        0 => (KI::Get(k), KO::Value(flag.then_some(bytes(v)))),
                        1 => (KI::Put(k, bytes(v)), KO::Ok),
                        2 => (KI::Delete(k), KO::Deleted(flag)),
                        3 => {
                            let entries = if flag { vec![(k, bytes(v))] } else { vec![] };
                            (KI::Scan { lo: k, hi: k + 1 }, KO::Entries(entries))
                        }
                        4 => (KI::Scan { lo: 0, hi: 3 }, KO::Entries(vec![])),
                        _ => (KI::Size, KO::Size(u64::from(v))),
                    };
                    Operation {
                        client: i as u64,
                        input,
                        call,
                        ret: (lost != 0).then_some((call + duration, output)),
                    }
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn register_checker_agrees_with_brute_force(h in small_register_history()) {
            let model = Register::default();
            prop_assert_eq!(
                check(&model, &h, Budget::default()).is_linearizable(),
                brute_force(&model, &h)
            );
        }

        #[test]
        fn kv_checker_agrees_with_brute_force(h in small_kv_history()) {
            let verdict = check(&KvMap, &h, Budget::default());
            prop_assert_eq!(verdict.is_linearizable(), brute_force(&KvMap, &h));
            if let Verdict::NotLinearizable { operations, .. } = verdict {
                let part: Vec<KvOp> = operations.iter().map(|&i| h[i].clone()).collect();
                prop_assert!(!brute_force(&KvMap, &part));
            }
        }
    }
}
