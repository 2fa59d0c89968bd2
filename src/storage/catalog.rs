//! The catalog of committed blocks, per tenant.
//!
//! A compacted block's meta names the blocks it replaces (`compacted_from`); the catalog
//! swaps them in one step ([`Catalog::replace`]), and loading drops every block that a
//! committed block replaces, so readers see the old set or the new one, never both.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parking_lot::RwLock;

use super::{BlockMeta, META_FILE, Storage, StorageError};
use crate::schema::Signal;

/// Committed blocks by tenant. Loaded from the store at startup and kept current by the
/// flusher; readers take a snapshot per query.
#[derive(Debug, Default)]
pub struct Catalog {
    blocks: RwLock<BTreeMap<String, Vec<Arc<BlockMeta>>>>,
}

impl Catalog {
    /// Lists committed blocks in `storage`, leaving out those a compacted block replaces;
    /// returns the catalog and those replaced blocks, whose files are left to delete.
    pub async fn load(storage: &Storage) -> Result<(Self, Vec<BlockMeta>), StorageError> {
        let metas = list_metas(storage).await?;
        let replaced: HashSet<&str> = metas
            .iter()
            .flat_map(|m| m.compacted_from.iter().map(String::as_str))
            .collect();
        let (superseded, current): (Vec<_>, Vec<_>) = metas
            .iter()
            .cloned()
            .partition(|m| replaced.contains(m.block_id.as_str()));
        let catalog = Catalog::default();
        for meta in current {
            catalog.add(meta);
        }
        Ok((catalog, superseded))
    }

    /// Commits a compaction in one step: adds `new` and removes the blocks it replaces.
    /// Returns the removed blocks.
    pub fn replace(&self, new: BlockMeta) -> Vec<Arc<BlockMeta>> {
        let mut blocks = self.blocks.write();
        let list = blocks.entry(new.tenant.clone()).or_default();
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(list)
            .into_iter()
            .partition(|b| new.compacted_from.contains(&b.block_id));
        *list = kept;
        list.push(Arc::new(new));
        removed
    }

    /// Removes blocks from the catalog (retention); readers that listed them before keep
    /// reading their files until those are deleted.
    pub fn remove(&self, tenant: &str, block_ids: &[String]) -> Vec<Arc<BlockMeta>> {
        let mut blocks = self.blocks.write();
        let Some(list) = blocks.get_mut(tenant) else {
            return Vec::new();
        };
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(list)
            .into_iter()
            .partition(|b| block_ids.contains(&b.block_id));
        *list = kept;
        removed
    }

    /// Records a newly committed block.
    pub fn add(&self, meta: BlockMeta) {
        let mut blocks = self.blocks.write();
        let list = blocks.entry(meta.tenant.clone()).or_default();
        if !list.iter().any(|b| b.block_id == meta.block_id) {
            list.push(Arc::new(meta));
        }
    }

