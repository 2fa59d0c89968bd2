//! The write-ahead log: numbered segment files of length- and checksum-framed records.
//!
//! One writer thread owns the open segment. Appends queue on a channel; the thread writes every
//! queued record, calls `fsync` once for the lot (group commit) and only then answers each
//! append, so an answered append survives `kill -9` and power loss alike.
//!
//! Segment file: the 8-byte magic, then records of `[u32 length][u32 crc32][payload]`, little
//! endian. On replay a short or mismatching record at the very end of a segment is a torn tail
//! (an append that never finished) and is dropped silently; a bad record anywhere else means
//! the segment is corrupt: its good records are replayed and the file moves to `quarantine/`.
//!
//! The magic carries the format version of the records inside (postcard-encoded rows, which
//! are not self-describing: a record written with other fields would decode as garbage, not
//! fail); every [`Record`] says which version it was written in. Whenever a row type or
//! anything it holds changes shape, bump [`MAGIC`]: the ingester either still decodes the
//! previous version (list it in [`READABLE`]) or lists it in [`OLD_MAGICS`], and a segment of
//! such a version is then quarantined whole, with an error naming the version, instead of
//! being misread. Flushing before an upgrade (`SIGTERM` flushes everything live) leaves nothing
//! behind to lose.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

/// Version 3: a record holds spans, log records or metric points of one tenant.
const MAGIC: &[u8; 8] = b"SPLKWAL3";
/// The version [`MAGIC`] writes.
pub const FORMAT: u8 = 3;
/// Earlier versions whose records the ingester still decodes, with their format numbers.
/// Version 2: spans only, with flags, dropped counts, schema URLs, scope attributes and
/// bytes attribute values.
const READABLE: [(&[u8; 8], u8); 1] = [(b"SPLKWAL2", 2)];
/// Magics of earlier versions, whose records this version cannot decode.
const OLD_MAGICS: [&[u8; 8]; 1] = [b"SPLKWAL1"];
const HEADER: usize = 8;
const QUARANTINE_DIR: &str = "quarantine";
const SUFFIX: &str = ".wal";

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal io at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the wal writer has stopped")]
    Stopped,
}

/// A record read back at startup.
#[derive(Debug)]
pub struct Record {
    pub segment: u64,
    /// The format version the record was written in: [`FORMAT`] or one in [`READABLE`].
    pub format: u8,
    pub payload: Vec<u8>,
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<Record>,
    /// The highest segment id present, 0 when the WAL is empty.
    pub last_segment: u64,
    /// Segments moved to quarantine because of corruption.
    pub quarantined: Vec<PathBuf>,
    /// Segments that ended in a torn record.
    pub torn_tails: usize,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            found.push((id, path));
        }
    }
    found.sort();
    Ok(found)
}

enum Parsed {
    Clean,
    TornTail,
    Corrupt(String),
}

fn parse_segment(bytes: &[u8], segment: u64, out: &mut Vec<Record>) -> Parsed {
    if bytes.len() < HEADER {
        return Parsed::TornTail;
    }
    let magic = &bytes[..HEADER];
    if OLD_MAGICS.iter().any(|old| magic == old.as_slice()) {
        return Parsed::Corrupt(format!(
            "written by an older spanlake in WAL format {}, which this version (format {}) \
             cannot read; its unflushed spans are not replayed",
            String::from_utf8_lossy(magic),
            String::from_utf8_lossy(MAGIC),
        ));
    }
    let format = if magic == MAGIC {
        FORMAT
    } else if let Some((_, format)) = READABLE.iter().find(|(m, _)| magic == m.as_slice()) {
        *format
    } else {
        return Parsed::Corrupt("bad magic".into());
    };
    let mut at = HEADER;
    while at < bytes.len() {
        let Some(frame) = bytes.get(at..at + 8) else {
            return Parsed::TornTail;
        };
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let end = at + 8 + len;
        let Some(payload) = bytes.get(at + 8..end) else {
            return Parsed::TornTail;
        };
        if crc32fast::hash(payload) != crc {
            return if end == bytes.len() {
                Parsed::TornTail
            } else {
                Parsed::Corrupt(format!("checksum mismatch in the record at byte {at}"))
            };
        }
        out.push(Record {
            segment,
            format,
            payload: payload.to_vec(),
        });
        at = end;
    }
    Parsed::Clean
}

