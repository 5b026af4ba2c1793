//! The gateway against hostile clients, each limit held by the real binary and the real broker on
//! 127.0.0.1 (issue 23): one request's memory and answer (peak RSS from `/proc`), the TCP token,
//! slow bodies that must not starve other requests, idle connections to the metrics port under a
//! low descriptor limit, `--max-line-bytes` for JSON arrays, permanent produce errors answered 4xx,
//! truncated echoes and `nosniff`. Every wait is bounded in count and time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use streamagg::codec::Format;

use crate::common::{binary, brokers, http_get, TestTopic};
use crate::gateway_client::{
    connect_from, event, event_json, padded_ndjson, post, read_reply, request, tcp_send,
    topic_events, wait_for_count, Event, Gateway,
};

/// Peak resident memory (`VmHWM`) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    kib * 1024
}

fn good(n: i64) -> Event {
    event(format!("good-{n}"), 1_700_000_000_000 + n, n as f64)
}

/// A body of `lines` lines `1\n`: each a valid JSON value and an invalid event.
fn ones(lines: usize) -> Vec<u8> {
    b"1\n".repeat(lines)
}

#[test]
fn a_body_of_millions_of_refused_lines_keeps_memory_and_the_answer_small() {
    // The gateway idles at a few tens of MiB; one 8 MiB body plus its bounded parse fits in this.
    const RSS_BOUND: u64 = 160 << 20;
    const ANSWER_BOUND: usize = 64 << 10;
    let topic = TestTopic::create("limits-memory", 1);
    let mut gateway = Gateway::start(&topic.name, &[]);
    // Below the item limit: every line is counted, only the first errors are spelled out.
    let some = request(gateway.http, "POST", "/v1/events", &[], &ones(9_000)).expect("POST");
    assert_eq!(some.status, 400, "{:.300}", some.body);
    assert!(
        some.body.len() < ANSWER_BOUND,
        "answer of {} bytes",
        some.body.len()
    );
    let reply = some.json();
    assert_eq!(reply["rejected"], 9_000, "{reply:.300}");
    let listed = reply["errors"].as_array().map_or(0, Vec::len);
    assert!((1..=100).contains(&listed), "{listed} errors listed");
    for mib in [1, 8] {
        let body = ones((mib << 20) / 2);
        let started = Instant::now();
        let reply = request(gateway.http, "POST", "/v1/events", &[], &body).expect("POST");
        let took = started.elapsed();
        let peak = peak_rss(gateway.pid());
        eprintln!(
            "{mib} MiB of `1\\n`: {} in {took:?}, answer {} bytes, gateway peak RSS {} MiB",
            reply.status,
            reply.body.len(),
            peak >> 20
        );
        gateway.assert_alive();
        assert!((400..500).contains(&reply.status), "{:.300}", reply.body);
        assert!(
            reply.body.len() < ANSWER_BOUND,
            "{mib} MiB: answer of {} bytes",
            reply.body.len()
        );
        assert!(peak < RSS_BOUND, "{mib} MiB: peak RSS {} MiB", peak >> 20);
        assert!(took < Duration::from_secs(10), "{mib} MiB: {took:?}");
    }
    let ok = post(gateway.http, &event_json(&good(1))).expect("POST");
    assert_eq!(ok.status, 200, "{ok:?}");
    gateway.stop();
}

#[test]
fn with_a_token_an_unauthenticated_tcp_event_does_not_reach_the_topic() {
    let topic = TestTopic::create("limits-tcp-auth", 1);
    let mut gateway = Gateway::start_with_token(&topic.name, "tcp-s3cret", &[]);
    let anonymous = tcp_send(
        gateway.tcp,
        format!("{}\n", event_json(&good(1))).as_bytes(),
    );
    assert!(
        anonymous.starts_with("error: authentication required"),
        "{anonymous:?}"
    );
    let wrong = tcp_send(
        gateway.tcp,
        format!("AUTH tcp-s3creT\n{}\n", event_json(&good(2))).as_bytes(),
    );
    assert!(
        wrong.starts_with("error: authentication required"),
        "{wrong:?}"
    );
    let right = tcp_send(
        gateway.tcp,
        format!("AUTH tcp-s3cret\n{}\n", event_json(&good(3))).as_bytes(),
    );
    assert_eq!(right, "");
    gateway.stop();
    // The authenticated event is on the topic, and it alone: the producer flushed before exiting.
    let got: Vec<Event> = wait_for_count(&topic.name, Format::Json, 1, Duration::from_secs(20))
        .into_iter()
        .map(|(e, _, _)| e)
        .collect();
    assert_eq!(got, vec![good(3)]);
}

