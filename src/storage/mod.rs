//! Durable storage of flushed data: Parquet blocks in an object store, each committed by its
//! `meta.json`, and the in-memory catalog of committed blocks.
//!
//! Layout under the storage root (`file://./data/blocks` by default):
//! `{tenant}/{signal}/shard-{n}/{block_id}/{data.parquet, traces.parquet, meta.json}`, where the
//! signal is `traces`, `logs` or `metrics`. `data.parquet` holds the signal's main table: `spans`
//! rows sorted by trace id then start time, `logs` rows sorted by service then time, `metrics`
//! rows sorted by metric name, series then time. Trace blocks add `traces.parquet`, the
//! per-trace rows. A block exists for readers only once its `meta.json` is written; a
//! directory without one is a half-written block and is removed at startup.
//!
//! Storage knows nothing of the ingester that writes blocks or the queries that read them.

mod block;
pub mod bloom;
mod catalog;
pub mod compact;
pub mod disk_cache;
pub mod lifecycle;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::schema::Signal;

pub use block::{BlockData, BlockMeta, PAGE_ROWS, ROW_GROUP_ROWS};
pub use catalog::{Catalog, remove_uncommitted};

/// File name of a block's main table rows: spans, log records or metric points.
pub const DATA_FILE: &str = "data.parquet";
/// File name of the per-trace rows in a block.
pub const TRACES_FILE: &str = "traces.parquet";
/// File name of a block's meta, its commit point.
pub const META_FILE: &str = "meta.json";

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage url {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("block meta {path}: {source}")]
    Meta {
        path: String,
        source: serde_json::Error,
    },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// The object store holding blocks, and how DataFusion reaches it.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// Set when the store is the local file system: block files are fsynced there before their
    /// commit, which the object store API does not do for local files.
    local: Option<Arc<LocalFileSystem>>,
    /// The directory of a local store.
    local_root: Option<PathBuf>,
    /// The local disk cache in front of a remote store, when configured.
    disk_cache: Option<Arc<disk_cache::DiskCache>>,
}

/// The environment variable naming a fault point at which the process aborts, for crash tests:
/// `block-files-written` (a flushed block's Parquet files are written, its meta is not),
/// `compaction-files-written` (the same for a compacted block) or `compaction-committed` (a
/// compacted block is committed, the blocks it replaces are neither out of the catalog nor
/// deleted).
pub const FAULT_ENV: &str = "SPANLAKE_FAULT";

/// Aborts the process when [`FAULT_ENV`] names `point`, as `kill -9` would stop it there.
pub(crate) fn fault_point(point: &str) {
    if std::env::var(FAULT_ENV).is_ok_and(|p| p == point) {
        eprintln!("{FAULT_ENV}={point}: aborting here");
        std::process::abort();
    }
}

/// The URL under which the block store is registered with DataFusion.
pub const OBJECT_STORE_URL: &str = "spanlake://blocks";

impl Storage {
    /// Opens the store at `url`: `file://PATH` (relative paths allowed), a plain path, or an
    /// object-store URL such as `s3://bucket/prefix`. Local directories are created.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_with(url, &BTreeMap::new())
    }

    /// [`Storage::open`] with object-store options (`aws_endpoint`, `aws_region`,
    /// `google_service_account`, `azure_storage_account_name`, …, as `object_store` names
    /// them). Credentials and settings come from the usual environment variables (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*`) first; `options` override them.
    pub fn open_with(url: &str, options: &BTreeMap<String, String>) -> Result<Self, StorageError> {
        let bad = |reason: String| StorageError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let local = url
            .strip_prefix("file://")
            .or_else(|| (!url.contains("://")).then_some(url));
        let local_root = local.map(PathBuf::from);
        let local = match local {
            Some(path) => {
                std::fs::create_dir_all(path)?;
                // Deleted blocks leave no empty directories behind.
                let fs = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| bad(e.to_string()))?
                    .with_automatic_cleanup(true);
                Some(Arc::new(fs))
            }
            None => None,
        };
        let store: Arc<dyn ObjectStore> = match &local {
            Some(fs) => fs.clone(),
            None => {
                let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
                let mut settings: BTreeMap<String, String> = std::env::vars()
                    .filter(|(k, _)| {
                        ["AWS_", "GOOGLE_", "AZURE_"]
                            .iter()
                            .any(|prefix| k.starts_with(prefix))
                    })
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                settings.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
                let (store, prefix) = object_store::parse_url_opts(&parsed, settings)
                    .map_err(|e| bad(e.to_string()))?;
                Arc::new(PrefixStore::new(store, prefix))
            }
        };
        Ok(Self {
            store,
            url: url.to_string(),
            local,
            local_root,
            disk_cache: None,
        })
    }

    /// The same storage with ranged reads cached in `dir` on local disk, up to about
    /// `max_bytes` (see [`disk_cache`]). Local stores are left as they are: their reads are
    /// local already.
    pub fn with_disk_cache(mut self, dir: PathBuf, max_bytes: u64) -> Result<Self, StorageError> {
        if self.local.is_none() {
            let cache = Arc::new(disk_cache::DiskCache::new(
                self.store.clone(),
                dir,
                max_bytes,
            )?);
            self.store = cache.clone();
            self.disk_cache = Some(cache);
        }
        Ok(self)
    }

    /// Ranged reads served by the disk cache and by the store, when there is a disk cache.
    pub fn disk_cache_hits_and_misses(&self) -> Option<(u64, u64)> {
        self.disk_cache.as_ref().map(|c| c.hits_and_misses())
    }

    /// The store itself, rooted at the storage root.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The URL the store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Makes a written object durable: on the local file system, fsyncs the file and its
    /// directory; object stores are durable once `put` returns.
    pub(crate) async fn sync(&self, path: &Path) -> Result<(), StorageError> {
        let Some(fs) = &self.local else {
            return Ok(());
        };
        let file = fs.path_to_filesystem(path)?;
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&file)?.sync_all()?;
            match file.parent() {
                Some(dir) => std::fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }

    /// Deletes a block's files, `meta.json` first: a block is never visible without its data.
    pub async fn delete_block(&self, meta: &BlockMeta) -> Result<(), StorageError> {
        let dir = meta.dir();
        let ignore_missing = |result: Result<(), object_store::Error>| match result {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        };
        ignore_missing(self.store.delete(&dir.clone().join(META_FILE)).await)?;
        let files: Vec<_> = futures::TryStreamExt::try_collect(self.store.list(Some(&dir))).await?;
        for file in files {
            ignore_missing(self.store.delete(&file.location).await)?;
        }
        Ok(())
    }

    /// The URL DataFusion resolves block paths against.
    pub fn object_store_url() -> ObjectStoreUrl {
        ObjectStoreUrl::parse(OBJECT_STORE_URL).expect("constant URL is valid")
    }

    /// The directory of one block.
    pub fn block_dir(tenant: &str, signal: Signal, shard: u32, block_id: &str) -> Path {
        Path::from_iter([tenant, signal.name(), &format!("shard-{shard}"), block_id])
    }
}
