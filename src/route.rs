//! Where things live: keys → groups → shards → addresses. The one place
//! that knows it (see `ARCHITECTURE.md`): the node, the client, the load
//! generator and the tests ask here, so that the move to ordered key
//! ranges placed on a subset of nodes changes this file, not six others.
//!
//! Today's static deployment: `groups` groups, every group on every node;
//! keys map to groups by FNV-1a (64-bit) of the key modulo `groups`; group
//! `g` lives on shard `g % shards` of every node; shard `s` of a node
//! listens on the port of its shard 0 plus `s` (peers and clients alike).

use std::net::SocketAddr;

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
