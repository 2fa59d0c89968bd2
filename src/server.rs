//! One spanlake process: storage, ingester, query engine and every listener, started together
//! and stopped together (stopping flushes every live trace to a block). This module wires the
//! layers together and decides nothing they decide.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::generator::{Generator, MetricsAggregator};
use crate::ingest::distributor::{Distributor, PushService};
use crate::ingest::{self, Receiver, Transport};
use crate::ingester::{CutPolicy, Ingester, IngesterConfig};
use crate::live::LiveSource;
use crate::query::QueryEngine;
use crate::storage::compact::CompactionPolicy;
use crate::storage::lifecycle::Lifecycle;
use crate::storage::{Catalog, Storage, remove_uncommitted};
use crate::telemetry::{BlockLevel, Telemetry, TenantBlocks};
use crate::tempo::{self, TempoApi, grpc::TempoGrpc};

/// Errors while starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Ingester(#[from] crate::ingester::IngesterError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error("cannot start Flight SQL: {0}")]
    Flight(String),
    #[error("invalid scheduled report: {0}")]
    Reports(String),
    #[error("cannot open the cluster's handoff state: {0}")]
    Handoff(String),
    #[error("cannot lock the data directory {dir}: {source}")]
    DataDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data directory {0} is in use by another spanlake process; stop it first or give this one its own --data-dir"
    )]
    DataDirInUse(std::path::PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The file a writing process holds locked in its data directory.
const LOCK_FILE: &str = "spanlake.lock";

/// Locks `dir` for this process: two processes writing one WAL, or one removing the blocks
/// the other is writing as left over from a crash, would lose data. The operating system
/// releases the lock when the file is closed or the process dies.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let failed = |source| StartError::DataDir {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::DataDirInUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

/// The storage side of a process: what both `serve` and offline `sql` open.
pub struct Opened {
    pub storage: Storage,
    pub catalog: Arc<Catalog>,
    pub ingester: Arc<Ingester>,
    pub engine: QueryEngine,
    /// The cluster this node is a member of, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// The data directory's lock, held by a process that writes (none when read-only).
    lock: Option<std::fs::File>,
}

/// Opens storage, the catalog and the ingester (replaying the WAL) for `config`.
/// `read_only` opens without a WAL writer and without cleaning up, to inspect a data directory.
pub async fn open(config: &Config, read_only: bool) -> Result<Opened, StartError> {
    config.validate()?;
    let lock = if read_only {
        None
    } else {
        Some(lock_data_dir(&config.data_dir)?)
    };
    let mut storage = Storage::open_with(&config.storage_url(), &config.storage_options)?;
    if let Some(dir) = &config.storage_cache_dir {
        storage = storage.with_disk_cache(dir.clone(), config.storage_cache_bytes)?;
    }
    if !read_only {
        let removed = remove_uncommitted(&storage).await?;
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed half-written blocks left by an earlier crash"
            );
        }
    }
    let (catalog, superseded) = Catalog::load(&storage).await?;
    if !read_only && !superseded.is_empty() {
        // A compaction committed its block but stopped before deleting the ones it replaced.
        for meta in &superseded {
            storage.delete_block(meta).await?;
        }
        tracing::info!(
            removed = superseded.len(),
            "removed blocks an earlier compaction had replaced"
        );
    }
    let catalog = Arc::new(catalog);
    let settings = &config.ingester;
    let ingester = Arc::new(Ingester::open(
        IngesterConfig {
            wal_dir: config.wal_dir(),
            policy: CutPolicy {
                trace_idle: settings.trace_idle,
                max_block_bytes: settings.max_block_bytes,
                max_block_age: settings.max_block_age,
                shards: settings.shards,
            },
            flushed_grace: settings.flushed_grace,
            flush_check: settings.flush_check,
            max_live_bytes_per_tenant: settings.max_live_bytes_per_tenant,
        },
        storage.clone(),
        catalog.clone(),
        read_only,
    )?);
    let live: Arc<dyn LiveSource> = ingester.clone();
    let mut engine = QueryEngine::new(
        &storage,
        catalog.clone(),
        live,
        config.query_memory_limit,
        config
            .query_memory_limit_per_tenant
            .unwrap_or(config.query_memory_limit),
    )?
    .with_partitions(config.query_partitions)
    .with_block_cache(config.query.block_cache_bytes);
    // Reading a data directory offline reads this node's data alone.
    let cluster = match &config.cluster {
        Some(settings) if !read_only => {
            let handoff = config.data_dir.join("handoff");
            Some(
                Cluster::new(settings.clone(), config.ingester.shards, &handoff)
                    .map_err(|e| StartError::Handoff(e.to_string()))?,
            )
        }
        _ => None,
    };
    if let Some(cluster) = &cluster {
        let reader = api::cluster::ClusterReader::new(engine.clone(), cluster.clone());
        engine = engine.with_cluster(cluster.clone(), Arc::new(reader));
    }
    Ok(Opened {
        cluster,
        storage,
        catalog,
        ingester,
        engine,
        lock,
    })
}

