//! Joining a running cluster through one of its members (`--join ADDR`).
//!
//! At a node's first start (its data dir holds no store yet) the node asks
//! the cluster's meta group, through any member's client address, for the
//! cluster map; takes a node id from the meta group's allocator (unless
//! `--id` is given), registers its addresses under it, and starts with the
//! cluster-wide settings (shards, key and value limits) and the members'
//! peer addresses from the map: no `--peers`, `--shards` or `--id` to get
//! right by hand (CockroachDB's `--join`, TiKV's `--pd`). It founds no
//! range; the balancer moves replicas to it.
//!
//! The id is allocated before the node registers, each its own meta
//! command: an allocation whose answer is lost and asked again wastes an
//! id, where a register-with-a-new-id asked twice would leave a phantom
//! node in the map for the balancer to place replicas on.
//!
//! At a restart the store fixes the id and the shards; the map is asked
//! again for the members' current addresses, for at most
//! [`JOIN_RESTART_WAIT_MS`]: a cluster restarting as a whole must not keep
//! its members from starting, and they know their peers from their
//! replicas' address books too.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{Client, ClientConfig};
use crate::config::{Join, NodeSettings};
use crate::identity::{StoreIdentity, STORE_FILE};
use crate::meta::{IdKind, MetaCmd, MetaReply, MetaState, NodeState};

/// How long a first start keeps asking the members for the map (they may
/// be starting too, or electing the meta group's leader), in ms.
pub const JOIN_WAIT_MS: u64 = 60_000;

/// How long a restart asks the members for their addresses before it
/// starts with what its replicas know, in ms.
pub const JOIN_RESTART_WAIT_MS: u64 = 5_000;

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The flags contradict the cluster or each other: fix them (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The cluster could not be asked, or refused (exit 1).
    #[error("{0}")]
    Cluster(String),
}

/// `settings` with what joining through a member supplies: unchanged
/// unless `--join` names addresses. See the module docs.
pub fn resolve(mut s: NodeSettings) -> Result<NodeSettings, JoinError> {
    let via: Vec<String> = match &s.join {
        Some(j) => j.via().into_iter().map(String::from).collect(),
        None => Vec::new(),
    };
    if via.is_empty() {
        return Ok(s);
    }
    if s.initial_cluster_state.as_deref() == Some("new") {
        return Err(JoinError::Usage(format!(
            "--join {}: contradicts --initial-cluster-state new (a node either founds a cluster or joins one)",
            via.join(",")
        )));
    }
    let Some(dir) = s.data_dir.clone() else {
        // `validate` names the missing flag.
        return Ok(s);
    };
    let mut addrs = Vec::new();
    for a in &via {
        match a.to_socket_addrs().map(|mut i| i.next()) {
            Ok(Some(x)) => addrs.push(x),
            _ => {
                return Err(JoinError::Usage(format!(
                    "--join {a}: not an address (expected HOST:PORT, a member's --listen-clients)"
                )))
            }
        }
    }
    let (peer, client) = s
        .listen_addrs()
        .map_err(|e| JoinError::Usage(e.to_string()))?;
    for (flag, a) in [("listen-peers", peer), ("listen-clients", client)] {
        if a.ip().is_unspecified() {
            return Err(JoinError::Usage(format!(
                "--{flag} {a}: a joining node registers the addresses it listens on and the members dial them; give this host's address, not an unspecified one"
            )));
        }
    }
    let stored = read_store(&dir)?;
    let cluster_id = s.cluster_id.unwrap_or(1);
    let ask = Ask {
        addrs,
        via: via.join(","),
        cluster_id,
        wait_ms: if stored.is_some() {
            JOIN_RESTART_WAIT_MS
        } else {
            JOIN_WAIT_MS
        },
    };
    match stored {
        Some(st) => {
            // A restart: the store decides; open_store reports a --id or
            // --shards that contradicts it.
            s.id = s.id.or(Some(st.node));
            s.shards = s.shards.or(Some(st.shards));
            match on_executor(move || async move { ask.map().await }) {
                Ok(map) => {
                    fill_peers(&mut s, &map, st.node);
                    fill_groups(&mut s, &map);
                }
                Err(e) => {
                    tracing::warn!("{e}; starting with the peers this node's replicas know");
                    if s.groups.is_none() && st.groups != 0 {
                        s.groups = Some(u64::from(st.groups));
                    }
                }
            }
            Ok(s)
        }
        None => {
            let want_id = s.id;
            let shards = s.shards;
            let (map, id) = on_executor(move || async move {
                let map = ask.map().await?;
                let set = map.settings().expect("map() waits for settings");
                if let Some(sh) = shards.filter(|&sh| sh != set.shards) {
                    return Err(JoinError::Usage(format!(
                        "--shards {sh}: the cluster's nodes have {} shards (a cluster-wide setting): drop --shards, or give {}",
                        set.shards, set.shards
                    )));
                }
                let id = ask.register(&map, want_id, peer, client).await?;
                Ok((map, id))
            })?;
            let set = map.settings().expect("map() waits for settings");
            s.id = Some(id);
            s.shards = Some(set.shards);
            adopt(
                &mut s.key_bytes_max,
                set.key_bytes_max as usize,
                "key-bytes-max",
            )?;
            adopt(
                &mut s.value_bytes_max,
                set.value_bytes_max as usize,
                "value-bytes-max",
            )?;
            s.join = Some(Join::Via(via.join(",")));
            fill_peers(&mut s, &map, id);
            fill_groups(&mut s, &map);
            tracing::info!(
                node = id,
                via = %via.join(","),
                shards = set.shards,
                "joined the cluster: registered in its meta group"
            );
            Ok(s)
        }
    }
}

