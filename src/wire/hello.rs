//! The handshake: the first frame on every connection says who is calling,
//! the answer accepts or refuses it.
//!
//! ```text
//! HELLO payload (72 bytes, fixed for a protocol version)
//!   0  cluster     u64 LE   cluster id: nodes of different clusters never talk
//!   8  node        u64 LE   caller's node id (0: a client)
//!  16  shard       u32 LE   shard index the caller wants (= its own, for a peer)
//!  20  shards      u32 LE   shards per node (group placement must agree)
//!  24  version     u32 LE   PROTOCOL_VERSION of the caller
//!  28  cuts        u32 LE   fingerprint of the caller's initial key ranges
//!                           (`StoreIdentity::cuts`; 0: not known, a client)
//!  32  incarnation u64 LE   the caller's store incarnation (0: a client)
//!  40  expected    u64 LE   the incarnation the caller knows the answerer
//!                           by (0: never met); see `crate::identity`
//!  48  family      u8       the caller's client address: 0 none, 4, 6
//!  49  pad         u8 = 0
//!  50  port        u16 LE
//!  52  ip          [16]     IPv4 in the first 4 bytes, the rest 0
//!  68  pad         u32 = 0
//!
//! HELLO_REPLY payload
//!   0  status      u32 LE   0 = accepted, 1 = refused
//!   4  reserved    u32 = 0
//!   8  answerer    u64 LE   the answering node's id
//!  16  incarnation u64 LE   the answerer's store incarnation
//!  24  reason      UTF-8    why it was refused (empty when accepted)
//! ```
//!
//! A caller of another protocol version fails the frame check first (the
//! answer is in this node's version, so the caller sees the mismatch too).

use super::frame::{encode_frame, encode_frame_parts, PROTOCOL_VERSION};

/// Frame kind of a handshake.
pub const KIND_HELLO: u8 = 2;
/// Frame kind of the answer to a handshake.
pub const KIND_HELLO_REPLY: u8 = 3;

const HELLO_BYTES: usize = 72;
const REPLY_HEAD_BYTES: usize = 24;
/// Bound on the reason of a refusal (longer ones are cut).
pub const REFUSAL_REASON_BYTES_MAX: usize = 512;

/// The largest frame read while a handshake is under way (a hello, or a
/// reply with its refusal reason): frames of the handshake are small, and
/// a caller must not make the answerer buffer more before it is admitted.
pub const HELLO_FRAME_BYTES_MAX: usize = 4096;
const _: () = assert!(HELLO_BYTES + REFUSAL_REASON_BYTES_MAX + 64 <= HELLO_FRAME_BYTES_MAX);

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub cluster: u64,
    /// 0 for a client.
    pub node: u64,
    pub shard: u32,
    pub shards: u32,
    pub version: u32,
    /// The caller's store incarnation; 0 for a client, never 0 for a peer.
    pub incarnation: u64,
    /// The incarnation the caller knows the answerer by (0: never met).
    pub expected: u64,
    /// Fingerprint of the caller's initial key ranges (0: not known).
    pub cuts: u32,
    /// Where the caller serves clients (its shard 0), if it says: peers
    /// learn each other's client addresses here, and tell clients.
    pub client_addr: Option<std::net::SocketAddr>,
}

/// An accepted handshake's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloReply {
    pub answerer: u64,
    /// The answerer's store incarnation (0 from a node that has none, such
    /// as a test responder).
    pub incarnation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("handshake of {0} bytes, expected {HELLO_BYTES}")]
    Size(usize),
    #[error("handshake answer is malformed ({0} bytes)")]
    ReplySize(usize),
    #[error("cluster id {got:#x}, this node belongs to cluster {want:#x}")]
    Cluster { got: u64, want: u64 },
    #[error("protocol version {got}, this node speaks {PROTOCOL_VERSION}")]
    Version { got: u32 },
    #[error("shard {got} asked of a node whose shard here is {want}")]
    Shard { got: u32, want: u32 },
    #[error("peer runs {got} shards per node, this node {want}: group placement would differ")]
    Shards { got: u32, want: u32 },
    #[error("peer {0} sent no store incarnation: it runs an older ringraft (before store identities); upgrade it")]
    NoIncarnation(u64),
    #[error("handshake's client address is malformed (family {0}; 0, 4 and 6 are known, and unused bytes must be 0)")]
    Address(u8),
    #[error("peer claims this node's own id {0}")]
    SelfId(u64),
    #[error("peer {node}'s cluster was bootstrapped with other key ranges or another placement (fingerprint {got:#010x}, this node's {want:#010x}): keys would be looked for in different groups, or a group would have two sets of voters. Bootstrap every node of a new cluster with the same --groups, --initial-split-keys and --replication-factor, each node's --peers naming all the others")]
    Cuts { node: u64, got: u32, want: u32 },
    #[error("refused by node {node}: {reason}")]
    Refused { node: u64, reason: String },
}