/// The id of the oldest segment in `dir`, if there is one.
pub fn oldest_segment(dir: &Path) -> io::Result<Option<u64>> {
    match segments(dir) {
        Ok(found) => Ok(found.first().map(|(id, _)| *id)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads every segment in `dir` (created if missing), quarantining corrupt ones.
pub fn replay(dir: &Path) -> Result<Replay, WalError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut replay = Replay::default();
    for (id, path) in segments(dir).map_err(io_err(dir))? {
        replay.last_segment = replay.last_segment.max(id);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        match parse_segment(&bytes, id, &mut replay.records) {
            Parsed::Clean => {}
            Parsed::TornTail => replay.torn_tails += 1,
            Parsed::Corrupt(reason) => {
                let quarantine = dir.join(QUARANTINE_DIR);
                fs::create_dir_all(&quarantine).map_err(io_err(&quarantine))?;
                let target = quarantine.join(path.file_name().unwrap_or_default());
                fs::rename(&path, &target).map_err(io_err(&path))?;
                tracing::error!(
                    segment = %path.display(),
                    moved_to = %target.display(),
                    %reason,
                    "corrupt WAL segment quarantined; records before the damage were replayed"
                );
                replay.quarantined.push(target);
            }
        }
    }
    Ok(replay)
}

enum Command {
    Append(Vec<u8>, oneshot::Sender<Result<u64, WalError>>),
    Rotate(oneshot::Sender<Result<u64, WalError>>),
    RemoveThrough(u64, oneshot::Sender<Result<(), WalError>>),
}

/// Handle to the WAL writer thread. Dropping every handle stops the thread.
#[derive(Debug, Clone)]
pub struct Wal {
    tx: mpsc::Sender<Command>,
}

impl Wal {
    /// Starts a writer on a new segment `first_segment` in `dir`.
    pub fn open(dir: &Path, first_segment: u64) -> Result<Self, WalError> {
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            id: first_segment,
            file: None,
        };
        writer.start_segment()?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("spanlake-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| WalError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self { tx })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, WalError>>) -> Command,
    ) -> Result<T, WalError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| WalError::Stopped)?;
        answer.await.map_err(|_| WalError::Stopped)?
    }

    /// Appends one record; resolves once it is on disk. Returns the segment it went to.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64, WalError> {
        self.call(|reply| Command::Append(payload, reply)).await
    }

    /// Closes the open segment and starts the next; returns the id of the closed one.
    /// Every append answered before this call is in a segment at or below that id.
    pub async fn rotate(&self) -> Result<u64, WalError> {
        self.call(Command::Rotate).await
    }

    /// Deletes closed segments with ids up to `id`.
    pub async fn remove_through(&self, id: u64) -> Result<(), WalError> {
        self.call(|reply| Command::RemoveThrough(id, reply)).await
    }
}

struct Writer {
    dir: PathBuf,
    id: u64,
    file: Option<File>,
}

impl Writer {
    fn io(&self, source: io::Error) -> WalError {
        WalError::Io {
            path: segment_path(&self.dir, self.id),
            source,
        }
    }

