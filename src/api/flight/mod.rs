//! Arrow Flight SQL and plain Arrow Flight on the Flight port: how analysts (ADBC, JDBC,
//! DBeaver) and notebooks (pyarrow) reach the same engine and tables as everything else.
//!
//! - Statements: `GetFlightInfo` plans the query (schema, one endpoint whose ticket names the
//!   query, the plan kept a minute for the ticket's first `DoGet`); `DoGet` runs it and
//!   streams batches as DataFusion produces them, encoded with dictionaries hydrated and
//!   messages of at most [`MAX_MESSAGE_BYTES`]. A bounded channel between the query and the
//!   client gives backpressure: a large answer streams in bounded memory.
//! - Prepared statements: create and close actions, parameters bound by `DoPut` (one row for
//!   `$1`, `$2`, …), held per session (see [`auth::Caller`]), bounded in number per session and
//!   closed when unused.
//! - Metadata: catalogs, schemas, tables (with schemas, filters and patterns), table types, SQL
//!   info and XDBC types; keys answer empty.
//! - Cancellation (`CancelFlightInfo`, the SQL cancel action) stops a running query; each
//!   tenant runs at most `flight.max_concurrent_queries` at once (`RESOURCE_EXHAUSTED` past
//!   it), and the memory pool bounds them all.
//! - Plain Flight: a ticket that is UTF-8 SQL, or `{"traceql": …, "start": …, "end": …,
//!   "limit": …}` for the matched spans of a TraceQL search; `ListFlights` lists the tables.
//!
//! The tenant of every call comes from [`auth`]. Everything is read-only: DDL, DML and
//! statements are refused by the query layer, updates and ingest here.

pub mod auth;
mod metadata;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria,
    Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, PollInfo, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::api::status::grpc_status;
use crate::config::FlightSettings;
use crate::query::search::{self, SearchRequest};
use crate::query::sql::Statement;
use crate::query::{QueryEngine, QueryError};
use crate::time::TimeRange;

/// Largest Flight data message sent; larger batches are split.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// The Flight action that cancels a query by its `FlightInfo`.
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";
/// The custom action making an anomaly report.
pub const REPORT_ACTION: &str = "report";
/// Batches buffered between a running query and its client.
const STREAM_BUFFER: usize = 2;
/// A statement planned by `GetFlightInfo` waits this long for the `DoGet` of its ticket…
const PLANNED_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// …and at most this many wait at once; beyond, a `DoGet` plans its statement again.
const MAX_PLANNED: usize = 256;

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

fn status(e: QueryError) -> Status {
    grpc_status(&e)
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// What a statement ticket names: the query and the id it may be cancelled by.
#[derive(Debug, Serialize, Deserialize)]
struct StatementTicket {
    id: String,
    sql: String,
}

/// A plain-Flight TraceQL ticket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceqlTicket {
    traceql: String,
    /// Unix seconds.
    start: Option<u64>,
    /// Unix seconds.
    end: Option<u64>,
    limit: Option<usize>,
}

/// A prepared statement.
#[derive(Debug)]
struct Prepared {
    owner: auth::Caller,
    sql: String,
    parameters: Option<RecordBatch>,
    used: Instant,
}

/// A statement `GetFlightInfo` planned, kept for the `DoGet` of its ticket.
struct Planned {
    tenant: String,
    statement: Statement,
    at: Instant,
}

/// Queries that may be cancelled, by id: a cancelled query's flag is set.
#[derive(Debug, Default)]
struct Running {
    queries: HashMap<String, (watch::Sender<bool>, Instant)>,
}

/// The Flight SQL service over one engine.
pub struct FlightSql {
    engine: QueryEngine,
    auth: auth::Auth,
    settings: FlightSettings,
    prepared: Mutex<HashMap<String, Prepared>>,
    planned: Mutex<HashMap<String, Planned>>,
    running: Mutex<Running>,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
}

impl std::fmt::Debug for FlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSql").finish_non_exhaustive()
    }
}

impl FlightSql {
    /// The service over `engine`.
    pub fn new(
        engine: QueryEngine,
        settings: FlightSettings,
        multitenancy: bool,
    ) -> Result<Self, FlightError> {
        Ok(Self {
            engine,
            auth: auth::Auth::new(&settings, multitenancy),
            settings,
            prepared: Mutex::new(HashMap::new()),
            planned: Mutex::new(HashMap::new()),
            running: Mutex::new(Running::default()),
            slots: Mutex::new(HashMap::new()),
            sql_info: metadata::sql_info()?,
            xdbc: metadata::xdbc_types()?,
        })
    }

