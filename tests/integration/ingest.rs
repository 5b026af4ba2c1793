//! `streamagg ingest` against the real broker and the real binary: a load test whose every
//! acknowledged event must be on the topic exactly as sent (an independent decoder reads it back),
//! `kill -9` during load, the broker stopped during load (exclusive), hostile clients with the
//! gateway's memory watched, and start-up errors.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamagg::codec::Format;

use crate::common::{brokers, http_get, read_all, streamagg, StreamaggProcess, TestTopic};
use crate::oracle::parse_independently;

/// An event as the test knows it: source, timestamp, and the value's bits (compared exactly).
pub(crate) type Event = (String, i64, u64);

pub(crate) fn event(source: String, timestamp: i64, value: f64) -> Event {
    (source, timestamp, value.to_bits())
}

pub(crate) fn event_json(e: &Event) -> String {
    serde_json::json!({"source": e.0, "timestamp": e.1, "value": f64::from_bits(e.2)}).to_string()
}

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

/// A running `streamagg ingest` and where it listens; killed if still running when dropped.
pub(crate) struct Gateway {
    pub(crate) process: StreamaggProcess,
    pub(crate) tcp: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) metrics: SocketAddr,
}

impl Gateway {
    /// Starts the gateway on ports of its own and waits until it is ready.
    pub(crate) fn start(topic: &str, extra: &[&str]) -> Gateway {
        wait_until_visible(topic);
        let brokers = brokers();
        let mut args = vec![
            "--brokers",
            &brokers,
            "--topic",
            topic,
            "--listen-tcp",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut process = StreamaggProcess::spawn("ingest", &args);
        let started = Instant::now();
        loop {
            let log = process.log();
            let find = |marker: &str| -> Option<SocketAddr> {
                log.lines().find_map(|l| {
                    l.split(marker)
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
            };
            if let (Some(tcp), Some(http), Some(metrics)) =
                (find("tcp="), find("http="), find("addr="))
            {
                return Gateway {
                    process,
                    tcp,
                    http,
                    metrics,
                };
            }
            if let Some(status) = process.exited() {
                panic!("gateway exited ({status}) before it was ready; log:\n{log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "gateway not ready within 60 s; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        self.process.log()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
        self.process.wait(deadline)
    }

    pub(crate) fn assert_alive(&mut self) {
        self.process.assert_alive();
    }

    /// SIGTERM, then a clean exit (status 0) within 30 s.
    pub(crate) fn stop(&mut self) {
        self.process.stop_gracefully();
    }

    /// Resident memory in bytes, from /proc.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the gateway's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }
}

/// Waits until the broker's metadata lists `topic` (just created, it may not yet: the gateway would
/// then refuse to start, rightly, with "topic does not exist").
fn wait_until_visible(topic: &str) {
    let settings = crate::common::kafka_settings();
    let admin = streamagg::kafka::admin::admin_client(&settings).expect("admin client");
    let started = Instant::now();
    while streamagg::kafka::admin::partition_count(admin.inner(), &settings, topic)
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{topic} not in the metadata within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    read_reply(&mut stream)
}

pub(crate) fn read_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.200}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status: {head}")))?;
    Ok(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

pub(crate) fn post(addr: SocketAddr, body: &str) -> std::io::Result<Reply> {
    request(addr, "POST", "/v1/events", &[], body.as_bytes())
}

/// Every record on `topic`, decoded independently, with its key and partition.
pub(crate) fn topic_events(topic: &str, format: Format) -> Vec<(Event, Option<Vec<u8>>, i32)> {
    read_all(topic)
        .into_iter()
        .map(|r| {
            let (source, timestamp, value) =
                parse_independently(format, r.payload.as_deref().unwrap_or_default())
                    .unwrap_or_else(|| panic!("undecodable record at offset {}", r.offset));
            (event(source, timestamp, value), r.key, r.partition)
        })
        .collect()
}

/// Reads `topic` until it holds at least `count` records, at most `deadline`.
pub(crate) fn wait_for_count(
    topic: &str,
    format: Format,
    count: usize,
    deadline: Duration,
) -> Vec<(Event, Option<Vec<u8>>, i32)> {
    let started = Instant::now();
    loop {
        let events = topic_events(topic, format);
        if events.len() >= count || started.elapsed() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends `events` as NDJSON on one TCP connection, closes its write side, and returns what the
/// gateway answered before closing.
pub(crate) fn tcp_send(addr: SocketAddr, payload: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("tcp connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    stream.write_all(payload).expect("tcp write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// The value of a Prometheus sample line `name{labels} value`.
pub(crate) fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
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
fn hostile_clients_are_refused_and_memory_stays_bounded() {
    const RSS_LIMIT: u64 = 200 * 1024 * 1024;
    let format = Format::Json;
    let topic = TestTopic::create("ingest-hostile", 2);
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token written");
    let mut gateway = Gateway::start(
        &topic.name,
        &[
            "--max-connections",
            "50",
            "--read-timeout",
            "2s",
            "--max-line-bytes",
            "1024",
            "--max-body-bytes",
            "65536",
            "--max-in-flight-bytes",
            "1048576",
            "--max-buffered-body-bytes",
            "1048576",
            "--http-token-file",
            token_file.to_str().expect("utf8"),
        ],
    );
    // Sample the gateway's RSS through the whole hostile phase.
    let sampling = Arc::new(AtomicBool::new(true));
    let pid = gateway.pid();
    let sampler = {
        let sampling = Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let kib: u64 = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0);
                    peak = peak.max(kib * 1024);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let auth = [("Authorization", "Bearer s3cret-token")];
    let good = |n: i64| event(format!("good-{n}"), 1_700_000_000_000 + n, n as f64);
    let mut expected: Vec<Event> = Vec::new();

    // Authentication.
    let line = event_json(&good(0));
    let no_token = request(gateway.http, "POST", "/v1/events", &[], line.as_bytes()).expect("POST");
    assert_eq!(no_token.status, 401, "{no_token:?}");
    let wrong = request(
        gateway.http,
        "POST",
        "/v1/events",
        &[("Authorization", "Bearer s3cret-tokeN")],
        line.as_bytes(),
    )
    .expect("POST");
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let ok = request(gateway.http, "POST", "/v1/events", &auth, line.as_bytes()).expect("POST");
    assert_eq!(ok.status, 200, "{ok:?}");
    expected.push(good(0));

    // Invalid lines in one NDJSON body: reasons per line, the valid ones delivered.
    let mut ndjson = Vec::new();
    ndjson.extend(format!("{}\n", event_json(&good(1))).as_bytes());
    ndjson.extend(b"{not json\n");
    ndjson.extend(b"{\"source\":\"\xff\xfe\",\"timestamp\":1,\"value\":1}\n");
    ndjson.extend(b"{\"source\":\"s\",\"timestamp\":1}\n");
    ndjson.extend(b"{\"source\":\"\",\"timestamp\":1,\"value\":1}\n");
    ndjson.extend(b"{\"source\":\"s\",\"timestamp\":9223372036854775807,\"value\":1}\n");
    ndjson.extend(format!("{}\n", "x".repeat(2_000)).as_bytes());
    ndjson.extend(format!("{}\n", event_json(&good(2))).as_bytes());
    let mixed = request(gateway.http, "POST", "/v1/events", &auth, &ndjson).expect("POST");
    assert_eq!(mixed.status, 400, "{mixed:?}");
    let reply = mixed.json();
    assert_eq!(reply["accepted"], 2, "{reply}");
    assert_eq!(reply["rejected"], 6, "{reply}");
    let reasons: Vec<(u64, String)> = reply["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["item"].as_u64().expect("item"),
                e["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect();
    let expected_reasons = [
        (2, "invalid JSON"),
        (3, "invalid UTF-8"),
        (4, "missing field `value`"),
        (5, "empty source"),
        (6, "timestamp out of range"),
        (7, "line longer than 1024 bytes"),
    ];
    assert_eq!(reasons.len(), expected_reasons.len(), "{reasons:?}");
    for ((item, reason), (want_item, want)) in reasons.iter().zip(expected_reasons) {
        assert_eq!(*item, want_item, "{reasons:?}");
        assert!(
            reason.contains(want),
            "item {item}: {reason} should say {want}"
        );
    }
    expected.extend([good(1), good(2)]);

    // Oversized bodies: declared (answered before the body is sent), and chunked (cut at the limit).
    let mut stream = TcpStream::connect(gateway.http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n"
    )
    .expect("head");
    let declared = read_reply(&mut stream).expect("413 reply");
    assert_eq!(declared.status, 413, "{declared:?}");
    let mut stream = TcpStream::connect(gateway.http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .expect("head");
    let chunk = format!("{}\n", event_json(&good(99))).repeat(200); // ~10 KB
    for _ in 0..8 {
        if write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len()).is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let chunked = read_reply(&mut stream).expect("413 reply");
    assert_eq!(chunked.status, 413, "{chunked:?}");

    // TCP (the token first): an oversized line, invalid UTF-8 and invalid JSON are answered per
    // line; valid ones go on.
    let mut payload = b"AUTH s3cret-token\n".to_vec();
    payload.extend(format!("{}\n", "y".repeat(5_000)).as_bytes());
    payload.extend(format!("{}\n", event_json(&good(3))).as_bytes());
    payload.extend(b"\xc3\x28\n");
    payload.extend(b"[1,2]\n");
    payload.extend(event_json(&good(4)).as_bytes()); // last line without newline
    let answer = tcp_send(gateway.tcp, &payload);
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines.len(), 3, "{answer}");
    assert_eq!(lines[0], "rejected line 2: line longer than 1024 bytes");
    assert_eq!(lines[1], "rejected line 4: invalid UTF-8");
    assert!(
        lines[2].starts_with("rejected line 5: invalid JSON"),
        "{answer}"
    );
    expected.extend([good(3), good(4)]);

    // A 20 MB line without a newline: discarded as it arrives, then the read timeout closes it.
    let flood_line = {
        let addr = gateway.tcp;
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream
                .set_write_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let block = vec![b'z'; 64 * 1024];
            let mut written = 0;
            while written < 20 << 20 {
                match stream.write_all(&block) {
                    Ok(()) => written += block.len(),
                    Err(_) => break,
                }
            }
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        })
    };
    let answer = flood_line.join().expect("flood line");
    assert!(
        answer.is_empty() || answer.contains("no complete line"),
        "{answer}"
    );

    // Half-open and slow connections are closed by the read timeout (2 s).
    let closes_within = |mut stream: TcpStream, trickle: bool| -> (Duration, String) {
        let started = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut answer = Vec::new();
        let mut buf = [0_u8; 512];
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "not closed within 10 s"
            );
            if trickle {
                let _ = stream.write_all(b"{");
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    };
    let (took, answer) = closes_within(TcpStream::connect(gateway.tcp).expect("connect"), false);
    assert!(
        took >= Duration::from_millis(1_500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(answer, "error: no complete line within 2s, closing\n");
    let (took, answer) = closes_within(TcpStream::connect(gateway.tcp).expect("connect"), true);
    assert!(took < Duration::from_secs(5), "slow TCP line: {took:?}");
    assert!(answer.contains("no complete line"), "{answer}");
    let (took, _) = closes_within(TcpStream::connect(gateway.http).expect("connect"), false);
    assert!(took < Duration::from_secs(5), "half-open HTTP: {took:?}");
    let mut slow_body = TcpStream::connect(gateway.http).expect("connect");
    write!(
        slow_body,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\nContent-Length: 1000\r\n\r\n{{"
    )
    .expect("head");
    let (took, answer) = closes_within(slow_body, false);
    assert!(took < Duration::from_secs(5), "slow HTTP body: {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A connection flood beyond --max-connections 50: the excess is refused, the gateway stays up.
    for (addr, refusal) in [
        (gateway.tcp, "error: too many connections"),
        (gateway.http, "HTTP/1.1 503"),
    ] {
        let held: Vec<TcpStream> = (0..50)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..30 {
            let mut extra = TcpStream::connect(addr).expect("the listener still accepts");
            extra
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut answer = String::new();
            let _ = extra.read_to_string(&mut answer);
            assert!(answer.starts_with(refusal), "{addr}: {answer:?}");
        }
        drop(held);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = request(
        gateway.http,
        "POST",
        "/v1/events",
        &auth,
        event_json(&good(5)).as_bytes(),
    )
    .expect("POST after the flood");
    assert_eq!(after.status, 200, "{after:?}");
    expected.push(good(5));
    assert_eq!(
        tcp_send(
            gateway.tcp,
            format!("AUTH s3cret-token\n{}\n", event_json(&good(6))).as_bytes()
        ),
        ""
    );
    expected.push(good(6));

    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    eprintln!("hostile phase: peak RSS {} MiB", peak >> 20);
    gateway.assert_alive();
    assert!(
        peak > 0 && peak < RSS_LIMIT,
        "peak RSS {} MiB (limit {} MiB)",
        peak >> 20,
        RSS_LIMIT >> 20
    );
    assert!(gateway.rss_bytes() < RSS_LIMIT);

    std::thread::sleep(Duration::from_millis(1_500)); // counts are published once a second
    let (_, metrics) = http_get(gateway.metrics, "/metrics").expect("/metrics");
    gateway.stop();
    let mut got: Vec<Event> =
        wait_for_count(&topic.name, format, expected.len(), Duration::from_secs(30))
            .into_iter()
            .map(|(e, _, _)| e)
            .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "exactly the valid events are on the topic");
    for series in [
        "streamagg_ingest_events_rejected_total{protocol=\"http\",reason=\"invalid_utf8\"}",
        "streamagg_ingest_events_rejected_total{protocol=\"tcp\",reason=\"line_too_long\"}",
        "streamagg_ingest_connections_refused_total{protocol=\"tcp\"}",
        "streamagg_ingest_http_responses_total{code=\"401\"}",
        "streamagg_ingest_http_responses_total{code=\"413\"}",
    ] {
        assert!(
            metric(&metrics, series).is_some_and(|v| v >= 1.0),
            "{series} in\n{metrics}"
        );
    }
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
