use super::*;

fn base() -> NodeSettings {
    NodeSettings {
        id: Some(1),
        data_dir: Some("/tmp/x".into()),
        ..NodeSettings::default()
    }
}

#[test]
fn defaults_validate_and_each_bad_setting_is_named() {
    let v = base().validate().unwrap();
    assert_eq!((v.shards, v.groups, v.peers.len()), (1, 8, 0));
    let bad = |s: NodeSettings| s.validate().unwrap_err().to_string();
    assert!(bad(NodeSettings::default()).contains("--id is required"));
    assert!(bad(NodeSettings {
        data_dir: None,
        ..base()
    })
    .contains("--data-dir"));
    assert!(bad(NodeSettings {
        shards: Some(0),
        ..base()
    })
    .contains("--shards"));
    // DEAD_NODE_TIMEOUT_MS_MIN: below it refused, at it taken.
    assert!(bad(NodeSettings {
        dead_node_timeout_ms: Some(DEAD_NODE_TIMEOUT_MS_MIN - 1),
        ..base()
    })
    .contains("DEAD_NODE_TIMEOUT_MS_MIN"));
    let v = NodeSettings {
        dead_node_timeout_ms: Some(DEAD_NODE_TIMEOUT_MS_MIN),
        balancer: Some(false),
        ..base()
    }
    .validate()
    .unwrap();
    let sc = &v.shard_template;
    assert_eq!(
        (sc.dead_node_timeout_ms, sc.balancer),
        (DEAD_NODE_TIMEOUT_MS_MIN, false)
    );
    assert!(
        base().validate().unwrap().shard_template.balancer,
        "on by default"
    );
    assert!(bad(NodeSettings {
        peers: Some("2=nowhere".into()),
        ..base()
    })
    .contains("--peers"));
    assert!(bad(NodeSettings {
        peers: Some("1=127.0.0.1:1".into()),
        ..base()
    })
    .contains("not this node's --id"));
    assert!(bad(NodeSettings {
        listen_clients: Some("127.0.0.1:7100".into()),
        ..base()
    })
    .contains("overlaps"));
    assert!(bad(NodeSettings {
        read_mode: Some("fast".into()),
        ..base()
    })
    .contains("--read-mode"));
    for rf in [0, crate::route::REPLICATION_FACTOR_MAX + 1] {
        let e = bad(NodeSettings {
            replication_factor: Some(rf),
            ..base()
        });
        assert!(
            e.contains("--replication-factor") && e.contains("REPLICATION_FACTOR_MAX"),
            "{e}"
        );
    }
    for rf in [1, crate::route::REPLICATION_FACTOR_MAX] {
        let ok = NodeSettings {
            replication_factor: Some(rf),
            ..base()
        };
        assert!(ok.validate().is_ok(), "{rf} is a valid factor");
    }
    assert!(bad(NodeSettings {
        value_bytes_max: Some(0),
        ..base()
    })
    .contains("--value-bytes-max"));
    assert!(bad(NodeSettings {
        campaigns_per_tick_max: Some(0),
        ..base()
    })
    .contains("--campaigns-per-tick-max"));
    assert!(bad(NodeSettings {
        campaigns_in_flight_max: Some(0),
        ..base()
    })
    .contains("--campaigns-in-flight-max"));
    // The RESP port: its own port range, apart from the others, and a
    // connection cap split over the shards.
    assert!(bad(NodeSettings {
        resp_conns_max: Some(0),
        ..base()
    })
    .contains("--resp-conns-max"));
    let lc = base().listen_addrs().unwrap().1;
    let err = bad(NodeSettings {
        listen_resp: Some(lc.to_string()),
        ..base()
    });
    assert!(
        err.contains("--listen-resp") && err.contains("overlaps"),
        "{err}"
    );
    assert_eq!(v.listen_resp, None, "off unless asked");
    assert_eq!(
        v.resp_conns_max,
        RESP_CONNS_MAX_DEFAULT.div_ceil(v.shards as usize)
    );
    // Splits by load: RANGE_SPLIT_LOAD_SECS_MAX and 0 refused, naming
    // the way to turn them off; the defaults as documented.
    for secs in [0, RANGE_SPLIT_LOAD_SECS_MAX + 1] {
        let err = bad(NodeSettings {
            range_split_load_secs: Some(secs),
            ..base()
        });
        assert!(err.contains("--range-split-load-secs"), "{err}");
        assert!(err.contains("range-split-qps to 0"), "{err}");
    }
    let most = NodeSettings {
        range_split_load_secs: Some(RANGE_SPLIT_LOAD_SECS_MAX),
        range_split_qps: Some(0),
        ..base()
    }
    .validate()
    .unwrap();
    assert_eq!(
        (
            most.shard_template.range_split_load_secs,
            most.shard_template.range_split_qps
        ),
        (RANGE_SPLIT_LOAD_SECS_MAX, 0)
    );
    assert_eq!(
        (
            v.shard_template.range_split_qps,
            v.shard_template.range_split_load_secs
        ),
        (
            crate::shard::RANGE_SPLIT_QPS_DEFAULT,
            crate::shard::RANGE_SPLIT_LOAD_SECS_DEFAULT
        )
    );
    // STRAY_LEARNER_TIMEOUT_MS_MIN: below it refused, naming it.
    let err = bad(NodeSettings {
        stray_learner_timeout_ms: Some(STRAY_LEARNER_TIMEOUT_MS_MIN - 1),
        ..base()
    });
    assert!(err.contains("--stray-learner-timeout-ms"), "{err}");
    assert!(err.contains("STRAY_LEARNER_TIMEOUT_MS_MIN"), "{err}");
    assert_eq!(
        v.shard_template.stray_learner_timeout_ms,
        crate::meta::planner::STRAY_LEARNER_TIMEOUT_MS_DEFAULT
    );
    // The snapshot budget: at least SNAPSHOT_SEND_BYTES_PER_SEC_MIN per
    // shard, split evenly over the shards.
    let err = bad(NodeSettings {
        snapshot_send_bytes_per_sec: Some(SNAPSHOT_SEND_BYTES_PER_SEC_MIN * 2 - 1),
        shards: Some(2),
        ..base()
    });
    assert!(err.contains("--snapshot-send-bytes-per-sec"), "{err}");
    assert!(err.contains("per shard"), "{err}");
    let two = NodeSettings {
        snapshot_send_bytes_per_sec: Some(SNAPSHOT_SEND_BYTES_PER_SEC_MIN * 2),
        shards: Some(2),
        ..base()
    }
    .validate()
    .unwrap();
    assert_eq!(
        two.shard_template.snapshot_send_bytes_per_sec,
        SNAPSHOT_SEND_BYTES_PER_SEC_MIN
    );
    assert_eq!(
        v.shard_template.snapshot_send_bytes_per_sec,
        SNAPSHOT_SEND_BYTES_PER_SEC_DEFAULT
    );
    assert_eq!(
        v.shard_template.campaigns_in_flight_max,
        CAMPAIGNS_IN_FLIGHT_MAX_DEFAULT
    );
    assert_eq!(
        v.shard_template.campaigns_per_tick_max,
        CAMPAIGNS_PER_TICK_MAX_DEFAULT
    );
    assert!(v.shard_template.raft.quiesce, "quiescence is on by default");
}

