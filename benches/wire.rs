//! Encode + validate + access of an AppendEntries with 64 entries of 16 B
//! and of 1 KiB (frame included).
//!
//! cargo bench --bench wire

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringraft::raft::{Body, Entry, EntryKind, Message};
use ringraft::wire::{decode_frame, decode_raft, encode_raft};

fn append(entry_bytes: usize) -> Message {
    let data = Bytes::from(vec![0x5Au8; entry_bytes]);
    Message {
        from: 1,
        to: 2,
        term: 7,
        body: Body::Append {
            prev_index: 1000,
            prev_term: 7,
            entries: (0..64)
                .map(|i| Entry {
                    term: 7,
                    index: 1001 + i,
                    kind: EntryKind::Normal,
                    data: data.clone(),
                })
                .collect(),
            commit: 999,
        },
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire_append_64_entries");
    for size in [16usize, 1024] {
        let m = append(size);
        g.throughput(Throughput::Bytes(64 * size as u64));
        g.bench_with_input(BenchmarkId::new("encode", size), &m, |b, m| {
            let mut out = Vec::with_capacity(128 << 10);
            b.iter(|| {
                out.clear();
                encode_raft(&mut out, 3, std::hint::black_box(m));
                out.len()
            })
        });
        let mut out = Vec::new();
        encode_raft(&mut out, 3, &m);
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&out);
        let buf = Bytes::from_owner(aligned);
        g.bench_with_input(
            BenchmarkId::new("validate_and_access", size),
            &buf,
            |b, buf| {
                b.iter(|| {
                    let (f, _) = decode_frame(std::hint::black_box(buf), 16 << 20)
                        .unwrap()
                        .unwrap();
                    let payload = buf.slice(16..16 + f.payload.len());
                    decode_raft(&payload).unwrap().0
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
