//! Where things live: keys → ranges → groups → shards → addresses. The
//! one place that knows it (see `ARCHITECTURE.md`): the node, the client,
//! the load generator and the tests ask here.
//!
//! Today's deployment: the keyspace is cut into `groups` ordered ranges
//! when the cluster is bootstrapped, at split keys given then (or
//! [`even_split_keys`]); range `g` is group `g`, its bounds are in its
//! replicas' catalog descriptors and state, and a client learns them from
//! the cluster map ([`RangeMap`]). Range `g` is placed on
//! `--replication-factor` of the founding nodes ([`founding_placement`]),
//! on shard `g % shards` of each; shard `s` of a node listens
//! on the port of its shard 0 plus `s` (peers and clients alike).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;

use bytes::Bytes;

use crate::meta::{show_key, Epoch, RangeDesc, RangeId};
use crate::raft::NodeId;

/// `groups - 1` split keys that cut the keyspace into `groups` ranges of
/// equal width, reading a key as a 64-bit big-endian number (its first 8
/// bytes): key `i` is `i * 2^64 / groups` with its trailing zero bytes
/// dropped. For 8 groups: `0x20`, `0x40`, ..., `0xe0`. Keys that share a
/// long prefix (text keys, say) land in few of them; give split keys
/// that fit the keys at bootstrap instead (`--initial-split-keys`).
pub fn even_split_keys(groups: u64) -> Vec<Bytes> {
    (1..groups.max(1))
        .map(|i| {
            let at = ((u128::from(i) << 64) / u128::from(groups)) as u64;
            let b = at.to_be_bytes();
            let len = 8 - b.iter().rev().take_while(|&&x| x == 0).count();
            Bytes::copy_from_slice(&b[..len.max(1)])
        })
        .collect()
}

/// Replicas of each range when `--replication-factor` is not given: three
/// (TiKV's, CockroachDB's and YugabyteDB's default), so a range survives
/// one node down and a cluster of N nodes holds N / 3 of the data per node.
pub const REPLICATION_FACTOR_DEFAULT: u32 = 3;

/// The largest replication factor: a range's voters go in one catalog
/// entry and one descriptor, doubled during a joint configuration
/// (`meta::RANGE_REPLICAS_MAX` = 32 leaves room for learners as well).
pub const REPLICATION_FACTOR_MAX: u32 = 7;
const _: () = assert!(2 * REPLICATION_FACTOR_MAX as usize <= crate::meta::RANGE_REPLICAS_MAX);

/// The nodes of initial range `group` when a cluster of `founders` (sorted,
/// distinct node ids) is bootstrapped with replication factor `rf`: `rf`
/// of them (all, if there are fewer) taken in a ring from
/// `founders[group % n]` (Cassandra's `SimpleStrategy`; Dynamo's preference
/// list). Each node then holds about `rf / n` of the ranges, and the first
/// node of each list, the one that campaigns first, leads `1 / n` of them.
/// Empty if `founders` is.
pub fn founding_placement(group: u64, founders: &[NodeId], rf: u32) -> Vec<NodeId> {
    debug_assert!(
        founders.windows(2).all(|w| w[0] < w[1]),
        "founders sorted and distinct: {founders:?}"
    );
    let n = founders.len();
    if n == 0 {
        return Vec::new();
    }
    let first = (group % n as u64) as usize;
    (0..n.min(rf.max(1) as usize))
        .map(|i| founders[(first + i) % n])
        .collect()
}

/// A fingerprint of how a cluster was bootstrapped: its initial ranges
/// (`groups` and their split keys) and where they were placed (the
/// founding nodes and the replication factor, as far as it matters: `rf`
/// at or above the number of founders places every range on every one).
/// CRC32 over `groups` (u64 LE), each key (u32 LE length, then the bytes),
/// then, when `founders` is not empty, `min(rf, founders)` (u32 LE) and
/// each founder (u64 LE); never 0 (0 means "not known" where it is
/// stored). Nodes bootstrapped otherwise refuse each other at the
/// handshake: they would look for keys in different groups, or give one
/// group two different sets of voters (two majorities that need not meet).
pub fn cuts_fingerprint(groups: u64, split_keys: &[Bytes], founders: &[NodeId], rf: u32) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&groups.to_le_bytes());
    for k in split_keys {
        h.update(&(k.len() as u32).to_le_bytes());
        h.update(k);
    }
    if !founders.is_empty() {
        let placed = (founders.len() as u32).min(rf.max(1));
        h.update(&placed.to_le_bytes());
        for f in founders {
            h.update(&f.to_le_bytes());
        }
    }
    h.finalize().max(1)
}