/// A cluster-wide limit: the map's, unless the flag gave the same.
fn adopt(flag: &mut Option<usize>, cluster: usize, name: &str) -> Result<(), JoinError> {
    match *flag {
        Some(v) if v != cluster => Err(JoinError::Usage(format!(
            "--{name} {v}: the cluster's is {cluster} (a cluster-wide setting, kept in its meta group): drop --{name}, or give {cluster}"
        ))),
        _ => {
            *flag = Some(cluster);
            Ok(())
        }
    }
}

/// `--peers` from the map (every other registered, not decommissioned
/// node), unless given.
fn fill_peers(s: &mut NodeSettings, map: &MetaState, me: u64) {
    if s.peers.is_some() {
        return;
    }
    let peers: Vec<String> = map
        .nodes()
        .filter(|n| n.id != me && n.state != NodeState::Decommissioned && !n.peer_addr.is_empty())
        .map(|n| format!("{}={}", n.id, n.peer_addr))
        .collect();
    if !peers.is_empty() {
        s.peers = Some(peers.join(","));
    }
}

/// A joined node founds no range, but `--groups` bounds the group ids it
/// takes for real ones (a request for a higher id is refused as unknown,
/// and clients learn the count from its cluster map): every range id the
/// meta group has handed out, at least one per shard. A node left at the
/// default of 8 in a cluster of 12 ranges refused writes to range 9 with
/// "no group 9", which a client does not retry (found by
/// `nodes_joining_through_one_member_get_their_share_of_replicas_and_leaders`).
fn fill_groups(s: &mut NodeSettings, map: &MetaState) {
    if s.groups.is_some() {
        return;
    }
    let ranges = map.next_ids().1;
    let shards = u64::from(s.shards.unwrap_or(1));
    s.groups = Some(ranges.max(shards).max(1));
}

/// The data dir's `STORE`, if it has one (read without the lock, which
/// the node takes next: a second process is refused there).
pub fn read_store(dir: &Path) -> Result<Option<StoreIdentity>, JoinError> {
    let path = dir.join(STORE_FILE);
    match std::fs::read(&path) {
        Ok(b) => StoreIdentity::decode(&path.display().to_string(), &b)
            .map(Some)
            .map_err(|e| JoinError::Cluster(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JoinError::Cluster(format!("{}: {e}", path.display()))),
    }
}

fn on_executor<T: Send + 'static, F, Fut>(f: F) -> Result<T, JoinError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, JoinError>> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("join")
        .spawn(f)
        .map_err(|e| JoinError::Cluster(format!("an executor to join with: {e}")))?
        .join()
        .map_err(|e| JoinError::Cluster(format!("joining: {e:?}")))?
}

struct Ask {
    addrs: Vec<SocketAddr>,
    via: String,
    cluster_id: u64,
    wait_ms: u64,
}

/// Whether a connection error is another cluster's node refusing this
/// one (asking again does not help).
fn refused(e: &str) -> bool {
    e.contains("refused by node")
}

