//! The query layer: every DataFusion plan spanlake runs is built here.
//!
//! A request arrives typed (a [`search::SearchRequest`], a [`trace::TraceRequest`], a
//! [`tags::TagsRequest`], SQL text) from an edge — the Tempo API, SQL over HTTP, the CLI — and
//! leaves as typed results or an Arrow stream. In between this layer checks TraceQL with
//! [`crate::traceql`], lowers it ([`traceql`]), plans in a tenant-scoped DataFusion session and
//! runs the plan. Failures are one [`QueryError`] whose [`ErrorKind`] each transport maps once.
//!
//! Every query gets its own `SessionContext` holding only its tenant's `spans`, `traces`, `logs`
//! and `metrics`, sharing one runtime whose memory pool bounds all queries together. The
//! session is a copy of the tenant's session state, built once (functions, tables, options),
//! so a query's settings stay its own while building a session costs a copy, not a setup.
//! SQL runs with DDL, DML (including `COPY`) and statements refused, and with no table
//! function that reads files, so a query can reach nothing but its tenant's tables.
//!
//! This layer reads tables; it must not know HTTP, gRPC or Tempo's wire formats, and it never
//! touches storage or the ingester except through [`crate::tables`].

pub mod cluster;
mod conjuncts;
pub mod correlate;
pub mod error;
pub mod memory;
pub mod metrics;
pub mod report;
pub mod search;
pub mod sql;
pub mod tags;
pub mod trace;
pub mod traceql;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider,
};
use datafusion::datasource::TableProvider;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::prelude::{SessionConfig, SessionContext};
use parking_lot::Mutex;

pub use error::{ErrorKind, QueryError, Result};

use crate::live::LiveSource;
use crate::schema::TableKind;
use crate::storage::{Catalog, Storage};
use crate::tables::{BlockCache, SpanlakeTable};

/// Builds tenant-scoped sessions over the blocks of a catalog and a live source.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    shared_pool: Arc<dyn MemoryPool>,
    tenant_memory_limit: usize,
    /// One runtime per tenant, each with its share of the shared pool.
    runtimes: Arc<Mutex<HashMap<String, Arc<RuntimeEnv>>>>,
    /// Each tenant's session state, copied for each query.
    states: Arc<Mutex<HashMap<String, SessionStart>>>,
    storage: Storage,
    catalog: Arc<Catalog>,
    live: Arc<dyn LiveSource>,
    /// Target partitions of every session; DataFusion's default (the cores) when `None`.
    partitions: Option<usize>,
    /// As a cluster member: how sessions read across the cluster.
    cluster: Option<cluster::ClusterQueries>,
    /// Decoded block columns kept for search scans, shared by every tenant's sessions (keys
    /// are block files, each a tenant's own).
    block_cache: Option<Arc<BlockCache>>,
}

impl QueryEngine {
    /// An engine reading `storage` and `live`, with all queries together bounded to
    /// `memory_limit` bytes and each tenant's queries together to `tenant_memory_limit`.
    pub fn new(
        storage: &Storage,
        catalog: Arc<Catalog>,
        live: Arc<dyn LiveSource>,
        memory_limit: usize,
        tenant_memory_limit: usize,
    ) -> Result<Self> {
        Ok(Self {
            shared_pool: Arc::new(FairSpillPool::new(memory_limit)),
            tenant_memory_limit: tenant_memory_limit.min(memory_limit),
            runtimes: Arc::new(Mutex::new(HashMap::new())),
            states: Arc::new(Mutex::new(HashMap::new())),
            storage: storage.clone(),
            catalog,
            live,
            partitions: None,
            cluster: None,
            block_cache: None,
        })
    }

    /// The same engine keeping up to `bytes` of decoded block columns for search scans (none
    /// when 0).
    pub fn with_block_cache(mut self, bytes: u64) -> Self {
        self.block_cache = (bytes > 0).then(|| Arc::new(BlockCache::new(bytes)));
        self.states.lock().clear();
        self
    }

