//! Hostile clients against the real gateway: malformed, oversized and unauthenticated input over
//! HTTP and TCP is refused with a reason, and the gateway's memory stays bounded meanwhile.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamagg::codec::Format;

use crate::common::{http_get, TestTopic};
use crate::gateway_client::{
    connect_from, event, event_json, metric, read_one_reply, read_reply, request, tcp_send,
    wait_for_count, Event, Gateway,
};

#[test]
fn hostile_clients_are_refused_and_memory_stays_bounded() {
    const RSS_LIMIT: u64 = 200 * 1024 * 1024;
    let format = Format::Json;
    let topic = TestTopic::create("ingest-hostile", 2);
    let mut gateway = Gateway::start_with_token(
        &topic.name,
        "s3cret-token",
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
            // The least the start-up check allows with these limits is about 2.9 MB.
            "--max-buffered-body-bytes",
            "3145728",
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

    // A connection flood from one address beyond its share (a quarter of --max-connections 50):
    // the excess is refused, the gateway stays up.
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
fn a_wrong_token_closes_the_connection() {
    let topic = TestTopic::create("hostile-guessing", 1);
    let mut gateway = Gateway::start_with_token(&topic.name, "guess-me", &[]);
    let line = event_json(&event("g".into(), 1_700_000_000_000, 1.0));
    let guess = |n: u32| {
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess-{n}\r\n\
             Content-Length: {}\r\n\r\n{line}",
            line.len()
        )
    };
    let mut stream = TcpStream::connect(gateway.http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(guess(1).as_bytes()).expect("first guess");
    let first = read_one_reply(&mut stream).expect("an answer");
    assert_eq!(first.as_ref().map(|r| r.status), Some(401), "{first:?}");
    // The second guess on the same connection gets no answer: the connection was closed.
    let second = stream
        .write_all(guess(2).as_bytes())
        .and_then(|()| read_one_reply(&mut stream));
    assert!(
        !matches!(second, Ok(Some(_))),
        "a second guess on the same connection was answered: {second:?}"
    );
    gateway.stop();
}

/// Connections from 127.0.0.1 to each target, reopened as they close, until `stop`: 64 slow heads
/// to the metrics port, `n` slow heads to HTTP and `n` TCP connections that never authenticate.
fn hold_every_slot(
    targets: [(SocketAddr, usize, &'static [u8]); 3],
    stop: Arc<AtomicBool>,
) -> usize {
    let mut held: Vec<Vec<TcpStream>> = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut most = 0;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
        for ((addr, count, head), open) in targets.iter().zip(held.iter_mut()) {
            open.retain(|s| {
                let mut byte = [0u8; 1];
                s.set_nonblocking(true).is_ok()
                    && matches!(s.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            });
            while open.len() < *count {
                let Ok(mut s) = TcpStream::connect_timeout(addr, Duration::from_millis(500)) else {
                    break;
                };
                let _ = s.write_all(head);
                open.push(s);
            }
        }
        most = most.max(held.iter().map(Vec::len).sum());
        std::thread::sleep(Duration::from_millis(500));
    }
    most
}

#[test]
fn one_client_holding_connections_leaves_healthz_and_other_clients_working() {
    const SECONDS: u32 = 32;
    let topic = TestTopic::create("hostile-slots", 1);
    let mut gateway =
        Gateway::start_with_token(&topic.name, "slots-s3cret", &["--max-connections", "64"]);
    let stop = Arc::new(AtomicBool::new(false));
    let slow_head: &'static [u8] = b"GET /healthz HTTP/1.1\r\n";
    let targets = [
        (gateway.metrics, 64, slow_head),
        (gateway.http, 80, slow_head),
        (gateway.tcp, 80, &b""[..]),
    ];
    let hostile = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || hold_every_slot(targets, stop))
    };
    std::thread::sleep(Duration::from_secs(2));
    let other = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let auth = "Authorization: Bearer slots-s3cret\r\n";
    let line = event_json(&event("other".into(), 1_700_000_000_000, 1.0));
    let (mut healthy, mut posts) = (0, Vec::new());
    for second in 0..SECONDS {
        let tick = Instant::now();
        let probe =
            connect_from(other, gateway.metrics, Duration::from_secs(1)).and_then(|mut s| {
                s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
                read_reply(&mut s)
            });
        healthy += u32::from(probe.is_ok_and(|r| r.status == 200));
        if second % 8 == 4 {
            let post =
                connect_from(other, gateway.http, Duration::from_secs(5)).and_then(|mut s| {
                    let head = format!(
                        "POST /v1/events HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\
                     Content-Length: {}\r\n\r\n{line}",
                        line.len()
                    );
                    s.write_all(head.as_bytes())?;
                    read_reply(&mut s)
                });
            posts.push(post.map_or(0, |r| r.status));
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let tcp = connect_from(other, gateway.tcp, Duration::from_secs(5)).and_then(|mut s| {
        s.write_all(format!("AUTH slots-s3cret\n{line}\n").as_bytes())?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map(|_| answer)
    });
    stop.store(true, Ordering::Relaxed);
    let most = hostile.join().expect("hostile thread");
    eprintln!(
        "hostile held up to {most} connections; /healthz 200 on {healthy}/{SECONDS}; POSTs {posts:?}; \
         TCP {tcp:?}"
    );
    assert!(
        most >= 64,
        "the hostile client held only {most} connections"
    );
    assert!(
        healthy * 10 >= SECONDS * 9,
        "/healthz 200 on {healthy}/{SECONDS} tries"
    );
    assert!(
        posts.iter().all(|&s| s == 200),
        "POSTs from another client: {posts:?}"
    );
    assert_eq!(tcp.ok().as_deref(), Some(""), "TCP from another client");
    gateway.stop();
}