    /// The committed blocks of one tenant and signal.
    pub fn blocks(&self, tenant: &str, signal: Signal) -> Vec<Arc<BlockMeta>> {
        self.blocks
            .read()
            .get(tenant)
            .map(|list| {
                list.iter()
                    .filter(|b| b.signal == signal)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The committed blocks of one tenant, of every signal.
    pub fn all_blocks(&self, tenant: &str) -> Vec<Arc<BlockMeta>> {
        self.blocks.read().get(tenant).cloned().unwrap_or_default()
    }

    /// The tenants with committed blocks, in order.
    pub fn tenants(&self) -> Vec<String> {
        self.blocks.read().keys().cloned().collect()
    }

    /// The highest WAL segment any block of `tenant`/`signal`/`shard` covers.
    pub fn wal_through(&self, tenant: &str, signal: Signal, shard: u32) -> Option<u64> {
        self.blocks
            .read()
            .get(tenant)?
            .iter()
            .filter(|b| b.signal == signal && b.shard == shard)
            .map(|b| b.wal_through)
            .max()
    }

    /// The highest WAL segment any block covers.
    pub fn max_wal_through(&self) -> u64 {
        self.blocks
            .read()
            .values()
            .flatten()
            .map(|b| b.wal_through)
            .max()
            .unwrap_or(0)
    }
}

async fn list_metas(storage: &Storage) -> Result<Vec<BlockMeta>, StorageError> {
    let store = storage.store();
    let objects: Vec<_> = store.list(None).try_collect().await?;
    let mut metas = Vec::new();
    for object in objects
        .iter()
        .filter(|o| o.location.filename() == Some(META_FILE))
    {
        let bytes = store.get(&object.location).await?.bytes().await?;
        let meta = serde_json::from_slice(&bytes).map_err(|source| StorageError::Meta {
            path: object.location.to_string(),
            source,
        })?;
        metas.push(meta);
    }
    Ok(metas)
}

/// Deletes the files of blocks that were never committed (no `meta.json`): what a crash
/// during a flush leaves behind. Returns how many block directories were removed.
pub async fn remove_uncommitted(storage: &Storage) -> Result<usize, StorageError> {
    match storage.local_root.clone() {
        Some(root) => Ok(
            tokio::task::spawn_blocking(move || remove_uncommitted_dirs(&root))
                .await
                .map_err(std::io::Error::other)??,
        ),
        None => remove_uncommitted_objects(storage).await,
    }
}

/// Removes the block directories of a local store that have no `meta.json`, whatever they
/// hold. A write the crash interrupted leaves a staging file (`data.parquet#1`), which the
/// object store does not list and so could not delete.
fn remove_uncommitted_dirs(root: &std::path::Path) -> std::io::Result<usize> {
    let subdirs = |dir: &std::path::Path| -> std::io::Result<Vec<std::path::PathBuf>> {
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        Ok(dirs)
    };
    let name = |p: &std::path::Path| p.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    let mut removed = 0;
    for tenant in subdirs(root)? {
        for signal in subdirs(&tenant)? {
            if !name(&signal).is_some_and(|n| ["traces", "logs", "metrics"].contains(&n.as_str())) {
                continue;
            }
            for shard in subdirs(&signal)? {
                if !name(&shard).is_some_and(|n| n.starts_with("shard-")) {
                    continue;
                }
                for block in subdirs(&shard)? {
                    if !block.join(META_FILE).is_file() {
                        std::fs::remove_dir_all(&block)?;
                        removed += 1;
                    }
                }
            }
        }
    }
    Ok(removed)
}

/// [`remove_uncommitted`] through the object store's listing, for remote stores.
async fn remove_uncommitted_objects(storage: &Storage) -> Result<usize, StorageError> {
    let store = storage.store();
    let objects: Vec<_> = store.list(None).try_collect().await?;
    let parent = |p: &Path| -> String {
        let s = p.to_string();
        s.rsplit_once('/')
            .map(|(dir, _)| dir.to_string())
            .unwrap_or_default()
    };
    // Only what has the shape of a block file is spanlake's to remove:
    // `{tenant}/{signal}/shard-{n}/{block_id}/{file}`.
    let objects: Vec<_> = objects
        .into_iter()
        .filter(|o| {
            let parts: Vec<_> = o.location.parts().collect();
            parts.len() == 5
                && ["traces", "logs", "metrics"].contains(&parts[1].as_ref())
                && parts[2].as_ref().starts_with("shard-")
        })
        .collect();
    let committed: HashSet<String> = objects
        .iter()
        .filter(|o| o.location.filename() == Some(META_FILE))
        .map(|o| parent(&o.location))
        .collect();
    let mut removed = HashSet::new();
    for object in &objects {
        let dir = parent(&object.location);
        if !committed.contains(&dir) {
            store.delete(&object.location).await?;
            removed.insert(dir);
        }
    }
    Ok(removed.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DATA_FILE;

    #[tokio::test]
    async fn a_block_left_with_only_a_staging_file_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let shard = root.path().join("t1/traces/shard-0");
        let committed = shard.join("committed");
        let staged = shard.join("staged");
        let written = shard.join("written");
        for dir in [&committed, &staged, &written] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(committed.join(DATA_FILE), b"rows").unwrap();
        std::fs::write(committed.join(META_FILE), b"{}").unwrap();
        std::fs::write(staged.join(format!("{DATA_FILE}#1")), b"half").unwrap();
        std::fs::write(written.join(DATA_FILE), b"rows").unwrap();
        let storage = Storage::open(root.path().to_str().unwrap()).unwrap();

        assert_eq!(remove_uncommitted(&storage).await.unwrap(), 2);
        assert!(committed.join(META_FILE).is_file());
        assert!(!staged.exists() && !written.exists());
    }
}
