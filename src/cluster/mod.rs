//! A spanlake cluster as this node sees it: the static member list of `[cluster]`, the
//! [`ring::Ring`] placing shards on members, and the health of each member, checked by polling
//! its `/ready` endpoint.
//!
//! This module decides *where* rows and reads go; it moves no data itself. The distributor
//! ([`crate::ingest`]) sends each shard's rows to its holders, and the query layer reads each
//! shard from one holder that is up ([`Cluster::reader`]).
//!
//! Membership is static: a member list that changes at runtime (a key-value store, DNS, a
//! gossip protocol) would implement the same facts — the member names and addresses and each
//! one's state — behind [`Cluster`] and rebuild the ring when they change.

pub mod handoff;
pub mod ring;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::config::{ClusterSettings, MemberSettings, WriteConsistency};
use crate::proto::PushRequest;
use crate::proto::cluster_ingest_client::ClusterIngestClient;
use handoff::{Handoff, HandoffError, HandoffState};
use ring::Ring;

/// `n` distinct ports of 127.0.0.1, free when asked, for members that must know each other's
/// addresses before any of them starts (a cluster on one machine, in tests and benchmarks).
/// All are held until all are chosen, so that none is handed out twice; another process may
/// still take one before its member binds it, which starting the member reports.
pub fn free_loopback_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// The health of one member, as seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Not checked yet.
    Unknown,
    /// Answered its last check.
    Up,
    /// Did not answer its last check, or a request to it failed since.
    Down,
}

#[derive(Debug, Clone)]
struct Health {
    state: MemberState,
    /// Unix nanoseconds of the last check.
    checked_ns: Option<i64>,
    error: Option<String>,
}

/// Membership, placement and health of a cluster.
#[derive(Debug)]
pub struct Cluster {
    settings: ClusterSettings,
    self_index: usize,
    ring: Ring,
    health: RwLock<Vec<Health>>,
    client: reqwest::Client,
    /// gRPC channels to the members' cluster ports, made on first use.
    channels: Mutex<Vec<Option<Channel>>>,
    /// Hints this member keeps for others, and the marks keeping reads off holders that miss
    /// rows.
    handoff: Mutex<Handoff>,
}

/// How long connecting to a member's cluster port may take before the member counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a push to another member may take before it counts as failed.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of a member's handoff state (marks and deliveries it knows), which the others read
/// with each health check.
pub const HANDOFF_PATH: &str = "/api/v1/cluster/handoff";

/// What `GET /api/v1/cluster` answers.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    #[serde(rename = "self")]
    pub self_name: String,
    pub replication_factor: usize,
    pub write_consistency: String,
    pub members: Vec<MemberStatus>,
    pub shards: Vec<ShardStatus>,
}

/// One member in [`ClusterStatus`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub http: String,
    pub internal: String,
    /// `up`, `down` or `unknown`.
    pub state: String,
    /// RFC 3339 time of the last check, if any.
    pub last_check: Option<String>,
    pub error: Option<String>,
    /// Shards this member is the primary holder of.
    pub primary_shards: Vec<u32>,
    /// Shards it holds a replica of.
    pub replica_shards: Vec<u32>,
    /// Writes it missed that the member answering keeps for it, to deliver once it is up.
    pub hints_kept: usize,
}

/// One shard in [`ClusterStatus`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    pub shard: u32,
    /// Holder names, primary first.
    pub holders: Vec<String>,
    /// The holder reads go to now; none when no holder is up and has every row.
    pub reader: Option<String>,
    /// Holders that miss rows of the shard until hints reach them; reads avoid them.
    pub missing_rows: Vec<String>,
}

impl Cluster {
    /// The cluster `settings` describe, with `shards` shards, keeping its hints and marks in
    /// `handoff_dir`; the settings must have been validated
    /// ([`crate::config::Config::validate`]).
    pub fn new(
        settings: ClusterSettings,
        shards: u32,
        handoff_dir: &std::path::Path,
    ) -> Result<Arc<Cluster>, HandoffError> {
        let handoff = Handoff::open(handoff_dir, &settings.self_name)?;
        let names: Vec<String> = settings.members.iter().map(|m| m.name.clone()).collect();
        let self_index = names
            .iter()
            .position(|n| *n == settings.self_name)
            .unwrap_or(0);
        let ring = Ring::new(&names, shards, settings.replication_factor);
        let health = (0..names.len())
            .map(|index| Health {
                state: if index == self_index {
                    MemberState::Up
                } else {
                    MemberState::Unknown
                },
                checked_ns: None,
                error: None,
            })
            .collect();
        let client = reqwest::Client::builder()
            .timeout(check_timeout(settings.health_check))
            .build()
            .unwrap_or_default();
        Ok(Arc::new(Cluster {
            settings,
            self_index,
            ring,
            health: RwLock::new(health),
            client,
            channels: Mutex::new(vec![None; names.len()]),
            handoff: Mutex::new(handoff),
        }))
    }

    /// The settings the cluster was made from.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// This node's index among the members.
    pub fn self_index(&self) -> usize {
        self.self_index
    }