    /// The gRPC service: Flight SQL plus the plain Flight tickets and `ListFlights`.
    pub fn service(self) -> FlightServiceServer<FlightEdge> {
        FlightServiceServer::new(FlightEdge {
            sql: Arc::new(self),
        })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
    }

    fn tenant<T>(&self, request: &Request<T>) -> Result<String, Status> {
        self.auth.tenant(request.metadata())
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<auth::Caller, Status> {
        self.auth.caller(request.metadata())
    }

    /// A query slot of `tenant`, or RESOURCE_EXHAUSTED when all are taken.
    fn slot(&self, tenant: &str) -> Result<OwnedSemaphorePermit, Status> {
        let limit = self.settings.max_concurrent_queries;
        let semaphore = self
            .slots
            .lock()
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone();
        semaphore.try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "tenant {tenant} already runs {limit} queries, the most allowed at once"
            ))
        })
    }

    /// Registers a query that may be cancelled before or while it runs.
    fn register(&self, id: &str) {
        let mut running = self.running.lock();
        let ttl = self.settings.prepared_statement_ttl;
        running.queries.retain(|_, (_, at)| at.elapsed() < ttl);
        running
            .queries
            .entry(id.to_string())
            .or_insert_with(|| (watch::channel(false).0, Instant::now()));
    }

    /// The cancel flag of query `id`.
    fn cancel_flag(&self, id: &str) -> watch::Receiver<bool> {
        self.register(id);
        let running = self.running.lock();
        match running.queries.get(id) {
            Some((sender, _)) => sender.subscribe(),
            None => watch::channel(false).1,
        }
    }

    /// Cancels query `id`; false when no such query is known.
    fn cancel(&self, id: &str) -> bool {
        match self.running.lock().queries.get(id) {
            Some((sender, _)) => {
                sender.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Runs `statement` and streams its batches, stopping when `cancelled` turns true.
    async fn stream(
        &self,
        tenant: &str,
        statement: Statement,
        mut cancelled: watch::Receiver<bool>,
    ) -> Result<Response<DoGetStream>, Status> {
        if *cancelled.borrow() {
            return Err(Status::cancelled("the query was cancelled"));
        }
        let permit = self.slot(tenant)?;
        let schema = statement.schema();
        let mut batches = statement.execute().await.map_err(status)?;
        // Execution planned the scans: the shards they left out are known now.
        let warning = partial_warning(crate::query::cluster::missing_shards());
        let (tx, rx) = mpsc::channel::<Result<RecordBatch, FlightError>>(STREAM_BUFFER);
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                let next = tokio::select! {
                    // Without a sender the query can no longer be cancelled: wait forever.
                    cancel = async {
                        let flagged = cancelled.wait_for(|c| *c).await.is_ok();
                        if !flagged {
                            std::future::pending::<()>().await;
                        }
                        flagged
                    } => {
                        if cancel {
                            let _ = tx
                                .send(Err(FlightError::Tonic(Box::new(Status::cancelled(
                                    "the query was cancelled",
                                )))))
                                .await;
                        }
                        return;
                    }
                    next = batches.next() => next,
                };
                let item = match next {
                    None => return,
                    Some(Ok(batch)) => Ok(batch),
                    Some(Err(e)) => Err(FlightError::Tonic(Box::new(status(e.into())))),
                };
                // The client went away: dropping the stream stops the query.
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(encode(
            schema,
            tokio_stream::wrappers::ReceiverStream::new(rx),
            warning,
        ))
    }

    async fn run_sql(
        &self,
        tenant: &str,
        sql: &str,
        cancelled: watch::Receiver<bool>,
    ) -> Result<Response<DoGetStream>, Status> {
        let statement = self.engine.plan_sql(tenant, sql).await.map_err(status)?;
        self.stream(tenant, statement, cancelled).await
    }

    /// The prepared statement `handle` of `caller`'s session, touched.
    fn prepared(
        &self,
        caller: &auth::Caller,
        handle: &[u8],
    ) -> Result<(String, Option<RecordBatch>), Status> {
        let handle = String::from_utf8_lossy(handle).into_owned();
        let mut prepared = self.prepared.lock();
        match prepared.get_mut(&handle) {
            Some(p) if p.owner == *caller => {
                p.used = Instant::now();
                Ok((p.sql.clone(), p.parameters.clone()))
            }
            _ => Err(Status::not_found(format!(
                "no prepared statement {handle}: it was closed, expired or never created"
            ))),
        }
    }

    /// The plan of prepared statement `handle`, with its parameters bound when given.
    async fn prepared_statement(
        &self,
        caller: &auth::Caller,
        handle: &[u8],
    ) -> Result<Statement, Status> {
        let (sql, parameters) = self.prepared(caller, handle)?;
        let statement = self
            .engine
            .plan_sql(&caller.tenant, &sql)
            .await
            .map_err(status)?;
        match parameters {
            Some(values) => statement.bind(&values).map_err(status),
            None => Ok(statement),
        }
    }

    /// A `FlightInfo` for `schema` with one endpoint holding `ticket`.
    fn info(
        schema: &SchemaRef,
        descriptor: FlightDescriptor,
        ticket: Ticket,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(internal)?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// A `FlightInfo` for a metadata command of an authenticated caller: its schema, and the
    /// command itself as ticket.
    fn command_info(
        &self,
        schema: &SchemaRef,
        command: impl ProstMessageExt,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.tenant(&request)?;
        let ticket = Ticket::new(command.as_any().encode_to_vec());
        Self::info(schema, request.into_inner(), ticket)
    }
}

/// Encodes `batches` as Flight data of `schema`; the first (schema) message carries `warning`
/// as its app metadata.
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
    warning: Option<bytes::Bytes>,
) -> Response<DoGetStream> {
    let mut builder = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(MAX_MESSAGE_BYTES)
        .with_dictionary_handling(DictionaryHandling::Hydrate);
    if let Some(warning) = warning {
        builder = builder.with_metadata(warning);
    }
    let encoded = builder.build(batches).map_err(Status::from);
    Response::new(Box::pin(encoded))
}

/// The app metadata of a cluster answer that leaves out `missing` shards (ascending, each
/// once): a JSON warning (`{"warning": …, "partialShards": […]}`); none for a complete answer.
fn partial_warning(missing: Vec<u32>) -> Option<bytes::Bytes> {
    if missing.is_empty() {
        return None;
    }
    let warning = serde_json::json!({
        "warning": format!(
            "partial answer: shards {missing:?} have no holder up and were left out"
        ),
        "partialShards": missing,
    });
    Some(warning.to_string().into())
}

/// One metadata batch as a Flight stream.
fn one_batch(batch: Result<RecordBatch, FlightError>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(internal)?;
    let schema = batch.schema();
    Ok(encode(
        schema,
        futures::stream::once(async { Ok(batch) }),
        None,
    ))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = self.auth.handshake(request.metadata())?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let stream: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(futures::stream::once(async { Ok(reply) }));
        let mut response = Response::new(stream);
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("the session token is not a header value"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let tenant = self.tenant(&request)?;
        let statement = self
            .engine
            .plan_sql(&tenant, &query.query)
            .await
            .map_err(status)?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        self.register(&id);
        let schema = statement.schema();
        // The scans are planned when the ticket is redeemed; what is known now is which shards
        // have no holder up, and a scan of the whole table would leave those out.
        let warning = partial_warning(self.engine.unreadable_shards());
        {
            let mut planned = self.planned.lock();
            planned.retain(|_, p| p.at.elapsed() < PLANNED_TTL);
            if planned.len() < MAX_PLANNED {
                planned.insert(
                    id.clone(),
                    Planned {
                        tenant: tenant.clone(),
                        statement,
                        at: Instant::now(),
                    },
                );
            }
        }
        let handle = serde_json::to_vec(&StatementTicket {
            id,
            sql: query.query,
        })
        .map_err(internal)?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        let mut info = Self::info(
            &schema,
            request.into_inner(),
            Ticket::new(ticket.as_any().encode_to_vec()),
        )?;
        if let Some(warning) = warning {
            info.get_mut().app_metadata = warning;
        }
        Ok(info)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let statement = self
            .prepared_statement(&caller, &query.prepared_statement_handle)
            .await?;
        self.register(&String::from_utf8_lossy(&query.prepared_statement_handle));
        let schema = statement.schema();
        self.command_info(&schema, query, request)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(&schema, query, request)
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&schema, query, request)
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&schema, query, request)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(&schema, query, request)
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.command_info(&schema, query, request)
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&keys::schema(), query, request)
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&keys::schema(), query, request)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&keys::schema(), query, request)
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&keys::schema(), query, request)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.xdbc).schema();
        self.command_info(&schema, query, request)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.tenant(&request)?;
        let statement: StatementTicket =
            serde_json::from_slice(&ticket.statement_handle).map_err(|e| {
                Status::invalid_argument(format!("not a spanlake statement ticket: {e}"))
            })?;
        let cancelled = self.cancel_flag(&statement.id);
        // The plan `GetFlightInfo` made, when this is the first `DoGet` of its ticket by its
        // tenant; blocks and live rows are read as of now either way.
        let planned = self.planned.lock().remove(&statement.id);
        match planned {
            Some(p) if p.tenant == tenant => self.stream(&tenant, p.statement, cancelled).await,
            _ => self.run_sql(&tenant, &statement.sql, cancelled).await,
        }
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let statement = self
            .prepared_statement(&caller, &query.prepared_statement_handle)
            .await?;
        let cancelled =
            self.cancel_flag(&String::from_utf8_lossy(&query.prepared_statement_handle));
        self.stream(&caller.tenant, statement, cancelled).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.tenant(&request)?;
        let tables = self.engine.tables(&tenant).await.map_err(status)?;
        let mut builder = query.into_builder();
        let mut catalogs: Vec<&str> = tables.iter().map(|t| t.catalog.as_str()).collect();
        catalogs.dedup();
        for catalog in catalogs {
            builder.append(catalog);
        }
        one_batch(builder.build())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.tenant(&request)?;
        let tables = self.engine.tables(&tenant).await.map_err(status)?;
        let mut builder = query.into_builder();
        let mut schemas: Vec<(&str, &str)> = tables
            .iter()
            .map(|t| (t.catalog.as_str(), t.schema.as_str()))
            .collect();
        schemas.dedup();
        for (catalog, schema) in schemas {
            builder.append(catalog, schema);
        }
        one_batch(builder.build())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.tenant(&request)?;
        let tables = self.engine.tables(&tenant).await.map_err(status)?;
        let mut builder = query.into_builder();
        for t in &tables {
            builder
                .append(
                    &t.catalog,
                    &t.schema,
                    &t.name,
                    t.table_type,
                    &t.arrow_schema,
                )
                .map_err(internal)?;
        }
        one_batch(builder.build())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.tenant(&request)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        one_batch(builder.build())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.tenant(&request)?;
        one_batch(query.into_builder(&self.sql_info).build())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.tenant(&request)?;
        one_batch(keys::empty())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.tenant(&request)?;
        one_batch(keys::empty())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.tenant(&request)?;
        one_batch(keys::empty())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.tenant(&request)?;
        one_batch(keys::empty())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.tenant(&request)?;
        one_batch(query.into_builder(&self.xdbc).build())
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only("statement updates"))
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only(
            "bulk ingest (send OpenTelemetry data over OTLP instead)",
        ))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only("prepared statement updates"))
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(&request)?;
        self.prepared(&caller, &query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| {
                Status::invalid_argument(format!("the parameters are not Arrow data: {e}"))
            })?;
        let parameters = match batches.as_slice() {
            [batch] => batch.clone(),
            _ => arrow::compute::concat_batches(
                &batches
                    .first()
                    .map(|b| b.schema())
                    .ok_or_else(|| Status::invalid_argument("no parameter values were sent"))?,
                &batches,
            )
            .map_err(internal)?,
        };
        let (sql, _) = self.prepared(&caller, &query.prepared_statement_handle)?;
        // Refuse values that do not fit the placeholders now, not at execution.
        self.engine
            .plan_sql(&caller.tenant, &sql)
            .await
            .and_then(|s| s.bind(&parameters))
            .map_err(status)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        if let Some(p) = self.prepared.lock().get_mut(&handle) {
            p.parameters = Some(parameters);
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request)?;
        let statement = self
            .engine
            .plan_sql(&caller.tenant, &query.query)
            .await
            .map_err(status)?;
        let parameter_schema = statement.parameter_schema().map_err(status)?;
        let handle = uuid::Uuid::now_v7().simple().to_string();
        {
            let mut prepared = self.prepared.lock();
            let ttl = self.settings.prepared_statement_ttl;
            prepared.retain(|_, p| p.used.elapsed() < ttl);
            let open = prepared.values().filter(|p| p.owner == caller).count();
            if open >= self.settings.max_prepared_statements {
                return Err(Status::resource_exhausted(format!(
                    "this session has {open} prepared statements open, the most allowed: \
                     close some first"
                )));
            }
            prepared.insert(
                handle.clone(),
                Prepared {
                    owner: caller,
                    sql: query.query,
                    parameters: None,
                    used: Instant::now(),
                },
            );
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: schema_bytes(&statement.schema())?,
            parameter_schema: schema_bytes(&parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = self.caller(&request)?;
        self.prepared(&caller, &query.prepared_statement_handle)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        self.prepared.lock().remove(&handle);
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        self.tenant(&request)?;
        let info = FlightInfo::decode(query.info).map_err(|e| {
            Status::invalid_argument(format!("the cancel request holds no FlightInfo: {e}"))
        })?;
        // `CancelResult` of Flight SQL: 1 cancelled, 3 not cancellable.
        let result = if self.cancel_info(&info) { 1 } else { 3 };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        if request.get_ref().r#type == REPORT_ACTION {
            let tenant = self.tenant(&request)?;
            let options: crate::report::ReportOptions =
                serde_json::from_slice(&request.get_ref().body).map_err(|e| {
                    Status::invalid_argument(format!(
                        "the report action's body is its options as JSON: {e}"
                    ))
                })?;
            let report = crate::report::run(&self.engine, &tenant, &options, crate::time::now_ns())
                .await
                .map_err(|e| status(e.into()))?;
            let body = arrow_flight::Result {
                body: crate::report::render::json(&report).into_bytes().into(),
            };
            return Ok(Response::new(Box::pin(futures::stream::once(async {
                Ok(body)
            }))));
        }
        if request.get_ref().r#type != CANCEL_FLIGHT_INFO {
            return Err(Status::invalid_argument(format!(
                "unknown action {:?}",
                request.get_ref().r#type
            )));
        }
        self.tenant(&request)?;
        let cancel = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .map_err(|e| Status::invalid_argument(format!("not a CancelFlightInfoRequest: {e}")))?;
        let cancelled = cancel
            .info
            .as_ref()
            .is_some_and(|info| self.cancel_info(info));
        let result = CancelFlightInfoResult {
            status: if cancelled {
                CancelStatus::Cancelled
            } else {
                CancelStatus::NotCancellable
            } as i32,
        };
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::once(async {
            Ok(body)
        }))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![
            Ok(ActionType {
                r#type: CANCEL_FLIGHT_INFO.to_string(),
                description: "Cancel a query by its FlightInfo".to_string(),
            }),
            Ok(ActionType {
                r#type: REPORT_ACTION.to_string(),
                description: "An anomaly report: the body is its options as JSON (as POST /api/v1/report takes them), the one result the report as JSON".to_string(),
            }),
        ])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl FlightSql {
    /// Cancels every query `info`'s tickets name; true when one was known.
    fn cancel_info(&self, info: &FlightInfo) -> bool {
        let mut any = false;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            if let Some(id) = query_id(&ticket.ticket) {
                any |= self.cancel(&id);
            }
        }
        any
    }
}