/// The whole documented range of value-bytes-max is accepted (before,
/// 64 MiB was documented but anything above about 31.5 MiB was refused
/// with an error naming --election-ticks); beyond it the error names
/// --value-bytes-max; a WAL segment size the user gave that cannot hold
/// the largest entry is refused naming both settings.
#[test]
fn value_bytes_max_is_accepted_over_its_documented_range() {
    for v in [1usize, 31 << 20, VALUE_BYTES_MAX_LIMIT] {
        let c = NodeSettings {
            value_bytes_max: Some(v),
            ..base()
        }
        .validate()
        .unwrap_or_else(|e| panic!("value-bytes-max {v}: {e}"));
        let w = &c.shard(0, &store()).wal;
        assert!(w.record_bytes_max >= 2 * v, "value-bytes-max {v}");
    }
    let e = NodeSettings {
        value_bytes_max: Some(VALUE_BYTES_MAX_LIMIT + 1),
        ..base()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("--value-bytes-max"), "{e}");
    let e = NodeSettings {
        value_bytes_max: Some(VALUE_BYTES_MAX_LIMIT),
        wal_segment_bytes: Some(64 << 20),
        ..base()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--wal-segment-bytes") && e.contains("--value-bytes-max"),
        "{e}"
    );
    // The default segment size stays 64 MiB for the default values.
    let d = base().validate().unwrap();
    assert_eq!(d.shard(0, &store()).wal.segment_bytes, 64 << 20);
}

/// The store of node 1 in `base()`'s cluster.
fn store() -> crate::identity::StoreIdentity {
    crate::identity::StoreIdentity {
        cluster: 1,
        node: 1,
        incarnation: 1,
        shards: 1,
        joined: false,
        cuts: 0,
        groups: 0,
        replication_factor: 3,
    }
}

