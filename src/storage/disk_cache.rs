//! A local disk cache of ranged reads from a remote object store.
//!
//! Block files never change once written (every block has a new id), so a range read once —
//! a footer, a page index, a row group's column chunks — can be served from local disk from
//! then on without asking whether it is still current. Only ranged reads without conditions
//! are cached; everything else goes to the store. When the cache passes its size, the files
//! least recently written or read go first.
//!
//! A cached range is one file named after the object path's hash and the range, holding the
//! object's size (8 bytes, little endian) and then the bytes.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// An object store whose ranged reads are cached on local disk.
#[derive(Debug)]
pub struct DiskCache {
    inner: Arc<dyn ObjectStore>,
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Display for DiskCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiskCache({}, {})", self.dir.display(), self.inner)
    }
}

fn fnv(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

impl DiskCache {
    /// Caches `inner`'s ranged reads in `dir` (created), up to about `max_bytes`.
    pub fn new(inner: Arc<dyn ObjectStore>, dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let used = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        Ok(Self {
            inner,
            dir,
            max_bytes,
            used: AtomicU64::new(used),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Ranged reads served from disk and from the store, since start.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn file(&self, location: &Path, range: &Range<u64>) -> PathBuf {
        self.dir.join(format!(
            "{:016x}-{}-{}",
            fnv(location.as_ref()),
            range.start,
            range.end
        ))
    }

    /// The cached range in `file`, if it is there whole.
    async fn read(&self, file: PathBuf, len: u64) -> Option<(u64, Bytes)> {
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&file).ok()?;
            if bytes.len() as u64 != len + 8 {
                // Damaged (a crash while writing it): forget it.
                let _ = std::fs::remove_file(&file);
                return None;
            }
            // Touch it: eviction goes by modification time.
            let _ = std::fs::File::options()
                .append(true)
                .open(&file)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            let (size, data) = bytes.split_at_checked(8)?;
            let size = u64::from_le_bytes(size.try_into().ok()?);
            Some((size, Bytes::copy_from_slice(data)))
        })
        .await
        .ok()
        .flatten()
    }

    async fn write(&self, file: PathBuf, size: u64, data: Bytes) {
        let (dir, max) = (self.dir.clone(), self.max_bytes);
        let added = data.len() as u64 + 8;
        let used = self.used.fetch_add(added, Ordering::Relaxed) + added;
        let freed = tokio::task::spawn_blocking(move || {
            // A name of its own: two misses of one range may write at once.
            let temp = file.with_extension(format!("partial-{}", uuid::Uuid::now_v7()));
            let mut contents = size.to_le_bytes().to_vec();
            contents.extend_from_slice(&data);
            if std::fs::write(&temp, contents).is_err() || std::fs::rename(&temp, &file).is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            if used > max {
                evict(&dir, used - max / 10 * 9)
            } else {
                0
            }
        })
        .await
        .unwrap_or(0);
        self.used.fetch_sub(
            freed.min(self.used.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }
}

/// Deletes the least recently used files until `to_free` bytes are gone; returns the bytes
/// freed.
fn evict(dir: &std::path::Path, to_free: u64) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    files.sort();
    let mut freed = 0;
    for (_, len, path) in files {
        if freed >= to_free {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            freed += len;
        }
    }
    freed
}

/// The bounded range of a cacheable read: a range and no condition.
fn cacheable(options: &GetOptions) -> Option<Range<u64>> {
    let plain = options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none()
        && !options.head;
    match (&options.range, plain) {
        (Some(GetRange::Bounded(range)), true) => Some(range.clone()),
        _ => None,
    }
}

#[async_trait]
impl ObjectStore for DiskCache {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let Some(range) = cacheable(&options) else {
            return self.inner.get_opts(location, options).await;
        };
        let file = self.file(location, &range);
        let len = range.end.saturating_sub(range.start);
        if let Some((size, data)) = self.read(file.clone(), len).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(GetResult {
                payload: GetResultPayload::Stream(Box::pin(futures::stream::once(async move {
                    Ok(data)
                }))),
                meta: ObjectMeta {
                    location: location.clone(),
                    last_modified: chrono::DateTime::UNIX_EPOCH,
                    size,
                    e_tag: None,
                    version: None,
                },
                range,
                attributes: Default::default(),
            });
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.get_opts(location, options).await?;
        let (meta, range, attributes) = (
            result.meta.clone(),
            result.range.clone(),
            result.attributes.clone(),
        );
        let data = result.bytes().await?;
        self.write(file, meta.size, data.clone()).await;
        Ok(GetResult {
            payload: GetResultPayload::Stream(Box::pin(futures::stream::once(
                async move { Ok(data) },
            ))),
            meta,
            range,
            attributes,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