/// The cancellable id in a ticket this server issued: a statement's id or a prepared
/// statement's handle.
fn query_id(ticket: &[u8]) -> Option<String> {
    let any = Any::decode(ticket).ok()?;
    if let Ok(Some(statement)) = any.unpack::<TicketStatementQuery>() {
        let parsed: StatementTicket = serde_json::from_slice(&statement.statement_handle).ok()?;
        return Some(parsed.id);
    }
    if let Ok(Some(prepared)) = any.unpack::<CommandPreparedStatementQuery>() {
        return Some(String::from_utf8_lossy(&prepared.prepared_statement_handle).into_owned());
    }
    None
}

fn schema_bytes(schema: &SchemaRef) -> Result<bytes::Bytes, Status> {
    let options = arrow::ipc::writer::IpcWriteOptions::default();
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &options)
        .try_into()
        .map_err(internal)?;
    Ok(bytes)
}

fn read_only(what: &str) -> Status {
    Status::unimplemented(format!("spanlake is read-only: {what} are not supported"))
}

/// The answer to primary, exported and imported key and cross-reference requests: spanlake's
/// tables have no keys.
mod keys {
    use std::sync::Arc;

    use arrow::array::RecordBatch;
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    /// The columns Flight SQL defines for key listings.
    pub fn schema() -> SchemaRef {
        let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
        Arc::new(Schema::new(vec![
            text("pk_catalog_name", true),
            text("pk_db_schema_name", true),
            text("pk_table_name", false),
            text("pk_column_name", false),
            text("fk_catalog_name", true),
            text("fk_db_schema_name", true),
            text("fk_table_name", false),
            text("fk_column_name", false),
            Field::new("key_sequence", DataType::Int32, false),
            text("fk_key_name", true),
            text("pk_key_name", true),
            Field::new("update_rule", DataType::UInt8, false),
            Field::new("delete_rule", DataType::UInt8, false),
        ]))
    }

