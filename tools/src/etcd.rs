//! `ringraft-load --target etcd`: etcd's v3 KV API (`Put`, and `Range` of
//! one key, linearizable as etcd serves it by default) over gRPC, so one
//! generator (same workload, schedule, latency from the intended send
//! time, report and `--check`) measures etcd and ringraft alike
//! (issue #22).
//!
//! The gRPC stack is tonic's (HTTP/2, flow control, deadlines), on a tokio
//! runtime of its own threads beside the generator's executors: a call is
//! spawned there and its handle awaited from the executor (one task and
//! one cross-thread wake per operation, counted in the generator's CPU).
//! A connection (`--connections`) is one HTTP/2 connection; its workers
//! (`--depth`) are concurrent streams on it.
//!
//! The four messages used are declared here with prost's derive rather
//! than generated from etcd's `.proto` files, so building needs no
//! `protoc` (the `etcd-client` crate's build does). Field numbers are
//! those of etcd's `api/etcdserverpb/rpc.proto` and `api/mvccpb/kv.proto`
//! (v3.4 through v3.6); fields not declared are skipped on decode, as
//! protobuf requires.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ringraft::client::Error;
use ringraft::wire::ClientError;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};

/// `etcdserverpb.PutRequest` (only `key` = 1 and `value` = 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `etcdserverpb.PutResponse` (its header and `prev_kv` are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}

/// `etcdserverpb.RangeRequest` (`key` = 1, `limit` = 3): with no
/// `range_end`, the one key; `serializable` (7) left false, so the read
/// is linearizable (etcd confirms its leadership first: ReadIndex).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(int64, tag = "3")]
    pub limit: i64,
}

/// `etcdserverpb.RangeResponse` (only `kvs` = 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
}

/// `mvccpb.KeyValue` (only `key` = 1 and `value` = 5).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub value: Bytes,
}

const PUT: &str = "/etcdserverpb.KV/Put";
const RANGE: &str = "/etcdserverpb.KV/Range";

/// The tokio runtime the etcd connections run on: `threads` worker
/// threads (at least one), separate from the generator's executors.
pub fn runtime(threads: u32) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1) as usize)
        .thread_name("etcd-client")
        .enable_all()
        .build()
        .map_err(|e| format!("--target etcd: cannot start the gRPC client's threads: {e}"))
}

/// The address of an etcd member given as `--cluster` names it: `HOST:PORT`
/// or `http://HOST:PORT` (client URLs, as `etcd --advertise-client-urls`
/// prints them). TLS (`https://`) is refused: say so rather than fail at
/// the handshake.
pub fn member_addr(given: &str) -> Result<SocketAddr, String> {
    if given.starts_with("https://") {
        return Err(format!(
            "--cluster {given}: TLS is not supported by --target etcd; give the member's plain http:// client URL"
        ));
    }
    let hostport = given.strip_prefix("http://").unwrap_or(given);
    let hostport = hostport.strip_suffix('/').unwrap_or(hostport);
    std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .ok()
        .and_then(|mut i| i.next())
        .ok_or_else(|| {
            format!("--cluster {given}: not an etcd client address (HOST:PORT or http://HOST:PORT)")
        })
}

/// One HTTP/2 connection to an etcd member; clones share it.
#[derive(Clone, Debug)]
pub struct EtcdConn {
    grpc: Grpc<Channel>,
    rt: tokio::runtime::Handle,
    op_timeout_ms: u64,
}

impl EtcdConn {
    /// Connects to the member at `addr` on `rt`'s threads. Each call then
    /// has `op_timeout_ms` to be answered, whole (waiting for the
    /// connection, the request, the answer): the deadline is also sent to
    /// etcd with the request (gRPC's `grpc-timeout`), so etcd gives up on
    /// it too. Errors: `Error::Unreachable` naming the address.
    pub async fn connect(
        addr: SocketAddr,
        op_timeout_ms: u64,
        rt: tokio::runtime::Handle,
    ) -> Result<EtcdConn, Error> {
        let timeout = Duration::from_millis(op_timeout_ms.max(1));
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Unreachable(format!("{addr}: {e}")))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        let channel = rt
            .spawn(async move { endpoint.connect().await })
            .await
            .map_err(|e| Error::Unreachable(format!("{addr}: {e}")))?
            .map_err(|e| Error::Unreachable(format!("{addr}: {e} (is etcd listening there?)")))?;
        Ok(EtcdConn {
            grpc: Grpc::new(channel),
            rt,
            op_timeout_ms,
        })
    }

    async fn call<Req, Resp>(&self, path: &'static str, req: Req) -> Result<Resp, Error>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        let limit = Duration::from_millis(self.op_timeout_ms.max(1));
        let answer = self
            .rt
            .spawn(async move {
                // Made on the runtime: tokio's timer needs its context.
                let call = async move {
                    grpc.ready()
                        .await
                        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
                    let path = http::uri::PathAndQuery::from_static(path);
                    let mut req = tonic::Request::new(req);
                    req.set_timeout(limit);
                    grpc.unary(req, path, codec).await
                };
                tokio::time::timeout(limit, call).await
            })
            .await;
        match answer {
            Ok(Ok(Ok(r))) => Ok(r.into_inner()),
            Ok(Ok(Err(status))) => Err(status_error(&status, self.op_timeout_ms)),
            // No answer in time, or the call's task ended (the runtime
            // shutting down): it may have been sent, so may have applied.
            Ok(Err(_)) | Err(_) => Err(Error::Timeout(self.op_timeout_ms)),
        }
    }

    /// etcd's `Put`: acknowledged once committed and applied.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let req = PutRequest {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        };
        self.call::<_, PutResponse>(PUT, req).await.map(|_| ())
    }

    /// etcd's `Range` of one key, linearizable.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        let req = RangeRequest {
            key: Bytes::copy_from_slice(key),
            limit: 1,
        };
        let r: RangeResponse = self.call(RANGE, req).await?;
        Ok(r.kvs.into_iter().next().map(|kv| kv.value))
    }
}

