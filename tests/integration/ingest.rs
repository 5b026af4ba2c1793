//! `streamagg ingest` against the real broker and the real binary: a load test whose every
//! acknowledged event must be on the topic exactly as sent (an independent decoder reads it back),
//! `kill -9` during load, the broker stopped during load (exclusive), and start-up errors. Hostile
//! clients are in `gateway_hostile.rs` and `gateway_limits.rs`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamagg::codec::Format;

use crate::common::{brokers, http_get, streamagg, TestTopic};
use crate::gateway_client::{
    event, event_json, metric, post, tcp_send, topic_events, wait_for_count, Event, Gateway,
};

/// The events of one request: distinct across clients and requests, a few sources per client.
fn batch(client: usize, request: usize, size: usize) -> Vec<Event> {
    (0..size)
        .map(|i| {
            let n = (request * size + i) as i64;
            event(
                format!("src-{client}-{}", i % 7),
                1_700_000_000_000 + n,
                client as f64 * 1_000_000.0 + n as f64 * 0.25,
            )
        })
        .collect()
}

/// A JSON array body for even requests, NDJSON for odd ones.
fn body(events: &[Event], request: usize) -> String {
    let lines: Vec<String> = events.iter().map(event_json).collect();
    if request.is_multiple_of(2) {
        format!("[{}]", lines.join(","))
    } else {
        lines.join("\n") + "\n"
    }
}

#[test]
fn every_event_acknowledged_with_200_is_on_the_topic_exactly_as_sent() {
    let format = Format::Avro;
    let topic = TestTopic::create("ingest-load", 4);
    let mut gateway = Gateway::start(&topic.name, &["--format", "avro"]);
    let (clients, requests, size) = (32, 50, 100);

    let http_clients: Vec<_> = (0..clients)
        .map(|client| {
            let addr = gateway.http;
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for request in 0..requests {
                    let events = batch(client, request, size);
                    let reply = post(addr, &body(&events, request)).expect("POST");
                    assert_eq!(reply.status, 200, "{reply:?}");
                    assert_eq!(
                        reply.json(),
                        serde_json::json!({"accepted": size, "rejected": 0})
                    );
                    acknowledged.extend(events);
                }
                acknowledged
            })
        })
        .collect();
    // TCP alongside: 4 connections of 2,000 lines each (client ids after the HTTP ones).
    let tcp_clients: Vec<_> = (0..4)
        .map(|i| {
            let addr = gateway.tcp;
            std::thread::spawn(move || {
                let events = batch(clients + i, 0, 2_000);
                let payload: String = events.iter().map(|e| event_json(e) + "\n").collect();
                let answer = tcp_send(addr, payload.as_bytes());
                assert_eq!(answer, "", "no line refused");
                events
            })
        })
        .collect();
    let mut sent: Vec<Event> = Vec::new();
    for client in http_clients {
        sent.extend(client.join().expect("HTTP client"));
    }
    let http_count = sent.len();
    for client in tcp_clients {
        sent.extend(client.join().expect("TCP client"));
    }
    assert_eq!(http_count, clients * requests * size);

    let on_topic = wait_for_count(&topic.name, format, sent.len(), Duration::from_secs(60));
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for (e, key, partition) in &on_topic {
        assert_eq!(key.as_deref(), Some(e.0.as_bytes()), "keyed by source");
        let first = *partition_of.entry(e.0.clone()).or_insert(*partition);
        assert_eq!(first, *partition, "all events of {} on one partition", e.0);
    }
    let mut got: Vec<Event> = on_topic.into_iter().map(|(e, _, _)| e).collect();
    got.sort();
    sent.sort();
    assert_eq!(got.len(), sent.len(), "every event once, nothing else");
    assert!(got == sent, "the topic holds exactly the events sent");

    // The counts reach /metrics (published once a second).
    std::thread::sleep(Duration::from_millis(1_500));
    let (status, metrics) = http_get(gateway.metrics, "/metrics").expect("/metrics");
    assert_eq!(status, 200);
    let accepted = |p: &str| {
        metric(
            &metrics,
            &format!("streamagg_ingest_events_accepted_total{{protocol=\"{p}\"}}"),
        )
    };
    assert_eq!(accepted("http"), Some(http_count as f64), "{metrics}");
    assert_eq!(accepted("tcp"), Some(8_000.0), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "streamagg_ingest_http_responses_total{code=\"200\"}"
        ),
        Some((clients * requests) as f64)
    );
    assert_eq!(
        http_get(gateway.metrics, "/readyz").expect("/readyz").0,
        200
    );
    gateway.stop();
}

