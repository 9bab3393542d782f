//! Record encoding and checksum throughput (the CPU side of a WAL append).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringraft_wal::format::{decode_record, encode_record, record_bytes, Slot};

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_record_encode");
    for size in [16usize, 128, 4096, 65536] {
        let payload = vec![0xA5u8; size];
        let mut out = vec![0u8; record_bytes(size)];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            let mut lsn = 0u64;
            b.iter(|| {
                lsn += 1;
                encode_record(std::hint::black_box(&mut out), lsn, None, &payload)
            })
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_record_decode");
    for size in [16usize, 128, 4096, 65536] {
        let mut out = vec![0u8; record_bytes(size)];
        encode_record(&mut out, 1, None, &vec![0x5Au8; size]);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(
                || match decode_record(std::hint::black_box(&out), 1 << 20) {
                    Slot::Record(r) => r.lsn,
                    _ => unreachable!(),
                },
            )
        });
    }
    g.finish();
}

fn crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32fast");
    let data = vec![0x42u8; 1 << 20];
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("1MiB", |b| {
        b.iter(|| crc32fast::hash(std::hint::black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, encode, decode, crc);
criterion_main!(benches);