    fn start_segment(&mut self) -> Result<(), WalError> {
        let path = segment_path(&self.dir, self.id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| self.io(e))?;
        file.write_all(MAGIC).map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))?;
        self.file = Some(file);
        Ok(())
    }

    fn write_and_sync(&mut self, buffer: &[u8]) -> Result<(), WalError> {
        let file = self.file.as_mut().ok_or(WalError::Stopped)?;
        let result = file.write_all(buffer).and_then(|()| file.sync_data());
        result.map_err(|e| self.io(e))
    }

    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut commands = vec![first];
            commands.extend(rx.try_iter());
            let mut buffer = Vec::new();
            let mut waiting = Vec::new();
            for command in commands {
                match command {
                    Command::Append(payload, reply) => {
                        let Ok(len) = u32::try_from(payload.len()) else {
                            let _ = reply.send(Err(self.io(io::Error::other("record over 4 GiB"))));
                            continue;
                        };
                        buffer.extend_from_slice(&len.to_le_bytes());
                        buffer.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                        buffer.extend_from_slice(&payload);
                        waiting.push(reply);
                    }
                    Command::Rotate(reply) => {
                        self.commit(&mut buffer, &mut waiting);
                        let closed = self.id;
                        self.id += 1;
                        let _ = reply.send(self.start_segment().map(|()| closed));
                    }
                    Command::RemoveThrough(through, reply) => {
                        self.commit(&mut buffer, &mut waiting);
                        let _ = reply.send(self.remove_through(through));
                    }
                }
            }
            self.commit(&mut buffer, &mut waiting);
        }
    }

    /// Writes the buffered records with one fsync and answers their appends.
    fn commit(
        &mut self,
        buffer: &mut Vec<u8>,
        waiting: &mut Vec<oneshot::Sender<Result<u64, WalError>>>,
    ) {
        if waiting.is_empty() {
            return;
        }
        let result = self.write_and_sync(buffer);
        buffer.clear();
        let failed = result.is_err();
        for reply in waiting.drain(..) {
            let _ = reply.send(match &result {
                Ok(()) => Ok(self.id),
                Err(e) => Err(self.io(io::Error::other(e.to_string()))),
            });
        }
        if failed {
            // The segment may now end in a partial record; continue in a fresh one so that
            // later records never sit behind damage.
            self.id += 1;
            if let Err(e) = self.start_segment() {
                tracing::error!(error = %e, "could not start a new WAL segment after a write error");
                self.file = None;
            }
        }
    }

    fn remove_through(&self, through: u64) -> Result<(), WalError> {
        let listed = segments(&self.dir).map_err(|e| self.io(e))?;
        for (id, path) in listed {
            if id <= through && id != self.id {
                fs::remove_file(&path).map_err(|source| WalError::Io { path, source })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appended_records_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1).unwrap();
        wal.append(b"one".to_vec()).await.unwrap();
        assert_eq!(wal.rotate().await.unwrap(), 1);
        wal.append(b"two".to_vec()).await.unwrap();
        let replay = replay(dir.path()).unwrap();
        let payloads: Vec<_> = replay
            .records
            .iter()
            .map(|r| (r.segment, r.payload.clone()))
            .collect();
        assert_eq!(payloads, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
        assert_eq!(replay.last_segment, 2);
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1).unwrap();
        wal.append(b"kept".to_vec()).await.unwrap();
        let path = segment_path(dir.path(), 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let replay = replay(dir.path()).unwrap();
        assert_eq!(replay.records.len(), 1);
        assert_eq!(replay.torn_tails, 1);
        assert!(replay.quarantined.is_empty());
    }

    #[tokio::test]
    async fn a_corrupt_segment_is_quarantined_after_replaying_its_good_records() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1).unwrap();
        wal.append(b"good".to_vec()).await.unwrap();
        wal.append(b"damaged".to_vec()).await.unwrap();
        wal.append(b"after".to_vec()).await.unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let damaged_payload = HEADER + 8 + 4 + 8;
        bytes[damaged_payload] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let replay = replay(dir.path()).unwrap();
        assert_eq!(replay.records.len(), 1);
        assert_eq!(replay.records[0].payload, b"good");
        assert_eq!(replay.quarantined.len(), 1);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_segment_of_an_older_format_is_quarantined_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = OLD_MAGICS[0].to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(b"old").to_le_bytes());
        bytes.extend_from_slice(b"old");
        fs::write(&path, bytes).unwrap();
        let replay = replay(dir.path()).unwrap();
        assert!(replay.records.is_empty());
        assert_eq!(replay.quarantined.len(), 1);
        assert_eq!(replay.last_segment, 1);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_segment_of_a_readable_older_format_replays_with_its_format() {
        let dir = tempfile::tempdir().unwrap();
        let (magic, format) = READABLE[0];
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(b"old").to_le_bytes());
        bytes.extend_from_slice(b"old");
        fs::write(segment_path(dir.path(), 1), bytes).unwrap();
        let replay = replay(dir.path()).unwrap();
        assert!(replay.quarantined.is_empty());
        assert_eq!(replay.records.len(), 1);
        assert_eq!(replay.records[0].format, format);
    }
}
