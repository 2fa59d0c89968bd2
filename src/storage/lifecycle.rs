//! The lifecycle of committed blocks: retention removes blocks wholly older than their
//! tenant's and signal's retention, compaction merges small ones ([`super::compact`]), and
//! both leave the removed blocks' files in place for a grace period, so that a query that
//! listed them before keeps reading them; only then are they deleted.
//!
//! A block is removed by retention only once no WAL segment it covers is left on disk: replay
//! skips WAL records that a committed block covers, and a block gone early would let a crash
//! bring its rows back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::compact::{self, CompactionPolicy};
use super::{BlockMeta, Catalog, Storage, StorageError};
use crate::config::RetentionSettings;
use crate::schema::Signal;
use crate::telemetry::Telemetry;

/// The oldest WAL segment still on disk, if any.
pub type WalOldest = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// Compacts, enforces retention and deletes retired blocks.
pub struct Lifecycle {
    storage: Storage,
    catalog: Arc<Catalog>,
    policy: CompactionPolicy,
    retention: RetentionSettings,
    delete_grace: Duration,
    wal_oldest: WalOldest,
    telemetry: Option<Telemetry>,
    /// Blocks out of the catalog whose files wait for the grace period to pass.
    retired: Mutex<Vec<(Arc<BlockMeta>, Instant)>>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("policy", &self.policy)
            .field("delete_grace", &self.delete_grace)
            .finish_non_exhaustive()
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LifecycleReport {
    /// Compactions committed.
    pub compactions: usize,
    /// Blocks those compactions replaced.
    pub compacted_blocks: usize,
    /// Blocks retention removed from the catalog.
    pub expired_blocks: usize,
    /// Retired blocks whose files were deleted.
    pub deleted_blocks: usize,
}

impl Lifecycle {
    /// A lifecycle over `catalog`'s blocks in `storage`.
    pub fn new(
        storage: Storage,
        catalog: Arc<Catalog>,
        policy: CompactionPolicy,
        retention: RetentionSettings,
        delete_grace: Duration,
        wal_oldest: WalOldest,
    ) -> Self {
        Self {
            storage,
            catalog,
            policy,
            retention,
            delete_grace,
            wal_oldest,
            telemetry: None,
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The same lifecycle, counting what it does in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// One pass: retention, then every compaction due, then deletion of the blocks retired at
    /// least a grace period ago.
    pub async fn run_once(&self, now_ns: i64) -> Result<LifecycleReport, StorageError> {
        let mut report = LifecycleReport {
            expired_blocks: self.expire(now_ns),
            ..Default::default()
        };
        for group in compact::plan(&self.catalog, &self.policy, now_ns) {
            // One group that cannot be compacted (an unreadable file, say) must not hold up
            // the others, nor retention and deletion: it stays as it is and is logged.
            let compaction = match compact::compact(&self.storage, &self.catalog, &group).await {
                Ok(compaction) => compaction,
                Err(e) => {
                    let blocks: Vec<&str> = group.iter().map(|b| b.block_id.as_str()).collect();
                    tracing::error!(error = %e, ?blocks, "compaction failed; the blocks stay as they are");
                    continue;
                }
            };
            report.compactions += 1;
            report.compacted_blocks += compaction.replaced.len();
            if let Some(telemetry) = &self.telemetry {
                telemetry.compacted(
                    compaction.block.signal.name(),
                    compaction.replaced.len(),
                    compaction.input_bytes(),
                );
            }
            self.retire(compaction.replaced);
        }
        report.deleted_blocks = self.delete_retired(self.delete_grace).await?;
        Ok(report)
    }

    /// Deletes every retired block now, whatever its age: for a data directory no server
    /// reads (`spanlake compact`).
    pub async fn delete_all_retired(&self) -> Result<usize, StorageError> {
        self.delete_retired(Duration::ZERO).await
    }

    /// Runs a pass every `interval` until `stop` resolves.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        // The first pass comes one interval after start, not at once.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    match self.run_once(crate::time::now_ns()).await {
                        Ok(report) if report != LifecycleReport::default() => {
                            tracing::info!(?report, "block lifecycle pass");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "block lifecycle pass failed; it is retried"),
                    }
                }
            }
        }
    }

    /// Removes from the catalog the blocks wholly older than their retention.
    fn expire(&self, now_ns: i64) -> usize {
        let wal_oldest = (self.wal_oldest)();
        let mut expired = 0;
        for tenant in self.catalog.tenants() {
            let due: Vec<String> = self
                .catalog
                .all_blocks(&tenant)
                .iter()
                .filter(|b| {
                    let Some(keep) = retention_of(&self.retention, &tenant, b.signal) else {
                        return false;
                    };
                    let horizon = now_ns.saturating_sub(keep.as_nanos() as i64);
                    b.max_time_ns < horizon && wal_oldest.is_none_or(|o| b.wal_through < o)
                })
                .map(|b| b.block_id.clone())
                .collect();
            if due.is_empty() {
                continue;
            }
            let removed = self.catalog.remove(&tenant, &due);
            expired += removed.len();
            if let Some(telemetry) = &self.telemetry {
                for block in &removed {
                    telemetry.retention_deleted(block.signal.name(), 1);
                }
            }
            self.retire(removed);
        }
        expired
    }

    fn retire(&self, blocks: Vec<Arc<BlockMeta>>) {
        let now = Instant::now();
        self.retired
            .lock()
            .extend(blocks.into_iter().map(|b| (b, now)));
    }

    async fn delete_retired(&self, grace: Duration) -> Result<usize, StorageError> {
        let due: Vec<Arc<BlockMeta>> = {
            let mut retired = self.retired.lock();
            let now = Instant::now();
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|(_, at)| now.saturating_duration_since(*at) >= grace);
            *retired = waiting;
            due.into_iter().map(|(b, _)| b).collect()
        };
        for (i, block) in due.iter().enumerate() {
            if let Err(e) = self.storage.delete_block(block).await {
                // Put the rest back: they are retried next pass.
                let long_ago = Instant::now()
                    .checked_sub(grace)
                    .unwrap_or_else(Instant::now);
                self.retired
                    .lock()
                    .extend(due[i..].iter().map(|b| (b.clone(), long_ago)));
                return Err(e);
            }
        }
        Ok(due.len())
    }
}

/// How long `tenant`'s blocks of `signal` are kept; `None` keeps them forever.
pub fn retention_of(
    settings: &RetentionSettings,
    tenant: &str,
    signal: Signal,
) -> Option<Duration> {
    let tenant = settings.tenants.get(tenant);
    let kept = match signal {
        Signal::Traces => tenant.and_then(|t| t.traces).unwrap_or(settings.traces),
        Signal::Logs => tenant.and_then(|t| t.logs).unwrap_or(settings.logs),
        Signal::Metrics => tenant.and_then(|t| t.metrics).unwrap_or(settings.metrics),
    };
    (!kept.is_zero()).then_some(kept)
}