    /// The member at `index`.
    pub fn member(&self, index: usize) -> &MemberSettings {
        &self.settings.members[index]
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.settings.members.len()
    }

    /// Whether the cluster has no members (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.settings.members.is_empty()
    }

    /// The ring placing shards on members.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The members holding `shard`, primary first.
    pub fn holders(&self, shard: u32) -> &[usize] {
        self.ring.holders(shard)
    }

    /// How many holders of a shard must acknowledge a write.
    pub fn write_quorum(&self) -> usize {
        self.settings.write_quorum()
    }

    /// Whether member `index` is up as far as this node knows; this node always is.
    pub fn is_up(&self, index: usize) -> bool {
        index == self.self_index
            || self.health.read().get(index).map(|h| h.state) == Some(MemberState::Up)
    }

    /// The holder of `shard` that reads go to: the first holder that is up and misses none of
    /// the shard's rows, primary first, so that every member picks the same one; none when
    /// there is no such holder.
    ///
    /// Also none when as many holders as a write quorum are away: an acknowledged write may
    /// then be on those alone, and the marks saying who misses it with them.
    pub fn reader(&self, shard: u32) -> Option<usize> {
        let holders = self.holders(shard);
        let away = holders.iter().filter(|&&m| !self.is_up(m)).count();
        if away >= self.write_quorum() {
            return None;
        }
        let handoff = self.handoff.lock();
        holders
            .iter()
            .copied()
            .find(|&m| self.is_up(m) && !handoff.misses(&self.member(m).name, shard))
    }

    /// The handoff state of this member: its hints and marks.
    pub fn handoff(&self) -> parking_lot::MutexGuard<'_, Handoff> {
        self.handoff.lock()
    }

    /// The index of the member named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.settings.members.iter().position(|m| m.name == name)
    }

    /// The gRPC channel to member `index`'s cluster port, connected lazily and shared by every
    /// caller; an error names an address tonic cannot use.
    pub fn channel(&self, index: usize) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(channel) = &channels[index] {
            return Ok(channel.clone());
        }
        let address = format!("http://{}", self.member(index).internal);
        let channel = Endpoint::from_shared(address.clone())
            .map_err(|e| format!("member address {address}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels[index] = Some(channel.clone());
        Ok(channel)
    }

    /// The shards no holder of which is up: what a full scan would leave out now.
    pub fn unreadable_shards(&self) -> Vec<u32> {
        (0..self.ring.shards())
            .filter(|&shard| self.reader(shard).is_none())
            .collect()
    }

    /// Records that a request to member `index` failed: it counts as down until its next
    /// successful check.
    pub fn mark_down(&self, index: usize, error: &str) {
        if index == self.self_index {
            return;
        }
        if let Some(health) = self.health.write().get_mut(index) {
            health.state = MemberState::Down;
            health.error = Some(error.to_string());
        }
    }

    /// Checks every other member once, concurrently, and learns the marks and deliveries of
    /// hints each one knows.
    pub async fn check_members(&self) {
        let checks = (0..self.len())
            .filter(|&i| i != self.self_index)
            .map(|index| async move { (index, self.check(index).await) });
        let outcomes = futures::future::join_all(checks).await;
        let now = crate::time::now_ns();
        {
            let mut handoff = self.handoff.lock();
            let mut changed = false;
            for state in outcomes.iter().filter_map(|(_, o)| o.as_ref().ok()) {
                changed |= handoff.learn(state);
            }
            if changed && let Err(e) = handoff.save() {
                tracing::error!(error = %e, "cannot record the marks learned from other members");
            }
        }
        let mut health = self.health.write();
        for (index, outcome) in outcomes {
            let entry = &mut health[index];
            let was = entry.state;
            entry.checked_ns = Some(now);
            match outcome {
                Ok(_) => {
                    entry.state = MemberState::Up;
                    entry.error = None;
                }
                Err(e) => {
                    entry.state = MemberState::Down;
                    entry.error = Some(e);
                }
            }
            if was != entry.state {
                tracing::info!(member = %self.settings.members[index].name, state = ?entry.state, error = ?entry.error, "cluster member changed state");
            }
        }
    }

    /// Member `index`'s readiness and what it knows of hints.
    async fn check(&self, index: usize) -> Result<HandoffState, String> {
        let http = &self.member(index).http;
        let ready = format!("http://{http}/ready");
        match self.client.get(&ready).send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => return Err(format!("/ready answered {}", response.status())),
            Err(e) => return Err(e.to_string()),
        }
        let handoff = format!("http://{http}{HANDOFF_PATH}");
        let response = self
            .client
            .get(&handoff)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{HANDOFF_PATH} answered {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| format!("{HANDOFF_PATH}: {e}"))
    }

    /// Checks the members every `health_check`, and delivers the hints of those that are up,
    /// until `stop` completes.
    pub async fn run_health_checks(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.settings.health_check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    self.check_members().await;
                    self.deliver_hints().await;
                }
            }
        }
    }

    /// Delivers the hints kept for members that are up, oldest first, over
    /// `ClusterIngest.Push`; stops at a member's first failure (it counts as down).
    pub async fn deliver_hints(&self) {
        let targets = self.handoff.lock().targets();
        for target in targets {
            let Some(index) = self.index_of(&target) else {
                continue;
            };
            while self.is_up(index) {
                let oldest = self.handoff.lock().oldest(&target);
                let (seq, hint) = match oldest {
                    Ok(Some(oldest)) => oldest,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(member = %target, error = %e, "cannot read a hint");
                        break;
                    }
                };
                if let Err(e) = self.push(index, &hint.tenant, hint.rows).await {
                    tracing::warn!(member = %target, error = %e, "hint not delivered yet");
                    break;
                }
                if let Err(e) = self.handoff.lock().delivered(&target, seq) {
                    tracing::error!(member = %target, error = %e, "cannot record a delivered hint");
                    break;
                }
            }
        }
    }

    /// Pushes rows of `tenant` (`payload`, as `ClusterIngest.Push` carries them) to member
    /// `index`'s ingester; a member that cannot be reached is marked down. The error says why.
    pub async fn push(
        &self,
        index: usize,
        tenant: &str,
        payload: Vec<u8>,
    ) -> Result<u64, tonic::Status> {
        let channel = self.channel(index).map_err(tonic::Status::unavailable)?;
        let mut client = ClusterIngestClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(PushRequest {
            tenant: tenant.to_string(),
            rows: payload,
        });
        request.set_timeout(PUSH_TIMEOUT);
        client
            .push(request)
            .await
            .map(|response| response.into_inner().stored)
            .map_err(|status| self.failed(index, status))
    }

    /// Records `marks` on member `index` (durably there).
    pub async fn send_marks(&self, index: usize, marks: &[handoff::Mark]) -> Result<(), String> {
        let channel = self.channel(index)?;
        let mut client = ClusterIngestClient::new(channel);
        let mut request = tonic::Request::new(crate::proto::MarkRequest {
            marks: marks.iter().map(Into::into).collect(),
        });
        request.set_timeout(PUSH_TIMEOUT);
        client
            .mark(request)
            .await
            .map(|_| ())
            .map_err(|status| self.failed(index, status).message().to_string())
    }

    /// `status`, from a call to member `index`, after marking the member down when the status
    /// says it could not be reached.
    fn failed(&self, index: usize, status: tonic::Status) -> tonic::Status {
        if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
        ) {
            self.mark_down(index, status.message());
        }
        status
    }

    /// Members, their state and the shards they hold, for `/api/v1/cluster`.
    pub fn status(&self) -> ClusterStatus {
        let health = self.health.read().clone();
        let (hints_kept, missing_rows): (Vec<usize>, Vec<Vec<String>>) = {
            let handoff = self.handoff.lock();
            let names = &self.settings.members;
            (
                names.iter().map(|m| handoff.pending(&m.name)).collect(),
                (0..self.ring.shards())
                    .map(|shard| {
                        self.holders(shard)
                            .iter()
                            .map(|&i| &names[i].name)
                            .filter(|name| handoff.misses(name, shard))
                            .cloned()
                            .collect()
                    })
                    .collect(),
            )
        };
        let names = |indices: &[usize]| -> Vec<String> {
            indices
                .iter()
                .map(|&i| self.member(i).name.clone())
                .collect()
        };
        let members = self
            .settings
            .members
            .iter()
            .enumerate()
            .map(|(index, member)| {
                let (mut primary, mut replica) = (Vec::new(), Vec::new());
                for shard in 0..self.ring.shards() {
                    match self.holders(shard).iter().position(|&m| m == index) {
                        Some(0) => primary.push(shard),
                        Some(_) => replica.push(shard),
                        None => {}
                    }
                }
                let state = if self.is_up(index) {
                    MemberState::Up
                } else {
                    health[index].state
                };
                MemberStatus {
                    hints_kept: hints_kept[index],
                    name: member.name.clone(),
                    http: member.http.clone(),
                    internal: member.internal.clone(),
                    state: serde_json::to_value(state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    last_check: health[index].checked_ns.map(crate::time::rfc3339),
                    error: health[index].error.clone(),
                    primary_shards: primary,
                    replica_shards: replica,
                }
            })
            .collect();
        let shards = (0..self.ring.shards())
            .map(|shard| ShardStatus {
                shard,
                holders: names(self.holders(shard)),
                reader: self.reader(shard).map(|i| self.member(i).name.clone()),
                missing_rows: missing_rows[shard as usize].clone(),
            })
            .collect();
        ClusterStatus {
            self_name: self.settings.self_name.clone(),
            replication_factor: self.settings.replication_factor,
            write_consistency: match self.settings.write_consistency {
                WriteConsistency::Quorum => "quorum".into(),
                WriteConsistency::All => "all".into(),
            },
            members,
            shards,
        }
    }
}

/// How long one health check may take: a member slower than its check interval counts as
/// down.
fn check_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_millis(200), Duration::from_secs(5))
}
