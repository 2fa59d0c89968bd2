//! The cluster port's shard reads: how a member reads shards another member holds, and how it
//! answers such reads.
//!
//! A member reads a group of shards another member reads with one Arrow Flight `DoGet` on that
//! member's cluster port; the ticket is a `spanlake.v1.ShardScanTicket` (the table, tenant,
//! projection, filters and limit, the shards, the partition), and the answer is the rows that
//! member holds for them — its blocks of those shards and its live rows — filtered and
//! projected there. A read that fails marks the member down and fails the query: a shard is
//! never silently left out.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::future::BoxFuture;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::Cluster;
use crate::query::QueryEngine;
use crate::tables::{LocalShards, ShardReader, ShardScan, ShardsUnavailable};

/// Reads shards: this node's own through its engine, other members' over Flight.
#[derive(Debug, Clone)]
pub struct ClusterReader {
    engine: QueryEngine,
    cluster: Arc<Cluster>,
}

impl ClusterReader {
    /// A reader answering this node's shards from `engine`.
    pub fn new(engine: QueryEngine, cluster: Arc<Cluster>) -> Self {
        Self { engine, cluster }
    }

    fn channel(&self, member: usize) -> DfResult<Channel> {
        self.cluster.channel(member).map_err(DataFusionError::Plan)
    }
}

impl ShardReader for ClusterReader {
    fn self_index(&self) -> usize {
        self.cluster.self_index()
    }

    fn plan_local(
        &self,
        scan: &ShardScan,
        shards: &[u32],
    ) -> BoxFuture<'static, DfResult<LocalShards>> {
        let (engine, scan, shards) = (self.engine.clone(), scan.clone(), shards.to_vec());
        Box::pin(async move {
            engine
                .plan_local_shards(&scan, &shards)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))
        })
    }

    fn read_remote(
        &self,
        member: usize,
        scan: &ShardScan,
        shards: &[u32],
    ) -> BoxFuture<'static, DfResult<SendableRecordBatchStream>> {
        let (reader, scan, shards) = (self.clone(), scan.clone(), shards.to_vec());
        Box::pin(async move {
            let what = format!(
                "cannot read shards {shards:?} from member {}",
                reader.cluster.member(member).name
            );
            let unavailable = move |cluster: &Cluster, e: String| {
                cluster.mark_down(member, &e);
                ShardsUnavailable(format!("{what}: {e}")).into_datafusion()
            };
            let ticket = crate::proto::ShardScanTicket {
                scan: Some(scan.to_proto(&[], 1)?),
                shards,
            };
            let mut client = FlightServiceClient::new(reader.channel(member)?)
                .max_decoding_message_size(usize::MAX);
            let response = client
                .do_get(Ticket::new(ticket.encode_to_vec()))
                .await
                .map_err(|s| unavailable(&reader.cluster, s.message().to_string()))?;
            let schema = crate::tables::shard_scan_schema(&scan)?;
            let cluster = reader.cluster.clone();
            let rows = FlightRecordBatchStream::new_from_flight_data(
                response
                    .into_inner()
                    .map_err(|s| FlightError::Tonic(Box::new(s))),
            )
            .map_err(move |e| unavailable(&cluster, e.to_string()));
            Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)) as SendableRecordBatchStream)
        })
    }
}

/// Answers other members' shard reads from this node's engine.
#[derive(Debug, Clone)]
pub struct ShardService {
    engine: QueryEngine,
}

impl ShardService {
    /// The Flight service of the cluster port.
    pub fn server(engine: QueryEngine) -> FlightServiceServer<ShardService> {
        FlightServiceServer::new(ShardService { engine })
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }
}

type Answer<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn only_do_get<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "the cluster port answers only DoGet with a shard scan ticket",
    ))
}

#[tonic::async_trait]
impl FlightService for ShardService {
    type HandshakeStream = Answer<HandshakeResponse>;
    type ListFlightsStream = Answer<FlightInfo>;
    type DoGetStream = Answer<FlightData>;
    type DoPutStream = Answer<PutResult>;
    type DoActionStream = Answer<arrow_flight::Result>;
    type ListActionsStream = Answer<ActionType>;
    type DoExchangeStream = Answer<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        only_do_get()
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        only_do_get()
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        only_do_get()
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        only_do_get()
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        only_do_get()
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = request.into_inner().ticket;
        let (scan, shards) = self
            .engine
            .shard_ticket(&ticket)
            .map_err(|e| super::status::grpc_status(&e))?;
        let (plan, task) = self
            .engine
            .plan_local_shards(&scan, &shards)
            .await
            .map_err(|e| super::status::grpc_status(&e))?;
        let stream = crate::tables::execute_partitions(&plan, &task, 0, 1)
            .map_err(|e| super::status::grpc_status(&e.into()))?;
        let schema = stream.schema();
        let batches = stream.map_err(|e| FlightError::ExternalError(Box::new(e)));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(encoded)))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        only_do_get()
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        only_do_get()
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        only_do_get()
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        only_do_get()
    }
}
