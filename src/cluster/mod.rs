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

pub mod ring;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::config::{ClusterSettings, MemberSettings, WriteConsistency};
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
}

/// How long connecting to a member's cluster port may take before the member counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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
}

/// One shard in [`ClusterStatus`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    pub shard: u32,
    /// Holder names, primary first.
    pub holders: Vec<String>,
    /// The holder reads go to now; none when no holder is up.
    pub reader: Option<String>,
}

impl Cluster {
    /// The cluster `settings` describe, with `shards` shards; the settings must have been
    /// validated ([`crate::config::Config::validate`]).
    pub fn new(settings: ClusterSettings, shards: u32) -> Arc<Cluster> {
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
        Arc::new(Cluster {
            settings,
            self_index,
            ring,
            health: RwLock::new(health),
            client,
            channels: Mutex::new(vec![None; names.len()]),
        })
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

    /// The holder of `shard` that reads go to: the first holder that is up, primary first, so
    /// that every member picks the same one; none when no holder is up.
    pub fn reader(&self, shard: u32) -> Option<usize> {
        self.holders(shard).iter().copied().find(|&m| self.is_up(m))
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

    /// Checks every other member once, concurrently.
    pub async fn check_members(&self) {
        let checks = (0..self.len())
            .filter(|&i| i != self.self_index)
            .map(|index| async move {
                let url = format!("http://{}/ready", self.member(index).http);
                let outcome = match self.client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!("/ready answered {}", response.status())),
                    Err(e) => Err(e.to_string()),
                };
                (index, outcome)
            });
        let outcomes = futures::future::join_all(checks).await;
        let now = crate::time::now_ns();
        let mut health = self.health.write();
        for (index, outcome) in outcomes {
            let entry = &mut health[index];
            let was = entry.state;
            entry.checked_ns = Some(now);
            match outcome {
                Ok(()) => {
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

    /// Checks the members every `health_check` until `stop` completes.
    pub async fn run_health_checks(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.settings.health_check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => self.check_members().await,
            }
        }
    }

    /// Members, their state and the shards they hold, for `/api/v1/cluster`.
    pub fn status(&self) -> ClusterStatus {
        let health = self.health.read().clone();
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