/// The block lifecycle (compaction, retention, deletion) of `config` over `catalog`.
pub fn lifecycle(config: &Config, storage: &Storage, catalog: &Arc<Catalog>) -> Lifecycle {
    let compaction = &config.compaction;
    let policy = CompactionPolicy {
        window_ns: crate::time::duration_ns(compaction.window),
        max_rows: compaction.max_block_rows,
        // Blocks flushed less than a grace period ago may still be read live.
        min_age_ns: crate::time::duration_ns(config.ingester.flushed_grace),
    };
    let wal_dir = config.wal_dir();
    let wal_oldest = Arc::new(
        move || match crate::ingester::oldest_wal_segment(&wal_dir) {
            Ok(oldest) => oldest,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the WAL; retention waits");
                Some(0)
            }
        },
    );
    Lifecycle::new(
        storage.clone(),
        catalog.clone(),
        policy,
        config.retention.clone(),
        compaction.delete_grace,
        wal_oldest,
    )
}

/// A running server.
pub struct Server {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub flight_addr: SocketAddr,
    /// The cluster's internal services, when this node is a member of one.
    pub cluster_addr: Option<SocketAddr>,
    /// The cluster this node is a member of, if any.
    pub cluster: Option<Arc<Cluster>>,
    pub ingester: Arc<Ingester>,
    pub engine: QueryEngine,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    flusher: JoinHandle<()>,
    /// Held until the server is dropped.
    _lock: Option<std::fs::File>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Server {
    /// Starts every component; with `demo`, also generates synthetic traffic continuously.
    pub async fn start(config: Config, demo: bool) -> Result<Server, StartError> {
        let opened = open(&config, false).await?;
        let (stop, stop_rx) = watch::channel(false);
        let telemetry = telemetry(&opened.catalog, &opened.ingester);
        let engine = opened.engine.clone();
        telemetry.caches_from(move || engine.metadata_caches());
        let storage = opened.storage.clone();
        telemetry.disk_cache_from(move || storage.disk_cache_hits_and_misses());
        let engine = opened.engine.clone();
        telemetry.block_cache_from(move || {
            let cache = engine.block_cache()?;
            let (hits, misses) = cache.hits_and_misses();
            Some((hits, misses, cache.bytes()))
        });
        let measure = api::measure::MeasureLayer::new(telemetry.clone());
        let flight_measure = measure.clone();
        let cluster = opened.cluster.clone();
        if let Some(cluster) = &cluster {
            // Before serving: the marks the others recorded while this member was away keep
            // reads off shards it misses rows of.
            cluster.check_members().await;
        }
        let receiver = Receiver {
            ingester: opened.ingester.clone(),
            multitenancy: config.multitenancy,
            max_request_bytes: config.max_request_bytes,
            telemetry: telemetry.clone(),
            distributor: cluster
                .clone()
                .map(|c| Distributor::new(c, config.ingester.shards)),
        };

        let http = bind(config.http_listen).await?;
        let grpc = bind(config.grpc_listen).await?;
        let otlp_http = bind(config.otlp_http_listen).await?;
        let otlp_grpc = bind(config.otlp_grpc_listen).await?;
        let flight = bind(config.flight_listen).await?;
        let internal = match &cluster {
            Some(_) => Some(bind(config.cluster_listen).await?),
            None => None,
        };
        let addr = |l: &TcpListener| {
            l.local_addr().map_err(|source| StartError::Bind {
                addr: config.http_listen,
                source,
            })
        };
        let (http_addr, grpc_addr, otlp_http_addr, otlp_grpc_addr, flight_addr) = (
            addr(&http)?,
            addr(&grpc)?,
            addr(&otlp_http)?,
            addr(&otlp_grpc)?,
            addr(&flight)?,
        );

        let mut tasks = Vec::new();
        let partial = api::partial::PartialLayer {
            allow: config.cluster.as_ref().is_none_or(|c| c.partial_results),
        };
        let tempo_api = TempoApi::new(
            opened.engine.clone(),
            config.query.clone(),
            config.multitenancy,
        );
        let tempo_grpc = TempoGrpc::new(tempo_api.clone());
        // Grafana dials gRPC at the HTTP address: the gRPC services share the port (h2c).
        let grpc_routes = tonic::service::Routes::new(tempo_grpc.streaming())
            .add_service(tempo_grpc.querier())
            .into_axum_router();
        let reports = config
            .reports
            .iter()
            .map(crate::report::scheduled::Entry::from_config)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StartError::Reports(e.to_string()))?;
        let api = api::http::router(api::http::ApiState {
            engine: opened.engine.clone(),
            multitenancy: config.multitenancy,
            storage: opened.storage.clone(),
            cluster: cluster.clone(),
        })
        .merge(tempo::http::router(tempo_api))
        .merge(grpc_routes)
        .merge(api::metrics::router(telemetry.clone()))
        .fallback(unmatched)
        .layer(partial)
        .layer(measure.clone());
        tasks.push(serve_http(http, api, stopped(stop_rx.clone())));
        let tempo_stop = stopped(stop_rx.clone());
        let tempo_measure = measure.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = without_delay(grpc);
            let result = tonic::transport::Server::builder()
                .layer(tempo_measure)
                .layer(partial)
                .add_service(tempo_grpc.streaming())
                .add_service(tempo_grpc.querier())
                .serve_with_incoming_shutdown(incoming, tempo_stop)
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "tempopb gRPC server failed");
            }
        }));
        tasks.push(serve_http(
            otlp_http,
            ingest::http::router(receiver.clone()).layer(measure.clone()),
            stopped(stop_rx.clone()),
        ));
        let grpc_stop = stopped(stop_rx.clone());
        let otlp_services = ingest::grpc::services(receiver.clone());
        tasks.push(tokio::spawn(async move {
            let incoming = without_delay(otlp_grpc);
            let result = tonic::transport::Server::builder()
                .layer(measure)
                .add_service(otlp_services.traces)
                .add_service(otlp_services.logs)
                .add_service(otlp_services.metrics)
                .serve_with_incoming_shutdown(incoming, grpc_stop)
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "OTLP gRPC server failed");
            }
        }));
        let flight_service = api::flight::FlightSql::new(
            opened.engine.clone(),
            config.flight.clone(),
            config.multitenancy,
        )
        .map_err(|e| StartError::Flight(e.to_string()))?
        .service();
        let flight_stop = stopped(stop_rx.clone());
        let mut flight_server = tonic::transport::Server::builder();
        if let (Some(cert), Some(key)) = (&config.flight.tls_cert, &config.flight.tls_key) {
            let read = |path: &std::path::PathBuf| {
                std::fs::read(path)
                    .map_err(|e| StartError::Flight(format!("cannot read {}: {e}", path.display())))
            };
            let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
            flight_server = flight_server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(|e| StartError::Flight(format!("TLS: {e}")))?;
        }
        tasks.push(tokio::spawn(async move {
            let incoming = without_delay(flight);
            let result = flight_server
                .layer(flight_measure)
                .layer(partial)
                .add_service(flight_service)
                .serve_with_incoming_shutdown(incoming, flight_stop)
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "Flight SQL server failed");
            }
        }));
        let mut cluster_addr = None;
        if let (Some(cluster), Some(internal)) = (&cluster, internal) {
            cluster_addr = Some(addr(&internal)?);
            let internal_stop = stopped(stop_rx.clone());
            let push = PushService::server(opened.ingester.clone(), cluster.clone());
            let cluster_telemetry = telemetry.clone();
            let shards = api::cluster::ShardService::server(opened.engine.clone());
            let worker = opened
                .engine
                .cluster_worker()
                .map(|w| w.into_worker_server());
            tasks.push(tokio::spawn(async move {
                let incoming = counted(without_delay(internal), cluster_telemetry);
                let result = tonic::transport::Server::builder()
                    .add_service(push)
                    .add_service(shards)
                    .add_optional_service(worker)
                    .serve_with_incoming_shutdown(incoming, internal_stop)
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "cluster gRPC server failed");
                }
            }));
            tasks.push(tokio::spawn(
                cluster.clone().run_health_checks(stopped(stop_rx.clone())),
            ));
        }
        tasks.push(tokio::spawn(crate::report::scheduled::run_schedules(
            reports,
            opened.engine.clone(),
            opened.storage.clone(),
            stopped(stop_rx.clone()),
        )));
        if demo {
            tasks.push(tokio::spawn(run_demo(receiver, stopped(stop_rx.clone()))));
        }
        if config.compaction.enabled {
            let lifecycle = Arc::new(
                lifecycle(&config, &opened.storage, &opened.catalog).with_telemetry(telemetry),
            );
            tasks.push(tokio::spawn(
                lifecycle.run(config.compaction.interval, stopped(stop_rx.clone())),
            ));
        }
        let flusher = tokio::spawn(opened.ingester.clone().run_flusher(stopped(stop_rx)));
        tracing::info!(%http_addr, %grpc_addr, %otlp_grpc_addr, %otlp_http_addr, %flight_addr, storage = %opened.storage.url(), "spanlake is serving");
        Ok(Server {
            http_addr,
            grpc_addr,
            otlp_grpc_addr,
            otlp_http_addr,
            flight_addr,
            cluster_addr,
            cluster,
            ingester: opened.ingester,
            engine: opened.engine,
            stop,
            tasks,
            flusher,
            _lock: opened.lock,
        })
    }

    /// Stops listening, then flushes every live trace to a block.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.flusher.await;
    }
}