impl Ask {
    /// A client of the members given, of this node's cluster, that waits
    /// no longer than the join does.
    fn client_cfg(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.addrs.clone());
        cfg.cluster_id = self.cluster_id;
        cfg.fetch_ranges_at_connect = false;
        cfg.op_timeout_ms = cfg.op_timeout_ms.min(self.wait_ms);
        cfg
    }

    /// The cluster map, once a member answers and the meta group holds
    /// one covering the whole keyspace; asked again until `wait_ms` has
    /// passed.
    async fn map(&self) -> Result<MetaState, JoinError> {
        let deadline = Instant::now() + Duration::from_millis(self.wait_ms);
        let mut last;
        loop {
            match Client::connect(self.client_cfg()).await {
                Ok(c) => {
                    let r = c.meta_state().await;
                    c.close().await;
                    match r {
                        Ok(m) if m.settings().is_some() && m.ranges().coverage().is_ok() => {
                            return Ok(m)
                        }
                        Ok(m) if m.settings().is_some() => {
                            // The ranges' leaders report them within
                            // seconds of a bootstrap; the node's --groups
                            // is taken from them (`fill_groups`).
                            last = "its meta group does not hold every range yet".to_string()
                        }
                        Ok(_) => {
                            last = "its meta group holds no map yet (the founders write it once the meta group has a leader)".to_string()
                        }
                        Err(e) => last = format!("its meta group did not answer: {e}"),
                    }
                }
                Err(e) => {
                    last = e.to_string();
                    // Another cluster's node refuses at once: asking again
                    // does not help.
                    if refused(&last) {
                        return Err(JoinError::Cluster(format!(
                            "--join {}: {last} (this node's --cluster-id is {})",
                            self.via, self.cluster_id
                        )));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(JoinError::Cluster(format!(
                    "--join {}: no cluster map within {} ms: {last}. Check that the address is a member's --listen-clients and that a majority of the cluster is up",
                    self.via, self.wait_ms
                )));
            }
            glommio::timer::sleep(Duration::from_millis(500)).await;
        }
    }

    /// This node's id in the map, registered with its addresses.
    async fn register(
        &self,
        map: &MetaState,
        want: Option<u64>,
        peer: SocketAddr,
        client: SocketAddr,
    ) -> Result<u64, JoinError> {
        let set = map.settings().expect("map() waits for settings");
        // The member that gave the map may have gone since (restarted,
        // stopped): asked again, as `map` does, for as long.
        let deadline = Instant::now() + Duration::from_millis(self.wait_ms);
        let c = loop {
            match Client::connect(self.client_cfg()).await {
                Ok(c) => break c,
                Err(e) if refused(&e.to_string()) => {
                    return Err(JoinError::Cluster(format!(
                        "--join {}: registering this node: {e} (this node's --cluster-id is {})",
                        self.via, self.cluster_id
                    )))
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(JoinError::Cluster(format!(
                        "--join {}: registering this node: {e} (for {} ms). Check that the address is a member's --listen-clients and that it is up",
                        self.via, self.wait_ms
                    )))
                }
                Err(e) => {
                    tracing::info!("--join {}: registering this node: {e}; asking again", self.via);
                    glommio::timer::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let refused = |e: crate::client::Error| {
            JoinError::Cluster(format!("--join {}: the meta group: {e}", self.via))
        };
        let id = match want {
            Some(id) => {
                if let Some(n) = map.node(id) {
                    return Err(JoinError::Usage(format!(
                        "--id {id}: node {id} is already a member (peer address {}, {:?}); a node with an empty data dir joins as a new node: drop --id and the cluster gives it one (to replace node {id}: `ringraft ctl replace-node {id} NEW`)",
                        n.peer_addr, n.state
                    )));
                }
                id
            }
            None => match c
                .meta(&MetaCmd::AllocIds {
                    kind: IdKind::Node,
                    count: 1,
                })
                .await
                .map_err(refused)?
            {
                MetaReply::Ids { first, .. } => first,
                r => {
                    return Err(JoinError::Cluster(format!(
                        "the meta group answered {r:?} to an id request"
                    )))
                }
            },
        };
        let r = c
            .meta(&MetaCmd::JoinNode {
                node: id,
                peer_addr: peer.to_string(),
                client_addr: client.to_string(),
                shards: set.shards,
            })
            .await
            .map_err(refused)?;
        c.close().await;
        match r {
            MetaReply::Node(n) if n == id => Ok(id),
            r => Err(JoinError::Cluster(format!(
                "the meta group answered {r:?} to registering node {id}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ClusterSettings;

    /// A member that gave the map and then went away (restarted, stopped)
    /// is asked again for `wait_ms` before registering gives up, with an
    /// error naming the address and what to check. It once gave up at the
    /// first refused connection: a node joining through a member that the
    /// nemesis killed a moment later exited (chaos soak of the balancer,
    /// seed 11, at 26 minutes).
    #[test]
    fn registering_asks_again_until_the_wait_ends() {
        let port = crate::local_cluster::free_ports(1).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let ask = Ask {
            addrs: vec![addr],
            via: addr.to_string(),
            cluster_id: 1,
            wait_ms: 1200,
        };
        let mut map = MetaState::new();
        let settings = ClusterSettings {
            replication_factor: 3,
            shards: 1,
            key_bytes_max: 4096,
            value_bytes_max: 4096,
        };
        map.apply(&MetaCmd::Bootstrap {
            settings,
            nodes: Vec::new(),
            ranges: Vec::new(),
        })
        .unwrap();
        let t0 = Instant::now();
        let e = on_executor(move || async move { ask.register(&map, Some(9), addr, addr).await })
            .unwrap_err()
            .to_string();
        assert!(
            t0.elapsed() >= Duration::from_millis(1200),
            "gave up after {:?}: {e}",
            t0.elapsed()
        );
        assert!(
            e.contains("registering this node") && e.contains(&addr.to_string()),
            "{e}"
        );
    }
}