#[test]
fn initial_cluster_state_is_new_existing_or_join_and_never_both() {
    let state = |ics: Option<&str>, join: Option<bool>| {
        NodeSettings {
            initial_cluster_state: ics.map(String::from),
            join: join.map(crate::config::Join::Flag),
            peers: Some("2=127.0.0.1:7110".into()),
            ..base()
        }
        .validate()
        .map(|v| v.bootstrap)
        .map_err(|e| e.to_string())
    };
    assert_eq!(state(None, None), Ok(Bootstrap::Unset));
    assert_eq!(state(Some("new"), None), Ok(Bootstrap::New));
    assert_eq!(state(Some("existing"), None), Ok(Bootstrap::Join));
    assert_eq!(state(None, Some(true)), Ok(Bootstrap::Join));
    assert_eq!(state(Some("existing"), Some(true)), Ok(Bootstrap::Join));
    let e = state(Some("new"), Some(true)).unwrap_err();
    assert!(
        e.contains("--initial-cluster-state") && e.contains("--join"),
        "{e}"
    );
    let e = state(Some("fresh"), None).unwrap_err();
    assert!(e.contains("expected new or existing"), "{e}");
    // A joined store's groups start with no voters, a new one's with
    // its peers: decided by the store, whatever the flags now.
    let voters = |ics: &str, joined: bool| {
        NodeSettings {
            initial_cluster_state: Some(ics.into()),
            peers: Some("2=127.0.0.1:7110".into()),
            ..base()
        }
        .validate()
        .unwrap()
        .shard(0, &crate::identity::StoreIdentity { joined, ..store() })
        .voters
    };
    assert_eq!(voters("new", false), vec![1, 2]);
    assert_eq!(voters("existing", false), vec![1, 2]);
    assert!(voters("existing", true).is_empty());
    assert!(voters("new", true).is_empty());
}

#[test]
fn pinned_shards_spread_a_groups_replicas_over_cpus() {
    let node = |id: u64| {
        NodeSettings {
            id: Some(id),
            ..base()
        }
        .validate()
        .unwrap()
    };
    // 3 nodes x 2 shards on 2 CPUs: shard 0 of nodes 1, 2, 3.
    let cpus: Vec<usize> = (1..=3).map(|id| node(id).cpu_of(0, 2)).collect();
    assert_eq!(cpus, vec![1, 0, 1]);
    // A node's own shards on distinct CPUs.
    let n = node(1);
    assert_ne!(n.cpu_of(0, 2), n.cpu_of(1, 2));
    assert_eq!(n.cpu_of(5, 1), 0);
}