#[test]
fn slow_bodies_declaring_8_mib_do_not_make_other_requests_fail() {
    let topic = TestTopic::create("limits-slow-bodies", 1);
    let mut gateway = Gateway::start(&topic.name, &["--read-timeout", "30s"]);
    let slow: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut stream = TcpStream::connect(gateway.http).expect("connect");
            write!(
                stream,
                "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n\r\n["
            )
            .expect("head");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for n in 0..5 {
        let started = Instant::now();
        let reply = post(gateway.http, &event_json(&good(n))).expect("POST");
        let took = started.elapsed();
        assert_eq!(
            reply.status, 200,
            "request {n} beside 12 slow bodies: {reply:?}"
        );
        assert!(took < Duration::from_secs(3), "request {n}: {took:?}");
    }
    drop(slow);
    gateway.stop();
}

#[test]
fn idle_connections_to_the_metrics_port_leave_healthz_and_ingest_working() {
    let topic = TestTopic::create("limits-idle-metrics", 1);
    let mut gateway = Gateway::start(&topic.name, &["--max-connections", "32"]);
    // A descriptor limit below the idle connections, as in a small container.
    let pid = gateway.pid().to_string();
    let limited = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=256:256"])
        .status()
        .expect("prlimit runs");
    assert!(limited.success(), "prlimit --pid {pid}");
    let idle: Vec<TcpStream> = (0..270)
        .filter_map(|_| TcpStream::connect_timeout(&gateway.metrics, Duration::from_secs(1)).ok())
        .collect();
    eprintln!("{} idle connections to the metrics port", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    // Ingest is not starved of descriptors.
    let ok = post(gateway.http, &event_json(&good(1))).expect("POST beside idle connections");
    assert_eq!(ok.status, 200, "{ok:?}");
    // /healthz answers within a bound (the idle connections are closed by the header timeout).
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match streamagg::telemetry::http_get(gateway.metrics, "/healthz", Duration::from_secs(2)) {
            Ok((200, _)) => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(20) && attempts < 40,
                "/healthz unreachable for {:?}: {other:?}",
                started.elapsed()
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("/healthz answered after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(idle);
    let log = gateway.log();
    let noisy = log.matches("Too many open files").count();
    assert!(noisy < 20, "{noisy} lines of 'Too many open files'");
    gateway.stop();
}

#[test]
fn connection_limits_beyond_the_descriptor_limit_are_refused_at_start_up() {
    let b = brokers();
    let mut child = Command::new("prlimit")
        .arg("--nofile=200:200")
        .arg(binary())
        .args([
            "ingest",
            "--brokers",
            &b,
            "--topic",
            "t",
            "--listen-tcp",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
            "--max-connections",
            "1024",
        ])
        .env("RUST_LOG", "warn")
        .env("STREAMAGG_METRICS_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit streamagg");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = status.unwrap_or_else(|| panic!("still running after 20 s; stderr:\n{stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("file-descriptor limit") && stderr.contains("max_connections"),
        "{stderr}"
    );
}

#[test]
fn json_arrays_honour_max_line_bytes_and_a_permanent_produce_error_is_4xx() {
    let topic = TestTopic::create_with_config("limits-array", 1, &[("max.message.bytes", "512")]);
    let mut gateway = Gateway::start(&topic.name, &["--max-line-bytes", "1024"]);
    let padded = format!(
        r#"{{"source":"padded","timestamp":1700000000000,"value":1,"pad":"{}"}}"#,
        "p".repeat(2_000)
    );
    let array = format!("[{},{padded}]", event_json(&good(1)));
    let reply = post(gateway.http, &array).expect("POST");
    assert_eq!(reply.status, 400, "{reply:?}");
    let json = reply.json();
    assert_eq!(
        (json["accepted"].as_u64(), json["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(json["errors"][0]["item"], 2, "{json}");
    assert!(
        json["errors"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("longer than 1024 bytes")),
        "{json}"
    );
    // A source the topic cannot hold (1000 random characters: it does not compress under 512 B).
    let source: String = (0..1_000)
        .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
        .collect();
    let line = event_json(&event(source, 1_700_000_000_001, 2.0));
    let started = Instant::now();
    let too_large = post(gateway.http, &line).expect("POST");
    assert!(
        (400..500).contains(&too_large.status),
        "a permanent error is the client's: {too_large:?}"
    );
    assert_eq!(too_large.header("retry-after"), None, "{too_large:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    gateway.stop();
    let got: Vec<Event> = topic_events(&topic.name, Format::Json)
        .into_iter()
        .map(|(e, _, _)| e)
        .collect();
    assert_eq!(got, vec![good(1)]);
}

#[test]
fn error_bodies_echo_little_input_and_say_nosniff() {
    let topic = TestTopic::create("limits-echo", 1);
    let mut gateway = Gateway::start(&topic.name, &[]);
    let line = format!(
        r#"{{"source":"s","timestamp":"{}","value":1}}"#,
        "<script>".repeat(7_000)
    );
    let reply = post(gateway.http, &line).expect("POST");
    assert_eq!(reply.status, 400, "{:.300}", reply.body);
    let reason = reply.json()["errors"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("invalid"), "{reason:.300}");
    assert!(reason.len() <= 300, "reason of {} bytes", reason.len());
    assert!(
        reply.body.len() < 1_024,
        "answer of {} bytes",
        reply.body.len()
    );
    assert_eq!(
        reply.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let missing = request(gateway.http, "GET", "/nowhere", &[], b"").expect("GET");
    assert_eq!(
        missing.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let mut stream = TcpStream::connect(gateway.http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n"
    )
    .expect("head");
    let too_large = read_reply(&mut stream).expect("413");
    assert_eq!(too_large.status, 413);
    assert_eq!(
        too_large.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let (status, _) = http_get(gateway.metrics, "/healthz").expect("/healthz");
    assert_eq!(status, 200);
    gateway.stop();
}

/// One POST of `body` from `from`, the head and all but the last `hold` bytes first, the rest once
/// `go` is passed; the answer's status (0 if none came).
fn post_held(
    from: std::net::Ipv4Addr,
    to: std::net::SocketAddr,
    body: &[u8],
    hold: usize,
    go: impl FnOnce(),
) -> u16 {
    let Ok(mut stream) = connect_from(from, to, Duration::from_secs(60)) else {
        return 0;
    };
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(body.len() - hold);
    let sent = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(first));
    go();
    if sent.and_then(|()| stream.write_all(rest)).is_err() {
        return 0;
    }
    read_reply(&mut stream).map_or(0, |r| r.status)
}

#[test]
fn a_largest_body_within_a_budget_of_its_size_is_answered_not_retried_forever() {
    let topic = TestTopic::create("limits-tight-budget", 1);
    let mut gateway = Gateway::start(
        &topic.name,
        &[
            "--max-body-bytes",
            "1048576",
            "--max-items-per-request",
            "6000",
            // About the least the gateway accepts for these limits (the largest request must fit).
            "--max-buffered-body-bytes",
            "2883584",
        ],
    );
    // Lines of ~200 bytes: about 5,200 events, below the item limit; the events take less memory
    // than the body they come from.
    let body = padded_ndjson("tight", 1 << 20, 200);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let reply = request(gateway.http, "POST", "/v1/events", &[], &body).expect("POST");
        statuses.push(reply.status);
        if reply.status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1_100));
    }
    eprintln!("1 MiB body, 2.75 MiB budget: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 413].contains(s)),
        "a request that fits or can never fit is not a retryable 503: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    gateway.stop();
}

#[test]
fn eight_8_mib_bodies_completed_together_do_not_livelock() {
    let topic = TestTopic::create("limits-hold-and-wait", 1);
    let mut gateway = Gateway::start(&topic.name, &[]);
    let http = gateway.http;
    let arrived = std::sync::Arc::new(std::sync::Barrier::new(9));
    let go = std::sync::Arc::new(std::sync::Barrier::new(9));
    let started = Instant::now();
    let senders: Vec<_> = (0..8u8)
        .map(|n| {
            let (arrived, go) = (arrived.clone(), go.clone());
            std::thread::spawn(move || {
                let from = std::net::Ipv4Addr::new(127, 0, 0, 1 + n / 2);
                let body = padded_ndjson(&format!("big-{n}"), 8 << 20, 1_000);
                post_held(from, http, &body, 1, || {
                    arrived.wait();
                    go.wait();
                })
            })
        })
        .collect();
    arrived.wait();
    // Let the gateway read (and reserve) every body but its last byte.
    std::thread::sleep(Duration::from_secs(2));
    go.wait();
    let statuses: Vec<u16> = senders
        .into_iter()
        .map(|s| s.join().expect("sender"))
        .collect();
    let took = started.elapsed();
    eprintln!("eight 8 MiB bodies: {statuses:?} in {took:?}");
    // The eight bodies fill the budget exactly (8 x 8 MiB); each one's events fit in its own share.
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    gateway.stop();
}

#[test]
fn connections_sending_endless_heads_hold_little_memory_before_authentication() {
    // 400 connections from 8 addresses; the bound allows ~64 KiB (HTTP) and ~20 KiB (TCP) each.
    const PER_LISTENER: usize = 200;
    const GROWTH_BOUND: u64 = 40 << 20;
    let topic = TestTopic::create("limits-preauth-memory", 1);
    let mut gateway =
        Gateway::start_with_token(&topic.name, "mem-s3cret", &["--max-connections", "512"]);
    let before = peak_rss(gateway.pid());
    let endless = vec![b'a'; 400 << 10];
    let mut held = Vec::new();
    for n in 0..PER_LISTENER {
        let from = std::net::Ipv4Addr::new(127, 0, 0, 1 + (n % 8) as u8);
        for (to, prefix) in [
            (gateway.http, &b"GET / HTTP/1.1\r\nX-Long: "[..]),
            (gateway.tcp, &b"AUTH "[..]),
        ] {
            let Ok(mut stream) = connect_from(from, to, Duration::from_secs(5)) else {
                continue;
            };
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = stream.write_all(prefix);
            let _ = stream.write_all(&endless);
            held.push(stream);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let growth = peak_rss(gateway.pid()).saturating_sub(before);
    eprintln!(
        "{} connections sending endless heads: peak RSS grew {} MiB",
        held.len(),
        growth >> 20
    );
    drop(held);
    gateway.assert_alive();
    assert!(growth < GROWTH_BOUND, "peak RSS grew {} MiB", growth >> 20);
    let ok = request(
        gateway.http,
        "POST",
        "/v1/events",
        &[("Authorization", "Bearer mem-s3cret")],
        event_json(&good(1)).as_bytes(),
    )
    .expect("POST");
    assert_eq!(ok.status, 200, "{ok:?}");
    gateway.stop();
}

/// A client that sends requests but never reads the answers: once the gateway's writes stall for
/// `--read-timeout`, it closes the connection (before, it held the slot for as long as the client
/// liked). Seen from the client: a write fails because the gateway reset the connection.
#[test]
fn a_client_that_never_reads_its_answers_is_closed_after_the_read_timeout() {
    let topic = TestTopic::create("limits-no-reader", 1);
    let mut gateway = Gateway::start(&topic.name, &["--read-timeout", "2s"]);
    let mut stream = TcpStream::connect(gateway.http).expect("connect");
    stream.set_nonblocking(true).expect("non-blocking");
    let request = b"GET /not-here HTTP/1.1\r\nhost: gateway\r\n\r\n".repeat(64);
    let started = Instant::now();
    let mut closed_after = None;
    while started.elapsed() < Duration::from_secs(25) {
        match stream.write(&request) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    let closed_after =
        closed_after.expect("the gateway kept a connection whose client never reads");
    assert!(
        closed_after < Duration::from_secs(15),
        "closed only after {closed_after:?}"
    );
    gateway.assert_alive();
    gateway.stop();
}