/// The server's self-metrics, with the block gauges read from `catalog` and the live-span gauge
/// from `ingester` at every scrape.
fn telemetry(catalog: &Arc<Catalog>, ingester: &Arc<Ingester>) -> Telemetry {
    let telemetry = Telemetry::new();
    let catalog = catalog.clone();
    telemetry.blocks_from(move || {
        catalog
            .tenants()
            .into_iter()
            .map(|tenant| {
                let blocks = catalog.all_blocks(&tenant);
                let mut levels: BTreeMap<(&'static str, u32), u64> = BTreeMap::new();
                for block in &blocks {
                    *levels
                        .entry((block.signal.name(), block.compaction_level))
                        .or_default() += 1;
                }
                TenantBlocks {
                    bytes: blocks.iter().map(|b| b.bytes()).sum(),
                    blocks: blocks.len() as u64,
                    by_level: levels
                        .into_iter()
                        .map(|((signal, level), blocks)| BlockLevel {
                            signal,
                            level,
                            blocks,
                        })
                        .collect(),
                    tenant,
                }
            })
            .collect()
    });
    let ingester = ingester.clone();
    telemetry.live_spans_from(move || ingester.live_span_count() as u64);
    telemetry
}

/// Paths no route serves: gRPC callers get UNIMPLEMENTED, everyone else a plain 404.
async fn unmatched(request: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let status =
            tonic::Status::unimplemented(format!("no service at {}", request.uri().path()));
        return status.into_http::<axum::body::Body>().into_response();
    }
    (http::StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// The connections `listener` accepts, with Nagle's algorithm off: a small response must not
/// wait for the client's delayed ACK (about 40 ms per exchange on Linux).
fn without_delay(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted
            && let Err(e) = stream.set_nodelay(true)
        {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        accepted
    })
}

/// The connections of `incoming`, each counting the bytes it carries into `telemetry`.
fn counted(
    incoming: impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>>,
    telemetry: Telemetry,
) -> impl futures::Stream<Item = std::io::Result<Counted>> {
    use futures::StreamExt;
    incoming.map(move |accepted| {
        accepted.map(|stream| Counted {
            stream,
            telemetry: telemetry.clone(),
        })
    })
}

/// A connection of the cluster port that counts the bytes it reads and writes.
struct Counted {
    stream: tokio::net::TcpStream,
    telemetry: Telemetry,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.telemetry.cluster_bytes(read, 0);
        polled
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(written)) = &polled {
            self.telemetry.cluster_bytes(0, *written);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = <tokio::net::TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    })
}