    /// No keys.
    pub fn empty() -> Result<RecordBatch, arrow_flight::error::FlightError> {
        Ok(RecordBatch::new_empty(schema()))
    }
}

/// The Flight service: Flight SQL, plus plain Flight tickets and `ListFlights`.
#[derive(Debug, Clone)]
pub struct FlightEdge {
    sql: Arc<FlightSql>,
}

impl FlightEdge {
    /// A plain ticket: UTF-8 SQL, or a JSON TraceQL request.
    async fn plain_ticket(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.sql.tenant(&request)?;
        let text = std::str::from_utf8(&request.get_ref().ticket).map_err(|_| {
            Status::invalid_argument(
                "a plain ticket is UTF-8 SQL or a JSON {\"traceql\": …} request",
            )
        })?;
        let (_, never) = watch::channel(false);
        if !text.trim_start().starts_with('{') {
            return self.sql.run_sql(&tenant, text, never).await;
        }
        let ticket: TraceqlTicket = serde_json::from_str(text).map_err(|e| {
            Status::invalid_argument(format!(
                "a JSON ticket is {{\"traceql\": …, \"start\": …, \"end\": …, \"limit\": …}}: {e}"
            ))
        })?;
        let request = SearchRequest {
            query: ticket.traceql,
            range: TimeRange::from_seconds(ticket.start, ticket.end),
            limit: ticket.limit.unwrap_or(0),
            spss: 0,
        };
        let permit = self.sql.slot(&tenant)?;
        let batches = search::matched_spans_stream(&self.sql.engine, &tenant, &request)
            .await
            .map_err(status)?;
        let schema = batches.schema();
        let batches = batches.map(move |batch| {
            let _held = &permit;
            batch.map_err(|e| FlightError::Tonic(Box::new(status(e.into()))))
        });
        Ok(encode(schema, batches, None))
    }
}