/// The keys `[start, end)` of initial range `group` among those that
/// `split_keys` (sorted, distinct, non-empty) cut the keyspace into (empty
/// `end`: no upper bound).
///
/// # Panics
/// If `group > split_keys.len()`: the caller creates groups `0..=len`.
pub fn initial_bounds(group: u64, split_keys: &[Bytes]) -> (Bytes, Bytes) {
    let g = group as usize;
    assert!(
        g <= split_keys.len(),
        "initial range {group} of {}",
        split_keys.len() + 1
    );
    let start = if g == 0 {
        Bytes::new()
    } else {
        split_keys[g - 1].clone()
    };
    let end = split_keys.get(g).cloned().unwrap_or_default();
    (start, end)
}

/// The meta group's id: above every id the meta state hands out
/// (`meta::META_ID_MAX`), so no range ever has it. Its replicas live on
/// shard 0 ([`shard_of`]).
pub const META_GROUP: u64 = 1 << 63;
const _: () = assert!(META_GROUP > crate::meta::META_ID_MAX);

/// Voters of the meta group at most: five, as etcd and CockroachDB advise
/// for the group everything else depends on (two may fail).
pub const META_VOTERS_MAX: usize = 5;

/// The meta group's founding voters among `founders` (sorted, distinct):
/// the first `k` of them, `k` the largest odd number at most
/// `min(founders, META_VOTERS_MAX)` (an even count tolerates no more
/// failures than the odd one below it, and needs one more vote).
pub fn meta_voters(founders: &[NodeId]) -> Vec<NodeId> {
    let k = founders.len().min(META_VOTERS_MAX);
    let k = if k.is_multiple_of(2) {
        k.saturating_sub(1)
    } else {
        k
    };
    founders[..k].to_vec()
}

/// The shard that hosts `group` on every node of `shards` shards (0 shards
/// count as 1); the meta group's is shard 0.
pub fn shard_of(group: u64, shards: u32) -> u32 {
    if group == META_GROUP {
        return 0;
    }
    (group % u64::from(shards.max(1))) as u32
}

/// The groups (of `groups`) that shard `shard` of `shards` hosts, in order.
pub fn groups_of_shard(shard: u32, shards: u32, groups: u64) -> impl Iterator<Item = u64> {
    (u64::from(shard)..groups).step_by(shards.max(1) as usize)
}

/// The address of shard `shard` of a node whose shard 0 listens on `base`
/// (port + shard; the node checks at start that the range fits).
pub fn shard_addr(base: SocketAddr, shard: u32) -> SocketAddr {
    SocketAddr::new(base.ip(), base.port() + shard as u16)
}

/// Descriptors of ranges by key, none overlapping: a client's cache of the
/// cluster's map, or the map itself.
///
/// Descriptors arrive in any order and some are stale (a reply from a
/// replica that has not applied a split yet, an old cache entry). The rule
/// of [`RangeMap::insert`] keeps the map converging on the truth: the
/// version of the range that holds a given key never decreases over time
/// (see [`Epoch`]), so a descriptor that overlaps a held one of a higher
/// version is older on those keys and refused, and otherwise it replaces
/// every range it overlaps (PD's region cache and CockroachDB's range
/// cache decide alike). Delivering every current descriptor, in any order
/// and mixed with any stale ones, leaves exactly the current map (tested).
#[derive(Debug, Default, Clone)]
pub struct RangeMap {
    /// Invariant: for consecutive entries `a`, `b`: `a.end` is not empty
    /// and `a.end <= b.start` (no two ranges share a key).
    by_start: BTreeMap<Bytes, RangeDesc>,
    /// The start key of each range held. Invariant: the same entries as
    /// `by_start`.
    start_of: HashMap<RangeId, Bytes>,
}

/// Why [`RangeMap::insert`] refused a descriptor: the map holds a newer one
/// of some of its keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("range {offered} at {offered_epoch} is stale: the map holds range {held} at {held_epoch} over some of its keys")]
pub struct StaleRange {
    pub offered: RangeId,
    pub offered_epoch: Epoch,
    pub held: RangeId,
    pub held_epoch: Epoch,
}

