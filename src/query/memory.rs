//! Query memory: one pool bounds all queries together, and each tenant's queries together
//! are bounded again, so one tenant cannot take the memory every other tenant queries with.
//! A query past either bound fails with DataFusion's resources-exhausted error (a `Limit`
//! [`super::QueryError`]) or spills; it never takes the process down.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{Result, resources_datafusion_err};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// One tenant's share of the shared pool.
#[derive(Debug)]
pub struct TenantPool {
    tenant: String,
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl TenantPool {
    /// A pool of at most `limit` bytes for `tenant`, taken from `shared`.
    pub fn new(tenant: &str, shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        Self {
            tenant: tenant.to_string(),
            shared,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for TenantPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant {} pool: {} of {} bytes",
            self.tenant,
            self.reserved(),
            self.limit
        )
    }
}

impl MemoryPool for TenantPool {
    fn name(&self) -> &str {
        "tenant"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::Relaxed);
        if before + additional > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(resources_datafusion_err!(
                "tenant {} may use {} bytes of query memory at once; {} more were asked for with {before} in use",
                self.tenant,
                self.limit,
                additional
            ));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}