#[test]
fn kill_9_during_load_loses_no_acknowledged_event() {
    let format = Format::Json;
    let topic = TestTopic::create("ingest-kill", 4);
    let mut gateway = Gateway::start(&topic.name, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (addr, stop, acknowledged) =
                (gateway.http, Arc::clone(&stop), Arc::clone(&acknowledged));
            std::thread::spawn(move || {
                for request in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let events = batch(client, request, 50);
                    match post(addr, &body(&events, request)) {
                        Ok(reply) if reply.status == 200 => {
                            acknowledged.lock().expect("lock").extend(events)
                        }
                        Ok(reply) => panic!("unexpected answer before the kill: {reply:?}"),
                        Err(_) => return, // the gateway is gone
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2_000));
    gateway.signal("KILL");
    gateway.wait(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client");
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("lock"));
    assert!(
        acknowledged.len() >= 1_000,
        "load ran: {} acknowledged",
        acknowledged.len()
    );

    let on_topic: std::collections::BTreeSet<Event> = topic_events(&topic.name, format)
        .into_iter()
        .map(|(e, _, _)| e)
        .collect();
    let lost: Vec<&Event> = acknowledged
        .iter()
        .filter(|e| !on_topic.contains(*e))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events are not on the topic, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        lost.first()
    );
}

/// Stops and starts the broker of `STREAMAGG_TEST_BROKERS` (its port is passed to scripts/kafka), so
/// it runs alone, after the other tests.
#[test]
#[ignore = "exclusive: restarts the test broker: scripts/test runs it alone, after the others"]
fn exclusive_broker_stopped_during_load_gives_503_then_recovers() {
    let format = Format::Json;
    let topic = TestTopic::create("ingest-broker", 4);
    let mut gateway = Gateway::start(&topic.name, &["--delivery-timeout", "5s"]);
    let port = brokers()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("STREAMAGG_TEST_BROKERS ends in a port");
    let kafka = |action: &str| {
        let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))
            .arg(action)
            .env("KAFKA_PORT", port.to_string())
            .status()
            .expect("scripts/kafka runs");
        assert!(status.success(), "scripts/kafka {action} failed");
    };
    let mut acknowledged = Vec::new();
    let mut request = 0;
    let http = gateway.http;
    let mut send = |acknowledged: &mut Vec<Event>| {
        request += 1;
        let events = batch(0, request, 20);
        let reply = post(http, &body(&events, request)).expect("the gateway answers");
        if reply.status == 200 {
            acknowledged.extend(events);
        }
        reply
    };
    assert_eq!(send(&mut acknowledged).status, 200, "before the stop");

    // Load from the side while the broker goes away.
    let load_stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (addr, stop) = (gateway.http, Arc::clone(&load_stop));
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut statuses = BTreeMap::<u16, u32>::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let events = batch(1, n, 20);
                let reply = post(addr, &body(&events, n)).expect("the gateway answers");
                *statuses.entry(reply.status).or_default() += 1;
                if reply.status == 200 {
                    acked.extend(events);
                } else {
                    assert_eq!(reply.status, 503, "{reply:?}");
                    assert!(reply.header("retry-after").is_some(), "{reply:?}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            (acked, statuses)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    kafka("down");
    let started = Instant::now();
    let refused = loop {
        let reply = send(&mut acknowledged);
        if reply.status == 503 {
            break reply;
        }
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no 503 within 60 s of the stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "first 503 {:?} after the broker stopped: {}",
        started.elapsed(),
        refused.body.trim()
    );
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("503 without a numeric Retry-After: {refused:?}"));
    assert!(retry_after >= 1);
    std::thread::sleep(Duration::from_secs(3));
    gateway.assert_alive();
    kafka("up");

    let started = Instant::now();
    loop {
        let reply = send(&mut acknowledged);
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not accepting again within 90 s of the broker's return: {reply:?}\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    load_stop.store(true, Ordering::Relaxed);
    let (load_acked, statuses) = load.join().expect("load");
    eprintln!("answers to the side load: {statuses:?}");
    assert!(
        statuses.contains_key(&503),
        "the load saw 503s too: {statuses:?}"
    );
    acknowledged.extend(load_acked);
    gateway.assert_alive();

    let on_topic: std::collections::BTreeSet<Event> = topic_events(&topic.name, format)
        .into_iter()
        .map(|(e, _, _)| e)
        .collect();
    let lost = acknowledged
        .iter()
        .filter(|e| !on_topic.contains(*e))
        .count();
    assert_eq!(lost, 0, "acknowledged events lost across the broker stop");
    gateway.stop();
}

#[test]
fn start_up_errors_are_one_line_and_a_non_zero_exit() {
    let one_line = |args: &[&str], expected: &str| {
        let started = Instant::now();
        let output = streamagg(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{args:?} took {:?}",
            started.elapsed()
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one line on stderr, got:\n{stderr}"
        );
        assert!(
            lines[0].starts_with("streamagg: error: ") && lines[0].contains(expected),
            "{args:?}: {stderr}"
        );
    };
    let any = [
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-http",
        "127.0.0.1:0",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["ingest"];
        args.extend(any);
        args.extend(extra);
        args
    };
    one_line(
        &with(&[
            "--brokers",
            "127.0.0.1:1",
            "--kafka-timeout",
            "2s",
            "--topic",
            "t",
        ]),
        "cannot reach Kafka at 127.0.0.1:1 within 2s",
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let b = brokers();
    one_line(
        &[
            "ingest",
            "--brokers",
            &b,
            "--topic",
            "t",
            "--listen-tcp",
            "127.0.0.1:0",
            "--listen-http",
            &port,
        ],
        &format!("cannot listen on {port} (--listen-http)"),
    );
    one_line(
        &[
            "ingest",
            "--brokers",
            &b,
            "--topic",
            "t",
            "--listen-tcp",
            &port,
            "--listen-http",
            "127.0.0.1:0",
        ],
        &format!("cannot listen on {port} (--listen-tcp)"),
    );
    let missing = format!("it-ingest-missing-{:016x}", rand::random::<u64>());
    one_line(
        &[
            "ingest",
            "--brokers",
            &b,
            "--topic",
            &missing,
            "--listen-tcp",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
        ],
        &format!("topic '{missing}' does not exist"),
    );
    one_line(
        &with(&["--topic", "t", "--max-line-bytes", "0"]),
        "invalid setting 'max_line_bytes'",
    );
    one_line(
        &with(&["--topic", "t", "--producer-property", "acks=0"]),
        "may not set 'acks'",
    );
}
