//! Hinted handoff: with `write_consistency = "quorum"`, a write is acknowledged once a majority
//! of each shard's holders stored it. A holder that missed it gets it later:
//!
//! - the member that distributed the write keeps the missed rows as a *hint* for that holder,
//!   durable in its data directory, numbered per holder;
//! - before the client is acknowledged, every member that stored rows of those shards, and
//!   every other member that can be reached, records a *mark*: "holder H misses rows of these
//!   shards, which member S keeps as hint n". While any mark for H and a shard stands, reads of
//!   that shard go to another holder ([`super::Cluster::reader`]);
//! - once H is up, S delivers its hints in order and records how far it delivered. Members
//!   learn that from one another with every health check, and drop the marks it covers.
//!
//! Marks are kept by every member that stored the rows, so as long as one of them is up, no
//! member reads H's shard from H without those rows. A member that restarts keeps its marks
//! and asks the others for theirs before it serves queries.
//!
//! A member that crashes between delivering a hint and recording the delivery delivers it
//! again: those spans are then stored twice on H, as a client's retry may store them (at
//! least once; compaction merges spans by span id).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Holder `target` misses rows of `shards` that member `source` keeps as its hint `seq`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mark {
    pub source: String,
    pub target: String,
    pub seq: u64,
    pub shards: Vec<u32>,
}

impl From<&Mark> for crate::proto::HandoffMark {
    fn from(mark: &Mark) -> Self {
        Self {
            source: mark.source.clone(),
            target: mark.target.clone(),
            seq: mark.seq,
            shards: mark.shards.clone(),
        }
    }
}

impl From<crate::proto::HandoffMark> for Mark {
    fn from(mark: crate::proto::HandoffMark) -> Self {
        Self {
            source: mark.source,
            target: mark.target,
            seq: mark.seq,
            shards: mark.shards,
        }
    }
}

/// How far member `source` has delivered its hints to `target`: every hint up to `through`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub source: String,
    pub target: String,
    pub through: u64,
}

/// What members tell one another with each health check: the marks each knows, and how far
/// hints were delivered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandoffState {
    pub marks: Vec<Mark>,
    pub delivered: Vec<Delivered>,
}

/// One hint: the rows of one write a holder missed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hint {
    pub tenant: String,
    /// The rows as `ClusterIngest.Push` carries them (postcard-encoded `ingest::Rows`).
    pub rows: Vec<u8>,
}

