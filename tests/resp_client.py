#!/usr/bin/env python3
"""The RESP port through a maintained Redis client library (redis-py):
pipelining, SET NX, INCR from many connections at once (the count must be
exact), and SCAN over keys of every range. Run by tests/resp.rs:

    python3 tests/resp_client.py HOST PORT OTHER_PORT
"""
import sys
import threading

import redis

host, port, other = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = redis.Redis(host=host, port=port)
r2 = redis.Redis(host=host, port=other)

# Pipelining (no MULTI): 200 writes sent at once, answered in order.
p = r.pipeline(transaction=False)
for i in range(200):
    p.set(f"py:pipe:{i}", i)
assert all(p.execute()), "every pipelined SET answered OK"
assert r2.mget([f"py:pipe:{i}" for i in range(200)]) == [str(i).encode() for i in range(200)]

# SET NX: one winner among many connections.
wins = []
def claim(n):
    c = redis.Redis(host=host, port=port if n % 2 else other)
    if c.set("py:lock", f"owner-{n}", nx=True):
        wins.append(n)
ts = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
assert len(wins) == 1, wins
assert r.get("py:lock") == f"owner-{wins[0]}".encode()

# INCR from many connections at once, on two nodes: atomic.
THREADS, EACH = 8, 100
def bump(n):
    c = redis.Redis(host=host, port=port if n % 2 else other)
    for _ in range(EACH):
        c.incr("py:counter")
ts = [threading.Thread(target=bump, args=(n,)) for n in range(THREADS)]
[t.start() for t in ts]
[t.join() for t in ts]
assert int(r.get("py:counter")) == THREADS * EACH, r.get("py:counter")

# SCAN over keys of every range (the first byte spans the keyspace).
keys = {bytes([b]) + b"py:scan" for b in range(0, 256, 8)}
for k in keys:
    r.set(k, b"1")
found = list(r.scan_iter(match=b"*py:scan", count=5))
assert len(found) == len(keys) and set(found) == keys, (len(found), len(keys))

print(f"redis-py {redis.__version__}: pipeline, SET NX, {THREADS * EACH} INCRs, SCAN of {len(keys)} keys: ok")