/// Demo traffic through the receiver's own path: a few traces a second, each with its log
/// records, and every few seconds the RED metrics of the traces so far, timestamped now.
async fn run_demo(receiver: Receiver, stop: impl std::future::Future<Output = ()>) {
    let mut generator = Generator::new(0x5eed);
    let mut metrics = MetricsAggregator::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(stop);
    for n in 0u64.. {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {
                let now = crate::time::now_ns();
                let trace = generator.trace_at(now);
                let logs = generator.logs_for(&trace);
                metrics.observe(&trace);
                let mut result = demo_export(&receiver, &trace).await;
                if result.is_ok() {
                    result = demo_export(&receiver, &logs).await;
                }
                if result.is_ok() && n % DEMO_METRICS_EVERY == 0 {
                    result = demo_export(&receiver, &metrics.export_at(now)).await;
                }
                if let Err(e) = result {
                    tracing::warn!(error = %e, "demo traffic refused");
                }
            }
        }
    }
}

/// Demo traces between two metrics exports (ten seconds at five traces a second).
const DEMO_METRICS_EVERY: u64 = 50;

async fn demo_export<R: crate::ingest::Export>(
    receiver: &Receiver,
    request: &R,
) -> Result<usize, crate::ingest::IngestError> {
    let bytes = request.encoded_len();
    receiver
        .receive(Transport::Demo, bytes, Some("demo"), request)
        .await
}