/// Errors of the handoff's files.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("handoff directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("handoff file {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> HandoffError + '_ {
    move |source| HandoffError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` whole or not at all: a temporary file, synced, renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HandoffError> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(bytes).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(())
}

/// The hints this member keeps for others, and the marks it knows, in `<data>/handoff`.
#[derive(Debug)]
pub struct Handoff {
    dir: PathBuf,
    self_name: String,
    /// Per target: the numbers of the hints kept for it, oldest first.
    hints: BTreeMap<String, BTreeSet<u64>>,
    /// Per (source, target): every hint up to this number was delivered.
    delivered: BTreeMap<(String, String), u64>,
    /// The marks, one per (source, target): the newest hint they name and every shard they
    /// name. A mark stands until that newest hint is delivered, so the marks stay as few as
    /// the pairs of members however many writes a holder missed.
    marks: BTreeMap<(String, String), (u64, BTreeSet<u32>)>,
}

/// The file holding the marks and deliveries a member knows (a [`HandoffState`]).
const STATE_FILE: &str = "state.json";

impl Handoff {
    /// The handoff state of member `self_name` in `dir` (created): hints it keeps, marks and
    /// deliveries it recorded.
    pub fn open(dir: &Path, self_name: &str) -> Result<Self, HandoffError> {
        let hints_dir = dir.join("hints");
        std::fs::create_dir_all(&hints_dir).map_err(io_error(&hints_dir))?;
        let state_path = dir.join(STATE_FILE);
        let stored: HandoffState = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| HandoffError::Corrupt {
                path: state_path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HandoffState::default(),
            Err(e) => return Err(io_error(&state_path)(e)),
        };
        let mut hints: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for target in std::fs::read_dir(&hints_dir).map_err(io_error(&hints_dir))? {
            let target = target.map_err(io_error(&hints_dir))?.path();
            let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let kept = hints.entry(name.to_string()).or_default();
            for file in std::fs::read_dir(&target).map_err(io_error(&target))? {
                let file = file.map_err(io_error(&target))?.path();
                let seq = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".hint"))
                    .and_then(|n| n.parse::<u64>().ok());
                match seq {
                    Some(seq) => {
                        kept.insert(seq);
                    }
                    // A hint being written when the process stopped: its write was never
                    // acknowledged.
                    None => std::fs::remove_file(&file).map_err(io_error(&file))?,
                }
            }
        }
        let mut handoff = Handoff {
            dir: dir.to_path_buf(),
            self_name: self_name.to_string(),
            hints,
            delivered: BTreeMap::new(),
            marks: BTreeMap::new(),
        };
        handoff.learn(&stored);
        Ok(handoff)
    }

    fn hint_path(&self, target: &str, seq: u64) -> PathBuf {
        self.dir
            .join("hints")
            .join(target)
            .join(format!("{seq:020}.hint"))
    }

    /// Keeps `hint` for `target`, durably, and returns its number.
    pub fn keep(&mut self, target: &str, hint: &Hint) -> Result<u64, HandoffError> {
        let delivered = self
            .delivered
            .get(&(self.self_name.clone(), target.to_string()))
            .copied()
            .unwrap_or(0);
        let newest = self.hints.get(target).and_then(|k| k.last().copied());
        let seq = newest.unwrap_or(0).max(delivered) + 1;
        let dir = self.dir.join("hints").join(target);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = self.hint_path(target, seq);
        let bytes = postcard::to_stdvec(hint).map_err(|e| HandoffError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomically(&path, &bytes)?;
        self.hints
            .entry(target.to_string())
            .or_default()
            .insert(seq);
        Ok(seq)
    }

    /// The oldest hint kept for `target`, with its number.
    pub fn oldest(&self, target: &str) -> Result<Option<(u64, Hint)>, HandoffError> {
        let Some(seq) = self.hints.get(target).and_then(|k| k.first().copied()) else {
            return Ok(None);
        };
        let path = self.hint_path(target, seq);
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let hint = postcard::from_bytes(&bytes).map_err(|e| HandoffError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Some((seq, hint)))
    }

    /// Records that hint `seq` reached `target`: every older one did before it.
    pub fn delivered(&mut self, target: &str, seq: u64) -> Result<(), HandoffError> {
        self.learn(&HandoffState {
            marks: Vec::new(),
            delivered: vec![Delivered {
                source: self.self_name.clone(),
                target: target.to_string(),
                through: seq,
            }],
        });
        self.save()?;
        let path = self.hint_path(target, seq);
        std::fs::remove_file(&path).map_err(io_error(&path))?;
        if let Some(kept) = self.hints.get_mut(target) {
            kept.remove(&seq);
        }
        Ok(())
    }

    /// Number of hints kept for `target`.
    pub fn pending(&self, target: &str) -> usize {
        self.hints.get(target).map_or(0, BTreeSet::len)
    }

    /// The targets hints are kept for.
    pub fn targets(&self) -> Vec<String> {
        self.hints
            .iter()
            .filter(|(_, kept)| !kept.is_empty())
            .map(|(target, _)| target.clone())
            .collect()
    }

    /// Takes in what another member (or this one) knows: marks not yet delivered, and how far
    /// hints were delivered, which drops the marks that covers. Returns whether anything
    /// changed.
    pub fn learn(&mut self, state: &HandoffState) -> bool {
        let mut changed = false;
        for d in &state.delivered {
            let through = self
                .delivered
                .entry((d.source.clone(), d.target.clone()))
                .or_default();
            if d.through > *through {
                *through = d.through;
                changed = true;
            }
        }
        for mark in &state.marks {
            let pair = (mark.source.clone(), mark.target.clone());
            if self.is_delivered(&pair, mark.seq) {
                continue;
            }
            let (seq, shards) = self.marks.entry(pair).or_default();
            let before = (*seq, shards.len());
            *seq = (*seq).max(mark.seq);
            shards.extend(&mark.shards);
            changed |= before != (*seq, shards.len());
        }
        let before = self.marks.len();
        let marks = std::mem::take(&mut self.marks);
        self.marks = marks
            .into_iter()
            .filter(|(pair, (seq, _))| !self.is_delivered(pair, *seq))
            .collect();
        changed || self.marks.len() != before
    }

    /// Whether every hint from `pair.0` to `pair.1` up to `seq` was delivered.
    fn is_delivered(&self, pair: &(String, String), seq: u64) -> bool {
        self.delivered
            .get(pair)
            .is_some_and(|through| seq <= *through)
    }

    /// Records marks, durably.
    pub fn record(&mut self, marks: &[Mark]) -> Result<(), HandoffError> {
        let changed = self.learn(&HandoffState {
            marks: marks.to_vec(),
            delivered: Vec::new(),
        });
        if changed { self.save() } else { Ok(()) }
    }

    /// Writes the marks and deliveries to the state file.
    pub fn save(&self) -> Result<(), HandoffError> {
        let path = self.dir.join(STATE_FILE);
        let bytes = serde_json::to_vec(&self.state()).map_err(|e| HandoffError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomically(&path, &bytes)
    }

    /// What this member knows, to tell the others.
    pub fn state(&self) -> HandoffState {
        HandoffState {
            marks: self
                .marks
                .iter()
                .map(|((source, target), (seq, shards))| Mark {
                    source: source.clone(),
                    target: target.clone(),
                    seq: *seq,
                    shards: shards.iter().copied().collect(),
                })
                .collect(),
            delivered: self
                .delivered
                .iter()
                .map(|((source, target), through)| Delivered {
                    source: source.clone(),
                    target: target.clone(),
                    through: *through,
                })
                .collect(),
        }
    }

    /// Whether a mark says `target` misses rows of `shard`.
    pub fn misses(&self, target: &str, shard: u32) -> bool {
        self.marks
            .iter()
            .any(|((_, t), (_, shards))| t == target && shards.contains(&shard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(n: usize) -> Hint {
        Hint {
            tenant: "acme".into(),
            rows: vec![7; n],
        }
    }

    #[test]
    fn hints_survive_a_restart_and_go_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut handoff = Handoff::open(dir.path(), "a").unwrap();
        let first = handoff.keep("b", &hint(1)).unwrap();
        let second = handoff.keep("b", &hint(2)).unwrap();
        assert!(first < second);
        drop(handoff);
        let mut handoff = Handoff::open(dir.path(), "a").unwrap();
        assert_eq!(handoff.pending("b"), 2);
        let (seq, oldest) = handoff.oldest("b").unwrap().unwrap();
        assert_eq!((seq, oldest.rows), (first, vec![7]));
        handoff.delivered("b", seq).unwrap();
        drop(handoff);
        let mut handoff = Handoff::open(dir.path(), "a").unwrap();
        assert_eq!(handoff.oldest("b").unwrap().unwrap().0, second);
        handoff.delivered("b", second).unwrap();
        // Numbers are never reused, even once every hint is delivered.
        assert!(handoff.keep("b", &hint(1)).unwrap() > second);
    }

    #[test]
    fn a_mark_stands_until_its_delivery_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let mut handoff = Handoff::open(dir.path(), "c").unwrap();
        let mark = Mark {
            source: "a".into(),
            target: "b".into(),
            seq: 4,
            shards: vec![1, 3],
        };
        handoff.record(std::slice::from_ref(&mark)).unwrap();
        assert!(handoff.misses("b", 3) && !handoff.misses("b", 2) && !handoff.misses("a", 1));
        let reopened = Handoff::open(dir.path(), "c").unwrap();
        assert!(reopened.misses("b", 1), "marks are durable");
        let delivered = |through| HandoffState {
            marks: Vec::new(),
            delivered: vec![Delivered {
                source: "a".into(),
                target: "b".into(),
                through,
            }],
        };
        assert!(handoff.learn(&delivered(3)));
        assert!(handoff.misses("b", 1), "hint 4 is not delivered yet");
        assert!(handoff.learn(&delivered(4)));
        assert!(!handoff.misses("b", 1));
        // A member that has not heard of the delivery yet passes the mark on: it stays gone.
        assert!(!handoff.learn(&HandoffState {
            marks: vec![mark],
            delivered: Vec::new(),
        }));
        assert!(!handoff.misses("b", 1));
    }

    #[test]
    fn marks_of_one_source_and_holder_merge_and_stand_until_the_newest_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut handoff = Handoff::open(dir.path(), "c").unwrap();
        let mark = |seq, shard| Mark {
            source: "a".into(),
            target: "b".into(),
            seq,
            shards: vec![shard],
        };
        handoff.record(&[mark(1, 1), mark(2, 2)]).unwrap();
        assert_eq!(
            handoff.state().marks,
            vec![Mark {
                source: "a".into(),
                target: "b".into(),
                seq: 2,
                shards: vec![1, 2],
            }]
        );
        handoff.learn(&HandoffState {
            marks: Vec::new(),
            delivered: vec![Delivered {
                source: "a".into(),
                target: "b".into(),
                through: 1,
            }],
        });
        assert!(handoff.misses("b", 1) && handoff.misses("b", 2));
    }
}