#[test]
fn the_file_fills_what_the_command_line_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("node.toml");
    std::fs::write(
        &p,
        "id = 3\ndata-dir = \"/d\"\nshards = 2\ngroups = 16\npeers = \"1=127.0.0.1:7100\"\nreplication-factor = 5\n",
    )
    .unwrap();
    let file = NodeSettings::from_file(&p).unwrap();
    let cli = NodeSettings {
        groups: Some(4),
        ..NodeSettings::default()
    };
    let v = cli.or(file).validate().unwrap();
    assert_eq!((v.id, v.shards, v.groups), (3, 2, 4));
    let store = crate::identity::StoreIdentity {
        cluster: 1,
        node: 3,
        incarnation: 9,
        shards: 2,
        joined: false,
        cuts: 77,
        groups: 0,
        replication_factor: 0,
    };
    assert_eq!(v.replication_factor, 5, "from the file");
    let sc = v.shard(1, &store);
    assert_eq!(
        (sc.replication_factor, sc.replication_factor_known),
        (5, false),
        "not stored: the flag's, not the cluster's"
    );
    let stored = crate::identity::StoreIdentity {
        replication_factor: 3,
        ..store
    };
    let sc = v.shard(1, &stored);
    assert_eq!(
        (sc.replication_factor, sc.replication_factor_known),
        (3, true)
    );
    assert_eq!(sc.cuts, 77, "the stored cuts, not the flags'");
    assert_eq!(
        sc.groups, 4,
        "a store that does not know its groups: the flag's"
    );
    let sc = v.shard(1, &crate::identity::StoreIdentity { groups: 6, ..store });
    assert_eq!(sc.groups, 6, "the stored groups, not the flag's");
    assert_eq!(sc.split_keys.len(), 5);
    assert_eq!(sc.incarnation, 9);
    assert_eq!(sc.peers, vec![(1, "127.0.0.1:7101".parse().unwrap())]);
    assert!(sc.wal.zero_segments, "zeroed segments by default");
    assert_eq!(
        sc.wal.tail_rewrite_bytes_max,
        ringraft_wal::TAIL_REWRITE_BYTES_MAX
    );
    std::fs::write(
        &p,
        "id = 3\ndata-dir = \"/d\"\nwal-zero-segments = false\nwal-tail-rewrite-bytes-max = 0\n",
    )
    .unwrap();
    let v = NodeSettings::from_file(&p).unwrap().validate().unwrap();
    assert!(!v.shard(0, &store).wal.zero_segments);
    assert_eq!(v.shard(0, &store).wal.tail_rewrite_bytes_max, 0);
    std::fs::write(&p, "id = 3\nbogus = 1\n").unwrap();
    let e = NodeSettings::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn initial_split_keys_are_parsed_checked_and_written_back() {
    use bytes::Bytes;
    let keys = |s: &str| parse_split_keys(s).unwrap();
    assert_eq!(
        keys("b,m,t"),
        vec![Bytes::from("b"), Bytes::from("m"), Bytes::from("t")]
    );
    assert_eq!(
        keys("a\\,b,\\x00\\xff,c\\\\"),
        vec![
            Bytes::from("a,b"),
            Bytes::from(vec![0u8, 0xff]),
            Bytes::from("c\\")
        ]
    );
    assert!(parse_split_keys("a\\q")
        .unwrap_err()
        .contains("unknown escape in key 1"));
    assert!(parse_split_keys("a,\\x4")
        .unwrap_err()
        .contains("two hex digits (key 2)"));
    assert!(parse_split_keys("a,\\x+f")
        .unwrap_err()
        .contains("two hex digits (key 2)"));
    assert!(parse_split_keys("a\\")
        .unwrap_err()
        .contains("unfinished escape"));
    let odd = vec![Bytes::from(vec![0u8, b',', b'\\', 0x7f, b'k'])];
    assert_eq!(keys(&format_split_keys(&odd)), odd);
    let with = |groups: u64, text: &str| NodeSettings {
        groups: Some(groups),
        initial_split_keys: Some(text.into()),
        ..base()
    };
    let v = with(4, "b,m,t").validate().unwrap();
    assert_eq!(&v.shard_template.split_keys[..], &keys("b,m,t")[..]);
    let bad = |s: NodeSettings| s.validate().unwrap_err().to_string();
    assert!(bad(with(4, "b,m")).contains("2 key(s) given; 4 group(s) need 3"));
    assert!(bad(with(4, "b,m,m")).contains("key 3 (\"m\") does not sort after key 2"));
    assert!(bad(with(3, "b,")).contains("key 2 is empty"));
    let long = "k".repeat(crate::meta::RANGE_BOUNDARY_BYTES_MAX);
    assert!(with(2, &long).validate().is_ok(), "a key at the limit");
    assert!(bad(with(2, &format!("{long}k"))).contains("RANGE_BOUNDARY_BYTES_MAX"));
    // The default: even cuts.
    let v = base().validate().unwrap();
    assert_eq!(
        &v.shard_template.split_keys[..],
        &crate::route::even_split_keys(8)[..]
    );
}

/// `--resp-password-file`: the password is the file less one trailing
/// newline; a file that cannot be read, is empty, spans lines or passes
/// `RESP_PASSWORD_BYTES_MAX` is refused, naming the file and the fix.
#[test]
fn the_resp_password_comes_from_a_file_and_bad_files_are_named() {
    let dir = std::env::temp_dir().join(format!("ringraft-cfg-pass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let with = |content: Option<&[u8]>| {
        let f = dir.join("pass");
        let _ = std::fs::remove_file(&f);
        if let Some(c) = content {
            std::fs::write(&f, c).unwrap();
        }
        NodeSettings {
            resp_password_file: Some(f.to_str().unwrap().to_string()),
            ..base()
        }
        .validate()
    };
    assert_eq!(
        base().validate().unwrap().resp_password,
        None,
        "none unless asked"
    );
    for (file, pass) in [
        (&b"pw\n"[..], &b"pw"[..]),
        (b"pw\r\n", b"pw"),
        (b"with space", b"with space"),
        (b"pw\n\n", b"pw\n"),
    ] {
        match with(Some(file)) {
            Ok(v) if pass.contains(&b'\n') => panic!("{file:?} taken as {:?}", v.resp_password),
            Ok(v) => assert_eq!(v.resp_password.as_deref(), Some(pass)),
            Err(e) => assert!(pass.contains(&b'\n'), "{file:?}: {e}"),
        }
    }
    let max = crate::resp::RESP_PASSWORD_BYTES_MAX;
    assert!(with(Some(&vec![b'p'; max])).is_ok());
    for (content, says) in [
        (None, "cannot read it"),
        (Some(&b"\n"[..]), "holds no password"),
        (Some(b"a\nb"), "spans lines"),
        (
            Some(&vec![b'p'; max + 1][..]),
            "RESP_PASSWORD_BYTES_MAX (512)",
        ),
    ] {
        let e = with(content).unwrap_err().to_string();
        assert!(
            e.contains("--resp-password-file") && e.contains("pass") && e.contains(says),
            "{e}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