/// What a range's refusal of a key told a [`RangeMap`]
/// ([`RangeMap::learn_refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The answer was newer: the range's descriptor now has its bounds.
    Narrowed,
    /// The map already knew the range does not hold the key.
    Known,
    /// The map's descriptor, no older than the answer, held the key: the
    /// nodes disagree; the descriptor was dropped.
    Disagrees,
}

/// A stretch of keys no range of a [`RangeMap`] holds
/// ([`RangeMap::coverage`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no range holds the keys from {} to {}", show_key(.from), .to.as_ref().map_or("+inf".to_string(), |t| show_key(t)))]
pub struct Gap {
    /// First key not held.
    pub from: Bytes,
    /// First key held again after it; `None`: no key after `from` is held.
    pub to: Option<Bytes>,
}

impl RangeMap {
    pub fn new() -> RangeMap {
        RangeMap::default()
    }

    /// Ranges held.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// The range holding `key`, if the map has it.
    pub fn range_of(&self, key: &[u8]) -> Option<&RangeDesc> {
        self.by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, d)| d)
            .filter(|d| d.contains(key))
    }

    /// The range with id `id`, if the map has it.
    pub fn get(&self, id: RangeId) -> Option<&RangeDesc> {
        self.start_of.get(&id).map(|s| &self.by_start[s])
    }

    /// Every range held, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RangeDesc> {
        self.by_start.values()
    }

    /// How many ranges have a replica (voter or learner) on `node`.
    pub fn held_by(&self, node: NodeId) -> usize {
        self.iter().filter(|d| d.replica_on(node).is_some()).count()
    }

    /// The ranges sharing a key with `[start, end)` (empty `end`: no upper
    /// bound), in key order.
    pub fn overlapping<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = &'a RangeDesc> + 'a {
        let below = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .map(|(_, d)| d)
            .filter(move |d| d.overlaps(start, end));
        let above = self
            .by_start
            .range::<[u8], _>((Bound::Excluded(start), Bound::Unbounded))
            .map(|(_, d)| d)
            .take_while(move |d| end.is_empty() || &d.start[..] < end);
        below.into_iter().chain(above)
    }

    /// Adds `desc` unless the map holds a newer descriptor of some of its
    /// keys (the rule on the type: an overlapping range of a higher
    /// version, or the same range at an epoch `desc` is stale against).
    /// On success, returns the descriptors it replaced, in key order.
    ///
    /// # Panics
    /// In debug builds, if `desc` breaks its own invariants (callers
    /// decode descriptors, which validates them).
    pub fn insert(&mut self, desc: RangeDesc) -> Result<Vec<RangeDesc>, StaleRange> {
        debug_assert_eq!(desc.validate(), Ok(()));
        let stale = |held: &RangeDesc| StaleRange {
            offered: desc.id,
            offered_epoch: desc.epoch,
            held: held.id,
            held_epoch: held.epoch,
        };
        if let Some(held) = self.get(desc.id) {
            if desc.epoch.is_stale_against(&held.epoch) {
                return Err(stale(held));
            }
        }
        let mut starts: Vec<Bytes> = Vec::new();
        for held in self.overlapping(&desc.start, &desc.end) {
            if held.epoch.version > desc.epoch.version {
                return Err(stale(held));
            }
            starts.push(held.start.clone());
        }
        // The same range under an older span it no longer overlaps (not
        // reachable by splits and merges, which keep a range on some of
        // its old keys; kept so the id index cannot go wrong).
        if let Some(s) = self.start_of.get(&desc.id) {
            if !starts.contains(s) {
                starts.push(s.clone());
                starts.sort();
            }
        }
        let mut displaced = Vec::with_capacity(starts.len());
        for s in starts {
            let d = self
                .by_start
                .remove(&s)
                .expect("an overlapping range is held");
            self.start_of.remove(&d.id);
            displaced.push(d);
        }
        self.start_of.insert(desc.id, desc.start.clone());
        self.by_start.insert(desc.start.clone(), desc);
        self.debug_check();
        Ok(displaced)
    }

    /// What a range's refusal of a key tells this map (a replica of range
    /// `id` answered `KeyNotInRange`: `key` is not in its keys
    /// `[start, end)` at `version`), and the map updated by it:
    ///
    /// - the answer is newer than the map's descriptor of `id` (the range
    ///   split or merged): the descriptor is narrowed to those bounds at
    ///   that version (replicas unchanged), so reports of the old bounds,
    ///   from replicas that have not applied the split yet, are refused as
    ///   stale ([`RangeMap::insert`]) and the keys that left `id` are
    ///   looked up afresh ([`Refusal::Narrowed`]);
    /// - the map knew it already: its descriptor of `id`, of that version
    ///   or newer, does not hold `key`, or `id` is gone and another range
    ///   holds `key` (another request on the same map was refused first,
    ///   or a fresher report came in meanwhile) ([`Refusal::Known`]);
    /// - the map's descriptor of `id`, no older than the answer, still
    ///   holds `key`, or `id` is gone and no range holds `key`: the nodes
    ///   disagree (bootstrapped with other cuts, or a replica behind its
    ///   own descriptor); the descriptor is dropped, to be asked again
    ///   ([`Refusal::Disagrees`]).
    ///
    /// Only the last counts against a client's `KEY_RANGE_RETRIES_MAX`:
    /// counting the second would fail requests that raced a split on a
    /// shared map (and dropping the narrowed descriptor would let a
    /// lagging replica's pre-split bounds back in).
    pub fn learn_refusal(
        &mut self,
        id: RangeId,
        key: &[u8],
        start: &Bytes,
        end: &Bytes,
        version: u64,
    ) -> Refusal {
        let Some(held) = self.get(id) else {
            return if self.range_of(key).is_some() {
                Refusal::Known
            } else {
                Refusal::Disagrees
            };
        };
        if held.epoch.version >= version {
            if held.contains(key) {
                self.remove(id);
                return Refusal::Disagrees;
            }
            return Refusal::Known;
        }
        let mut d = held.clone();
        d.start = start.clone();
        d.end = end.clone();
        d.epoch.version = version;
        if d.validate().is_err() || self.insert(d).is_err() {
            self.remove(id);
            return Refusal::Disagrees;
        }
        Refusal::Narrowed
    }

    /// Drops range `id` (a client told that its descriptor is wrong, and
    /// with nothing newer to replace it).
    pub fn remove(&mut self, id: RangeId) -> Option<RangeDesc> {
        let s = self.start_of.remove(&id)?;
        self.by_start.remove(&s)
    }

    /// `Ok` if every key is held by exactly one range (the cluster map's
    /// invariant; a client's cache may have gaps), else the first gap.
    pub fn coverage(&self) -> Result<(), Gap> {
        let mut from = Bytes::new();
        for d in self.by_start.values() {
            if d.start != from {
                return Err(Gap {
                    from,
                    to: Some(d.start.clone()),
                });
            }
            if d.end.is_empty() {
                return Ok(());
            }
            from = d.end.clone();
        }
        Err(Gap { from, to: None })
    }

    /// Checks the invariants on the fields (debug builds).
    fn debug_check(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        assert_eq!(
            self.by_start.len(),
            self.start_of.len(),
            "RangeMap index size"
        );
        let mut prev: Option<&RangeDesc> = None;
        for (s, d) in &self.by_start {
            assert_eq!(s, &d.start, "RangeMap keyed by start");
            assert_eq!(self.start_of.get(&d.id), Some(s), "RangeMap id index");
            if let Some(p) = prev {
                assert!(
                    !p.end.is_empty() && p.end <= d.start,
                    "RangeMap overlap: {p} and {d}"
                );
            }
            prev = Some(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_shards_agree() {
        for shards in 1..5u32 {
            for g in 0..20u64 {
                let s = shard_of(g, shards);
                assert!(groups_of_shard(s, shards, 20).any(|x| x == g));
                assert_eq!(
                    (0..shards)
                        .filter(|&t| groups_of_shard(t, shards, 20).any(|x| x == g))
                        .count(),
                    1,
                    "group {g} on exactly one shard of {shards}"
                );
            }
        }
        let base: SocketAddr = "127.0.0.1:7100".parse().unwrap();
        assert_eq!(
            shard_addr(base, 3),
            "127.0.0.1:7103".parse::<SocketAddr>().unwrap()
        );
    }

    /// The meta group's voters: the first founders, an odd count, at most
    /// five; and its replicas live on shard 0 whatever the shard count.
    #[test]
    fn meta_voters_are_an_odd_count_of_the_first_founders_on_shard_0() {
        let f: Vec<u64> = (1..=9).collect();
        for (n, want) in [
            (0, 0),
            (1, 1),
            (2, 1),
            (3, 3),
            (4, 3),
            (5, 5),
            (6, 5),
            (9, 5),
        ] {
            assert_eq!(meta_voters(&f[..n]), f[..want].to_vec(), "{n} founders");
        }
        for shards in 1..=7 {
            assert_eq!(shard_of(META_GROUP, shards), 0);
        }
    }

    #[test]
    fn founding_placement_spreads_replicas_and_first_candidates_evenly() {
        assert!(founding_placement(3, &[], 3).is_empty());
        // Fewer founders than the factor: every range on every founder.
        assert_eq!(founding_placement(4, &[1, 2], 3), vec![1, 2]);
        assert_eq!(founding_placement(0, &[7], 5), vec![7]);
        let founders = [1, 2, 3, 4, 5, 6];
        for rf in 1..=REPLICATION_FACTOR_MAX {
            let groups = 60u64;
            let mut hosted = BTreeMap::<NodeId, u64>::new();
            let mut first = BTreeMap::<NodeId, u64>::new();
            for g in 0..groups {
                let p = founding_placement(g, &founders, rf);
                let want = founders.len().min(rf as usize);
                assert_eq!(p.len(), want, "group {g}, rf {rf}: {p:?}");
                let mut d = p.clone();
                d.sort_unstable();
                d.dedup();
                assert_eq!(d.len(), want, "distinct nodes: {p:?}");
                *first.entry(p[0]).or_default() += 1;
                for n in p {
                    *hosted.entry(n).or_default() += 1;
                }
            }
            // 60 groups over 6 nodes: exactly even.
            let each = groups * founders.len().min(rf as usize) as u64 / 6;
            assert!(hosted.values().all(|&h| h == each), "rf {rf}: {hosted:?}");
            assert!(first.values().all(|&f| f == 10), "rf {rf}: {first:?}");
        }
    }

    #[test]
    fn the_fingerprint_covers_the_placement_only_where_it_differs() {
        let keys = even_split_keys(8);
        let fp = |founders: &[NodeId], rf| cuts_fingerprint(8, &keys, founders, rf);
        // At or above the number of founders, every factor places alike.
        assert_eq!(fp(&[1, 2, 3], 3), fp(&[1, 2, 3], 5));
        assert_ne!(fp(&[1, 2, 3, 4, 5], 3), fp(&[1, 2, 3, 4, 5], 5));
        // Other founders: other voters.
        assert_ne!(fp(&[1, 2, 3], 3), fp(&[1, 2, 4], 3));
        assert_ne!(fp(&[1, 2, 3], 3), fp(&[1, 2], 3));
        // Other cuts.
        assert_ne!(
            fp(&[1, 2, 3], 3),
            cuts_fingerprint(4, &even_split_keys(4), &[1, 2, 3], 3)
        );
        assert!([fp(&[], 3), fp(&[1], 1)].iter().all(|&f| f != 0));
    }

    #[test]
    fn even_split_keys_cut_the_keyspace_in_order() {
        assert!(even_split_keys(1).is_empty() && even_split_keys(0).is_empty());
        let eight: Vec<u8> = even_split_keys(8).iter().map(|k| k[0]).collect();
        assert_eq!(eight, vec![0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0]);
        assert!(even_split_keys(8).iter().all(|k| k.len() == 1));
        for n in [2u64, 3, 7, 1000, 1 << 20] {
            let keys = even_split_keys(n);
            assert_eq!(keys.len() as u64, n - 1);
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "{n}: sorted and distinct"
            );
            assert!(keys.iter().all(|k| !k.is_empty() && k.len() <= 8));
            // The initial ranges tile the keyspace.
            let mut m = RangeMap::new();
            for g in [0, n / 2, n - 1] {
                let (start, end) = initial_bounds(g, &keys);
                assert!(end.is_empty() || start < end);
                if g + 1 < n {
                    assert_eq!(initial_bounds(g + 1, &keys).0, end);
                }
            }
            for g in 0..n.min(50) {
                let (start, end) = initial_bounds(g, &keys);
                m.insert(RangeDesc {
                    id: g,
                    start,
                    end,
                    epoch: Epoch::default(),
                    replicas: vec![crate::meta::RangeReplica {
                        replica: 1,
                        node: 1,
                        shard: 0,
                        role: crate::meta::ReplicaRole::Voter,
                    }],
                })
                .unwrap();
            }
            if n <= 50 {
                assert_eq!(m.coverage(), Ok(()), "{n} ranges cover the keyspace");
            }
        }
    }
}
