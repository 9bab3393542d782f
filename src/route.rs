//! Where things live: keys → groups → shards → addresses. The one place
//! that knows it (see `ARCHITECTURE.md`): the node, the client, the load
//! generator and the tests ask here, so that the move to ordered key
//! ranges placed on a subset of nodes changes this file, not six others.
//!
//! Today's static deployment: `groups` groups, every group on every node;
//! keys map to groups by FNV-1a (64-bit) of the key modulo `groups`; group
//! `g` lives on shard `g % shards` of every node; shard `s` of a node
//! listens on the port of its shard 0 plus `s` (peers and clients alike).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;

use bytes::Bytes;

use crate::meta::{show_key, Epoch, RangeDesc, RangeId};

/// The group `key` belongs to among `groups` (FNV-1a 64 of the key, mod
/// `groups`; 0 groups count as 1). Stable across versions: clients and
/// nodes of one cluster must agree.
pub fn group_of(key: &[u8], groups: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % groups.max(1)
}

/// The shard that hosts `group` on every node of `shards` shards (0 shards
/// count as 1).
pub fn shard_of(group: u64, shards: u32) -> u32 {
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
    fn keys_groups_and_shards_agree() {
        // FNV-1a 64 of the empty key is its offset basis.
        assert_eq!(group_of(b"", 1 << 40), 0xcbf2_9ce4_8422_2325 % (1 << 40));
        assert_eq!(group_of(b"anything", 1), 0);
        assert_eq!(group_of(b"anything", 0), 0);
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
}