/// True when `ticket` is a Flight SQL command (a protobuf `Any` of Flight SQL's types).
fn is_flight_sql(ticket: &[u8]) -> bool {
    Any::decode(ticket).is_ok_and(|any| {
        any.type_url
            .starts_with("type.googleapis.com/arrow.flight.protocol.sql.")
    })
}

#[tonic::async_trait]
impl FlightService for FlightEdge {
    type HandshakeStream = <FlightSql as FlightService>::HandshakeStream;
    type ListFlightsStream = <FlightSql as FlightService>::ListFlightsStream;
    type DoGetStream = <FlightSql as FlightService>::DoGetStream;
    type DoPutStream = <FlightSql as FlightService>::DoPutStream;
    type DoActionStream = <FlightSql as FlightService>::DoActionStream;
    type ListActionsStream = <FlightSql as FlightService>::ListActionsStream;
    type DoExchangeStream = <FlightSql as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(self.sql.as_ref(), request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let tenant = self.sql.tenant(&request)?;
        let tables = self.sql.engine.tables(&tenant).await.map_err(status)?;
        let mut infos = Vec::new();
        for t in tables.iter().filter(|t| t.schema != "information_schema") {
            let sql = format!("SELECT * FROM \"{}\"", t.name.replace('"', "\"\""));
            let info = FlightInfo::new()
                .try_with_schema(&t.arrow_schema)
                .map_err(internal)?
                .with_descriptor(FlightDescriptor::new_path(vec![t.name.clone()]))
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(sql)));
            infos.push(Ok(info));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        FlightService::get_flight_info(self.sql.as_ref(), request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        FlightService::poll_flight_info(self.sql.as_ref(), request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let info = self.get_flight_info(request).await?.into_inner();
        Ok(Response::new(SchemaResult {
            schema: info.schema,
        }))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        if is_flight_sql(&request.get_ref().ticket) {
            FlightService::do_get(self.sql.as_ref(), request).await
        } else {
            self.plain_ticket(request).await
        }
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(self.sql.as_ref(), request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(self.sql.as_ref(), request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(self.sql.as_ref(), request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(self.sql.as_ref(), request).await
    }
}