/// What a gRPC status means to the generator. A write whose outcome
/// etcd cannot have decided for certain (deadline passed, connection lost,
/// leader changed, "request timed out": `Unavailable`, `Unknown`,
/// `Internal`, `Cancelled` (tonic's own timeout), `Aborted`, `DataLoss`,
/// and a `ResourceExhausted` that is not etcd's) is an unknown outcome,
/// as `--check` must treat it. etcd's "too many requests" is
/// backpressure and its "database space exceeded" a refusal, both given
/// before anything is proposed; anything else a refusal.
fn status_error(s: &tonic::Status, op_timeout_ms: u64) -> Error {
    use tonic::Code;
    let reason = format!("etcd: {:?}: {}", s.code(), s.message());
    match s.code() {
        Code::DeadlineExceeded => Error::Timeout(op_timeout_ms),
        Code::ResourceExhausted if s.message().contains("too many requests") => {
            Error::Server(ClientError::Busy)
        }
        Code::ResourceExhausted if s.message().contains("database space exceeded") => {
            Error::Server(ClientError::Failed { reason })
        }
        // Also tonic's name for an HTTP/2 ENHANCE_YOUR_CALM: the
        // connection dropped with the request possibly applied.
        Code::ResourceExhausted
        | Code::Unavailable
        | Code::Unknown
        | Code::Internal
        | Code::Cancelled
        | Code::Aborted
        | Code::DataLoss => Error::Server(ClientError::Timeout),
        Code::InvalidArgument | Code::OutOfRange => {
            Error::Server(ClientError::BadRequest { reason })
        }
        _ => Error::Server(ClientError::Failed { reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn messages_have_etcds_field_numbers() {
        // protoc --encode=etcdserverpb.PutRequest: key "k" (field 1, bytes),
        // value "v" (field 2, bytes).
        let put = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        };
        assert_eq!(put.encode_to_vec(), [0x0a, 1, b'k', 0x12, 1, b'v']);
        let range = RangeRequest {
            key: Bytes::from_static(b"k"),
            limit: 1,
        };
        assert_eq!(range.encode_to_vec(), [0x0a, 1, b'k', 0x18, 1]);
        // A RangeResponse as etcd sends it: header (1), kvs (2) with
        // key (1), create_revision (2), mod_revision (3), version (4),
        // value (5), then count (4). Only what is declared is kept.
        let mut wire = vec![0x0a, 2, 0x18, 7]; // header { revision: 7 }
        let kv = [
            0x0a, 1, b'k', 0x10, 5, 0x18, 7, 0x20, 2, 0x2a, 3, b'a', b'b', b'c',
        ];
        wire.extend([0x12, kv.len() as u8]);
        wire.extend(kv);
        wire.extend([0x20, 1]); // count: 1
        let r = RangeResponse::decode(&wire[..]).unwrap();
        assert_eq!(r.kvs.len(), 1);
        assert_eq!(&r.kvs[0].key[..], b"k");
        assert_eq!(&r.kvs[0].value[..], b"abc");
        assert!(PutResponse::decode(&[0x0a, 2, 0x18, 7][..]).is_ok());
    }

    #[test]
    fn a_status_that_may_have_applied_a_write_is_an_unknown_outcome() {
        use tonic::{Code, Status};
        for (c, m) in [
            (Code::DeadlineExceeded, "x"),
            (Code::Unavailable, "etcdserver: request timed out"),
            (Code::Unknown, "x"),
            (Code::Internal, "x"),
            (Code::Cancelled, "Timeout expired"),
            (
                Code::ResourceExhausted,
                "h2 protocol error: ENHANCE_YOUR_CALM",
            ),
        ] {
            let e = status_error(&Status::new(c, m), 100);
            assert!(e.outcome_unknown(), "{c:?} {m}: {e}");
        }
        for (c, m) in [
            (Code::ResourceExhausted, "etcdserver: too many requests"),
            (
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (Code::InvalidArgument, "x"),
            (Code::PermissionDenied, "x"),
        ] {
            let e = status_error(&Status::new(c, m), 100);
            assert!(!e.outcome_unknown(), "{c:?} {m}: {e}");
        }
        let e = status_error(
            &Status::invalid_argument("etcdserver: request is too large"),
            1,
        );
        assert!(e.to_string().contains("request is too large"), "{e}");
    }

    #[test]
    fn member_addresses_are_host_port_or_plain_http_urls() {
        assert_eq!(
            member_addr("http://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            member_addr("127.0.0.1:2379/").unwrap(),
            "127.0.0.1:2379".parse::<SocketAddr>().unwrap()
        );
        let e = member_addr("https://127.0.0.1:2379").unwrap_err();
        assert!(e.contains("TLS"), "{e}");
        let e = member_addr("etcd-without-port").unwrap_err();
        assert!(e.contains("etcd-without-port"), "{e}");
    }
}