    /// The block cache, if the engine keeps one.
    pub fn block_cache(&self) -> Option<&Arc<BlockCache>> {
        self.block_cache.as_ref()
    }

    /// The same engine with sessions split into `partitions` (the cores when `None`).
    pub fn with_partitions(mut self, partitions: Option<usize>) -> Self {
        self.partitions = partitions.filter(|n| *n > 0);
        self.states.lock().clear();
        self
    }

    /// The runtime of `tenant`'s queries.
    fn runtime(&self, tenant: &str) -> Result<Arc<RuntimeEnv>> {
        if let Some(runtime) = self.runtimes.lock().get(tenant) {
            return Ok(runtime.clone());
        }
        let pool =
            memory::TenantPool::new(tenant, self.shared_pool.clone(), self.tenant_memory_limit);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()?;
        runtime.register_object_store(Storage::object_store_url().as_ref(), self.storage.store());
        Ok(self
            .runtimes
            .lock()
            .entry(tenant.to_string())
            .or_insert(runtime)
            .clone())
    }

    /// Each tenant's Parquet metadata cache: files cached, hits on them, bytes.
    pub fn metadata_caches(&self) -> Vec<crate::telemetry::TenantCache> {
        let runtimes = self.runtimes.lock();
        runtimes
            .iter()
            .map(|(tenant, runtime)| {
                let entries = runtime
                    .cache_manager
                    .get_file_metadata_cache()
                    .list_entries();
                crate::telemetry::TenantCache {
                    tenant: tenant.clone(),
                    entries: entries.len() as u64,
                    hits: entries.values().map(|e| e.hits as u64).sum(),
                    bytes: entries.values().map(|e| e.size_bytes as u64).sum(),
                }
            })
            .collect()
    }

    /// The blocks this engine reads.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// A session that sees exactly `tenant`'s tables, for the plans this layer builds.
    pub fn session(&self, tenant: &str) -> Result<SessionContext> {
        self.session_of(tenant, false)
    }

    /// A session for SQL written by a user: the same tables, read as analysts query them
    /// (see [`SpanlakeTable::analytic`]).
    pub fn sql_session(&self, tenant: &str) -> Result<SessionContext> {
        self.session_of(tenant, true)
    }

    fn session_of(&self, tenant: &str, analytic: bool) -> Result<SessionContext> {
        let cached = self.states.lock().get(tenant).cloned();
        let start = match cached {
            Some(start) => start,
            None => {
                let start = self.new_start(tenant)?;
                self.states
                    .lock()
                    .entry(tenant.to_string())
                    .or_insert(start)
                    .clone()
            }
        };
        let mut state = if analytic {
            start.state
        } else {
            start.search_state
        };
        // A catalog of the session's own: views a query registers stay in its session.
        let schema = MemorySchemaProvider::new();
        let tables = if analytic {
            start.analytic_tables
        } else {
            start.tables
        };
        for (name, table) in tables {
            schema.register_table(name.to_string(), table)?;
        }
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(SCHEMA, Arc::new(schema))?;
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(CATALOG.to_string(), Arc::new(catalog));
        state.register_catalog_list(Arc::new(catalogs));
        if self.cluster.is_some() {
            state
                .config_mut()
                .set_extension(cluster::current_partial_record());
        }
        Ok(SessionContext::new_with_state(state))
    }