impl Hello {
    /// The hello a client sends to `shard` of a node of `cluster` (node 0,
    /// no incarnation: clients have no identity to check).
    pub fn client(cluster: u64, shard: u32) -> Hello {
        Hello {
            cluster,
            node: 0,
            shard,
            shards: 0,
            version: PROTOCOL_VERSION as u32,
            incarnation: 0,
            expected: 0,
            cuts: 0,
            client_addr: None,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut p = [0u8; HELLO_BYTES];
        p[0..8].copy_from_slice(&self.cluster.to_le_bytes());
        p[8..16].copy_from_slice(&self.node.to_le_bytes());
        p[16..20].copy_from_slice(&self.shard.to_le_bytes());
        p[20..24].copy_from_slice(&self.shards.to_le_bytes());
        p[24..28].copy_from_slice(&self.version.to_le_bytes());
        p[28..32].copy_from_slice(&self.cuts.to_le_bytes());
        p[32..40].copy_from_slice(&self.incarnation.to_le_bytes());
        p[40..48].copy_from_slice(&self.expected.to_le_bytes());
        if let Some(a) = self.client_addr {
            p[50..52].copy_from_slice(&a.port().to_le_bytes());
            match a.ip() {
                std::net::IpAddr::V4(ip) => {
                    p[48] = 4;
                    p[52..56].copy_from_slice(&ip.octets());
                }
                std::net::IpAddr::V6(ip) => {
                    p[48] = 6;
                    p[52..68].copy_from_slice(&ip.octets());
                }
            }
        }
        encode_frame(out, KIND_HELLO, &p);
    }

    pub fn decode(p: &[u8]) -> Result<Hello, HelloError> {
        if p.len() != HELLO_BYTES || p[49] != 0 || p[68..72] != [0; 4] {
            return Err(HelloError::Size(p.len()));
        }
        let u64at = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().expect("8 bytes"));
        let u32at = |i: usize| u32::from_le_bytes(p[i..i + 4].try_into().expect("4 bytes"));
        let port = u16::from_le_bytes([p[50], p[51]]);
        let client_addr = match p[48] {
            0 if p[50..68] == [0; 18] => None,
            4 if p[56..68] == [0; 12] => {
                let ip: [u8; 4] = p[52..56].try_into().expect("4 bytes");
                Some(std::net::SocketAddr::from((ip, port)))
            }
            6 => {
                let ip: [u8; 16] = p[52..68].try_into().expect("16 bytes");
                Some(std::net::SocketAddr::from((ip, port)))
            }
            family => return Err(HelloError::Address(family)),
        };
        Ok(Hello {
            cuts: u32at(28),
            client_addr,
            cluster: u64at(0),
            node: u64at(8),
            shard: u32at(16),
            shards: u32at(20),
            version: u32at(24),
            incarnation: u64at(32),
            expected: u64at(40),
        })
    }

    /// Checks a caller's hello against this node's own (`me`): `Ok` if they
    /// may talk. A client (node 0) need not run the same shard count.
    pub fn check(&self, me: &Hello) -> Result<(), HelloError> {
        if self.version != PROTOCOL_VERSION as u32 {
            return Err(HelloError::Version { got: self.version });
        }
        if self.cluster != me.cluster {
            return Err(HelloError::Cluster {
                got: self.cluster,
                want: me.cluster,
            });
        }
        if self.shard != me.shard {
            return Err(HelloError::Shard {
                got: self.shard,
                want: me.shard,
            });
        }
        if self.node != 0 && self.shards != me.shards {
            return Err(HelloError::Shards {
                got: self.shards,
                want: me.shards,
            });
        }
        if self.node != 0 && self.node == me.node {
            return Err(HelloError::SelfId(self.node));
        }
        if self.node != 0 && self.incarnation == 0 {
            return Err(HelloError::NoIncarnation(self.node));
        }
        if self.node != 0 && self.cuts != 0 && me.cuts != 0 && self.cuts != me.cuts {
            return Err(HelloError::Cuts {
                node: self.node,
                got: self.cuts,
                want: me.cuts,
            });
        }
        Ok(())
    }
}

/// Appends the answer to a handshake from `me` (the answerer): `Ok`
/// accepts, `Err(reason)` refuses.
pub fn encode_reply(out: &mut Vec<u8>, me: &Hello, outcome: Result<(), &str>) {
    let mut head = [0u8; REPLY_HEAD_BYTES];
    let reason = match outcome {
        Ok(()) => "",
        Err(r) => {
            head[0..4].copy_from_slice(&1u32.to_le_bytes());
            let mut end = r.len().min(REFUSAL_REASON_BYTES_MAX);
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            &r[..end]
        }
    };
    head[8..16].copy_from_slice(&me.node.to_le_bytes());
    head[16..24].copy_from_slice(&me.incarnation.to_le_bytes());
    encode_frame_parts(out, KIND_HELLO_REPLY, &[&head, reason.as_bytes()]);
}

/// Reads an answer: the answering node's id if accepted.
pub fn decode_reply(p: &[u8]) -> Result<u64, HelloError> {
    decode_reply_full(p).map(|r| r.answerer)
}

/// Reads an answer: the answering node's id and incarnation if accepted.
pub fn decode_reply_full(p: &[u8]) -> Result<HelloReply, HelloError> {
    if p.len() < REPLY_HEAD_BYTES || p.len() > REPLY_HEAD_BYTES + REFUSAL_REASON_BYTES_MAX {
        return Err(HelloError::ReplySize(p.len()));
    }
    let status = u32::from_le_bytes(p[0..4].try_into().expect("4 bytes"));
    let node = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
    let incarnation = u64::from_le_bytes(p[16..24].try_into().expect("8 bytes"));
    match status {
        0 if p.len() == REPLY_HEAD_BYTES => Ok(HelloReply {
            answerer: node,
            incarnation,
        }),
        1 => Err(HelloError::Refused {
            node,
            reason: String::from_utf8_lossy(&p[REPLY_HEAD_BYTES..]).into_owned(),
        }),
        _ => Err(HelloError::ReplySize(p.len())),
    }
}