    /// What every session of `tenant` starts from: the tenant's tables, and a state with
    /// spanlake's functions and the tenant's runtime.
    fn new_start(&self, tenant: &str) -> Result<SessionStart> {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, SCHEMA);
        if let Some(partitions) = self.partitions {
            config = config.with_target_partitions(partitions);
        }
        let ctx = SessionContext::new_with_config_rt(config, self.runtime(tenant)?);
        spanlake_udfs::register_all(&ctx);
        let held = Arc::new(search::HeldState(search::held_state(&ctx.state())));
        if let Some(cluster) = &self.cluster {
            let state = cluster.distribute(ctx.state())?;
            return Ok(SessionStart {
                search_state: for_search(state.clone(), held),
                state,
                tables: cluster.tables(tenant, false),
                analytic_tables: cluster.tables(tenant, true),
            });
        }
        let tables = |analytic: bool| {
            TableKind::ALL
                .into_iter()
                .map(|kind| {
                    let table =
                        SpanlakeTable::new(kind, tenant, self.catalog.clone(), self.live.clone())
                            .with_block_cache(self.block_cache.clone());
                    let table = if analytic { table.analytic() } else { table };
                    (kind.name(), Arc::new(table) as Arc<dyn TableProvider>)
                })
                .collect()
        };
        let search_state = SessionStateBuilder::new_from_existing(ctx.state())
            .with_physical_optimizer_rules(search_physical_rules())
            .build();
        Ok(SessionStart {
            state: ctx.state(),
            search_state: for_search(search_state, held),
            tables: tables(false),
            analytic_tables: tables(true),
        })
    }
}

/// The catalog and schema holding a session's tables.
const CATALOG: &str = "spanlake";
const SCHEMA: &str = "public";

/// `state` set for the plans this layer builds, with `held` for plans over held rows.
///
/// - Logical plans are optimized in one pass of the optimizer's rules. These plans need no
///   more: each further pass costs as much planning time again, on every search, and their
///   answers do not depend on it (the tests and the TraceQL conformance suite run with one
///   pass).
/// - An aggregate whose first 8192 rows are mostly distinct groups, such as a summary of each
///   trace, hands its rows on instead of aggregating them twice.
fn for_search(mut state: SessionState, held: Arc<search::HeldState>) -> SessionState {
    let options = state.config_mut().options_mut();
    options.optimizer.max_passes = 1;
    options
        .execution
        .skip_partial_aggregation_probe_rows_threshold = 8192;
    state.config_mut().set_extension(held);
    state
}

/// The physical optimizer rules of the plans this layer builds for searches, tag queries and
/// traces: of DataFusion's rules, those that make a plan run correctly (distribution and
/// ordering each operator requires, join modes) and those that pay for themselves on such
/// plans (one-stage aggregates, limits pushed into sorts, dynamic filters for Parquet scans),
/// and last spanlake's own ordering of filter tests ([`conjuncts::CheapTestsFirst`]).
/// The others rewrite shapes these plans do not have, or save less time than they take: each
/// rewrite rebuilds every node above the one it changes.
fn search_physical_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    use datafusion::physical_optimizer::combine_partial_final_agg::CombinePartialFinalAggregate;
    use datafusion::physical_optimizer::ensure_coop::EnsureCooperative;
    use datafusion::physical_optimizer::ensure_requirements::EnsureRequirements;
    use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
    use datafusion::physical_optimizer::join_selection::JoinSelection;
    use datafusion::physical_optimizer::limit_pushdown::LimitPushdown;
    use datafusion::physical_optimizer::output_requirements::OutputRequirements;
    vec![
        Arc::new(OutputRequirements::new_add_mode()),
        Arc::new(JoinSelection::new()),
        Arc::new(EnsureRequirements::new()),
        Arc::new(CombinePartialFinalAggregate::new()),
        Arc::new(OutputRequirements::new_remove_mode()),
        Arc::new(LimitPushdown::new()),
        Arc::new(EnsureCooperative::new()),
        Arc::new(FilterPushdown::new_post_optimization()),
        Arc::new(conjuncts::CheapTestsFirst),
    ]
}

/// What a tenant's sessions start from.
#[derive(Clone)]
struct SessionStart {
    /// For SQL written by a user: DataFusion's optimizers as they come.
    state: SessionState,
    /// For the plans this layer builds.
    search_state: SessionState,
    tables: Vec<(&'static str, Arc<dyn TableProvider>)>,
    analytic_tables: Vec<(&'static str, Arc<dyn TableProvider>)>,
}

impl std::fmt::Debug for SessionStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStart")
            .field("tables", &self.tables.len())
            .finish_non_exhaustive()
    }
}
