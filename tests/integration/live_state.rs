//! The live-state endpoint (`GET /v1/windows/{source}`) and `streamagg query` against a real broker:
//! a source's open window equals an oracle computed from the input the test wrote (count, sum,
//! min, max, avg, its partition as Kafka placed the records, the partition's stream time); no or a
//! wrong token is `401`; with two instances in one group, each names the other as the owner of the
//! sources it does not own, with its address, and `streamagg query` follows it there in one hop. A
//! rogue group member publishing an address of its own in its `client.id` is named, never sent the
//! token, unless the user names it with `--peer` (and then its oversized answer is cut off).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamagg::live::answer::{encode_source, WindowsAnswer, PATH_PREFIX};

use crate::bounded::run_bounded;
use crate::common::{
    brokers, http_get, kafka_settings, read_all, streamagg, wait_for_records, StreamaggProcess,
};
use crate::dataset::{json_events, produce_inputs, T0};
use crate::scenario::{check_alive, random_group, Topics};

const TOKEN: &str = "live-state-test-token";

/// The open window of one source as the oracle sees it: (count, sum, min, max).
type Expected = (i64, f64, f64, f64);

/// count, sum, min and max of `events` of `source` with a timestamp in `[start, start + 60 s)`.
fn oracle(events: &[(String, i64, f64)], source: &str, start: i64) -> Expected {
    let values: Vec<f64> = events
        .iter()
        .filter(|(s, t, _)| s == source && (start..start + 60_000).contains(t))
        .map(|(_, _, v)| *v)
        .collect();
    (
        values.len() as i64,
        values.iter().sum(),
        values.iter().copied().fold(f64::INFINITY, f64::min),
        values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

fn write(topic: &str, events: &[(String, i64, f64)]) {
    let borrowed: Vec<(&str, i64, f64)> = events
        .iter()
        .map(|(s, t, v)| (s.as_str(), *t, *v))
        .collect();
    let inputs = json_events(&borrowed);
    produce_inputs(topic, &inputs, 0..inputs.len());
}

fn token_file(dir: &std::path::Path) -> String {
    let path = dir.join("query.token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("token written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_str().expect("utf8").to_owned()
}

fn start(topics: &Topics, group: &str, dir: &std::path::Path, name: &str) -> StreamaggProcess {
    let state = dir.join(name);
    StreamaggProcess::start(&[
        "--brokers",
        &brokers(),
        "--input",
        &topics.input.name,
        "--output",
        &topics.output.name,
        "--late-topic",
        &topics.late.name,
        "--dlq-topic",
        &topics.dlq.name,
        "--group",
        group,
        "--state-dir",
        state.to_str().expect("utf8"),
        "--window",
        "60s",
        "--grace",
        "10s",
        "--checkpoint-interval",
        "200ms",
        "--query-token-file",
        &token_file(dir),
    ])
}

/// `GET /v1/windows/{source}` with the token: (status, parsed answer if 200).
fn ask(addr: SocketAddr, source: &str) -> (u16, Option<WindowsAnswer>) {
    let path = format!("{PATH_PREFIX}{}", encode_source(source));
    let (status, body) =
        streamagg::telemetry::http_get_with(addr, &path, Some(TOKEN), Duration::from_secs(10))
            .expect("the endpoint answers");
    let answer = (status == 200)
        .then(|| serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")));
    (status, answer)
}

/// The one open window an owned answer holds: (window_start, count, sum, min, max, avg, final).
fn open_window(answer: &WindowsAnswer) -> Option<(i64, Expected, f64, bool)> {
    let partition = answer.partitions.iter().find(|p| p.owned)?;
    let state = partition.state.as_ref()?;
    match state.windows.as_slice() {
        [w] => Some((
            w.window_start,
            (w.count, w.sum, w.min, w.max),
            w.avg,
            w.is_final,
        )),
        _ => None,
    }
}

#[test]
fn an_owned_sources_open_window_equals_the_oracle_and_needs_the_token() {
    let topics = Topics::create("live", 2);
    let sources = ["link-a", "link-b", "café / x?y"];
    let previous = T0 - 60_000;
    let mut events = Vec::new();
    // A closed minute (its windows are emitted once the next minute's first events arrive), then
    // the open minute T0. Values are multiples of 0.25: sums are exact in any order.
    for (i, source) in sources.iter().enumerate() {
        for j in 0..4 {
            events.push((
                source.to_string(),
                previous + j * 10_000,
                50.0 + (i * 4) as f64 + j as f64 * 0.25,
            ));
        }
    }
    for j in 0..6 {
        for (i, source) in sources.iter().enumerate() {
            events.push((
                source.to_string(),
                T0 + 15_000 + j * 4_000,
                60.0 + (i * 7) as f64 + j as f64 * 1.25,
            ));
        }
    }
    write(&topics.input.name, &events);
    let dir = tempfile::tempdir().expect("dir");
    let mut processor = start(&topics, &random_group(), dir.path(), "state");
    let addr = processor.telemetry_addr(Duration::from_secs(30));

    // No token, a wrong one: 401, before anything is looked up.
    let path = format!("{PATH_PREFIX}link-a");
    let (status, _) = http_get(addr, &path).expect("answers");
    assert_eq!(status, 401, "no token");
    let (status, _) =
        streamagg::telemetry::http_get_with(addr, &path, Some("wrong"), Duration::from_secs(10))
            .expect("answers");
    assert_eq!(status, 401, "wrong token");
    // The probes stay open without a token.
    assert_eq!(http_get(addr, "/healthz").expect("answers").0, 200);

    // The closed minute is emitted: every record before the open minute's first is processed.
    let output = wait_for_records(
        &topics.output.name,
        sources.len(),
        Duration::from_secs(60),
        || check_alive(&mut [&mut processor]),
    );
    assert_eq!(output.len(), sources.len(), "one closed window per source");

    let input = read_all(&topics.input.name);
    for source in sources {
        let expected = oracle(&events, source, T0);
        let partitions: Vec<i32> = input
            .iter()
            .filter(|r| r.key.as_deref() == Some(source.as_bytes()))
            .map(|r| r.partition)
            .collect();
        assert_eq!(partitions.len(), 10);
        let partition = partitions[0];
        assert!(
            partitions.iter().all(|&p| p == partition),
            "one partition per key"
        );
        // The partition's stream time: the largest event time written to it.
        let stream_time = events
            .iter()
            .filter(|(s, _, _)| {
                input
                    .iter()
                    .any(|r| r.key.as_deref() == Some(s.as_bytes()) && r.partition == partition)
            })
            .map(|(_, t, _)| *t)
            .max();

        // Poll (bounded) until the processor has taken in every record of the source.
        let started = Instant::now();
        let answer = loop {
            let (status, answer) = ask(addr, source);
            assert_eq!(status, 200, "{source}");
            let answer = answer.expect("parsed");
            if open_window(&answer).is_some_and(|(_, (count, ..), _, _)| count == expected.0)
                || started.elapsed() > Duration::from_secs(30)
            {
                break answer;
            }
            processor.assert_alive();
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(answer.source, source);
        assert!(answer.owned, "{answer:?}");
        let owned = &answer.partitions[0];
        assert_eq!(
            (owned.topic.as_str(), owned.partition),
            (topics.input.name.as_str(), partition)
        );
        let state = owned.state.as_ref().expect("owned state");
        assert!(!state.rebuilding);
        assert_eq!(state.stream_time, stream_time, "{source}");
        let (start, actual, avg, is_final) = open_window(&answer).expect("one open window");
        assert_eq!(start, T0, "the closed minute is not among the open windows");
        assert_eq!(actual, expected, "{source}: (count, sum, min, max)");
        assert_eq!(avg, expected.1 / expected.0 as f64);
        assert!(!is_final);
    }
    // A source nobody wrote: owned partition, no windows.
    let (_, answer) = ask(addr, "never-seen");
    let answer = answer.expect("200");
    assert!(answer.owned);
    assert!(answer.partitions[0]
        .state
        .as_ref()
        .expect("state")
        .windows
        .is_empty());
    processor.stop_gracefully();
}

#[test]
fn a_source_owned_by_another_instance_names_its_owner_and_query_follows_it() {
    let topics = Topics::create("live-owner", 4);
    let sources: Vec<String> = (0..16).map(|i| format!("sensor-{i}")).collect();
    let mut events = Vec::new();
    for j in 0..3 {
        for (i, source) in sources.iter().enumerate() {
            events.push((
                source.clone(),
                T0 + j * 5_000,
                10.0 + i as f64 + j as f64 * 0.5,
            ));
        }
    }
    write(&topics.input.name, &events);
    let dir = tempfile::tempdir().expect("dir");
    let group = random_group();
    let mut first = start(&topics, &group, dir.path(), "a");
    let mut second = start(&topics, &group, dir.path(), "b");
    let addrs = [
        first.telemetry_addr(Duration::from_secs(30)),
        second.telemetry_addr(Duration::from_secs(30)),
    ];

    // Until the group has settled (bounded): for every source, exactly one instance owns it with
    // the whole open window, and the other names that instance's address.
    let started = Instant::now();
    let owners: BTreeMap<String, usize> = loop {
        let mut owners = BTreeMap::new();
        let mut settled = true;
        for source in &sources {
            let answers = addrs.map(|addr| ask(addr, source).1);
            let owned: Vec<usize> = (0..2)
                .filter(|&i| answers[i].as_ref().is_some_and(|a| a.owned))
                .collect();
            let [owner] = owned[..] else {
                settled = false;
                break;
            };
            let other = answers[1 - owner].as_ref().expect("200");
            let complete = open_window(answers[owner].as_ref().expect("200"))
                .is_some_and(|(_, (count, ..), _, _)| count == 3);
            if !complete || other.elsewhere != [addrs[owner].to_string()] {
                settled = false;
                break;
            }
            owners.insert(source.clone(), owner);
        }
        let both_own = owners.values().any(|&o| o == 0) && owners.values().any(|&o| o == 1);
        if (settled && both_own) || started.elapsed() > Duration::from_secs(90) {
            break owners;
        }
        check_alive(&mut [&mut first, &mut second]);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        owners.len(),
        sources.len(),
        "the group settled within 90 s: {owners:?}"
    );
    assert!(
        owners.values().any(|&o| o == 0) && owners.values().any(|&o| o == 1),
        "{owners:?}"
    );

    // The partition each answer names is where Kafka put the source's records.
    let input = read_all(&topics.input.name);
    for (source, &owner) in &owners {
        let (_, answer) = ask(addrs[1 - owner], source);
        let answer = answer.expect("200");
        let named = &answer.partitions[0];
        assert!(!named.owned && named.state.is_none());
        let placed = input
            .iter()
            .find(|r| r.key.as_deref() == Some(source.as_bytes()))
            .expect("written")
            .partition;
        assert_eq!(named.partition, placed, "{source}");
        let owner_info = named.owner.as_ref().expect("owner");
        assert_eq!(owner_info.address, Some(addrs[owner].to_string()));
        assert!(owner_info.client_id.starts_with("streamagg@"));
    }

    // `streamagg query` asked at the instance that does not own the source follows to the owner.
    let token = token_file(dir.path());
    for (source, &owner) in owners.iter().take(4) {
        let endpoint = format!("http://{}", addrs[1 - owner]);
        let output = streamagg(&[
            "query",
            "--source",
            source,
            "--endpoint",
            &endpoint,
            "--token-file",
            &token,
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: WindowsAnswer =
            serde_json::from_slice(&output.stdout).expect("the answer is printed as JSON");
        assert!(answer.owned, "followed to the owner: {answer:?}");
        let (start, actual, _, _) = open_window(&answer).expect("one open window");
        assert_eq!(start, T0);
        assert_eq!(actual, oracle(&events, source, T0), "{source}");
    }
    // Without the right token `query` is one error line and exit 1.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "nope").expect("written");
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let output = streamagg(&[
        "query",
        "--source",
        &sources[0],
        "--endpoint",
        &format!("http://{}", addrs[0]),
        "--token-file",
        wrong.to_str().expect("utf8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("answered 401"), "{stderr}");
    first.stop_gracefully();
    second.stop_gracefully();
}

#[test]
fn queries_while_the_processor_works_through_a_backlog_are_answered_and_never_go_back() {
    let topics = Topics::create("live-load", 2);
    let sources: Vec<String> = (0..20).map(|i| format!("busy-{i}")).collect();
    let mut events = Vec::new();
    for j in 0..1_500 {
        for (i, source) in sources.iter().enumerate() {
            events.push((
                source.clone(),
                T0 + j % 50_000,
                (i + j as usize % 7) as f64 * 0.5,
            ));
        }
    }
    write(&topics.input.name, &events);
    let dir = tempfile::tempdir().expect("dir");
    let mut processor = start(&topics, &random_group(), dir.path(), "state");
    let addr = processor.telemetry_addr(Duration::from_secs(30));
    let expected: BTreeMap<&str, Expected> = sources
        .iter()
        .map(|s| (s.as_str(), oracle(&events, s, T0)))
        .collect();

    // Four clients query every source in turn while the backlog is processed, until each has
    // seen every source complete (bounded). A source's count never goes back between two answers
    // to one client, and every answer is 200 or, when the processor is busy, 503.
    let started = Instant::now();
    let results: Vec<(usize, usize, bool)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (sources, expected) = (&sources, &expected);
                scope.spawn(move || {
                    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
                    let (mut answers, mut partial) = (0, 0);
                    while started.elapsed() < Duration::from_secs(60) {
                        let mut complete = true;
                        for source in sources {
                            let (status, answer) = ask(addr, source);
                            assert!(status == 200 || status == 503, "{status}");
                            let Some(answer) = answer else {
                                complete = false;
                                continue;
                            };
                            answers += 1;
                            let count = open_window(&answer).map_or(0, |(_, (c, ..), _, _)| c);
                            let seen = last.entry(source.as_str()).or_insert(0);
                            assert!(count >= *seen, "{source}: {count} after {seen}");
                            *seen = count;
                            let full = expected[source.as_str()].0;
                            partial += usize::from(count > 0 && count < full);
                            complete &= count == full;
                        }
                        if complete {
                            return (answers, partial, true);
                        }
                    }
                    (answers, partial, false)
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect()
    });
    processor.assert_alive();
    assert!(
        results.iter().all(|&(_, _, done)| done),
        "{results:?}; log:\n{}",
        processor.log()
    );
    let partial: usize = results.iter().map(|r| r.1).sum();
    eprintln!(
        "answers per client (answers, partial, complete): {results:?}; partial answers: {partial}"
    );
    for source in &sources {
        let (_, answer) = ask(addr, source);
        let (start, actual, _, _) = open_window(&answer.expect("200")).expect("one open window");
        assert_eq!(start, T0);
        assert_eq!(actual, expected[source.as_str()], "{source}");
    }
    processor.stop_gracefully();
}

/// An HTTP listener the test owns, on another loopback address than the processors (127.0.0.2):
/// it keeps the head of every request it gets and answers each with `200` and a body larger than
/// any client should read.
struct Listener {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn start() -> Listener {
        let listener = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopped) = (Arc::clone(&heads), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let mut head = [0u8; 8192];
                let read = stream.read(&mut head).unwrap_or(0);
                kept.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&head[..read]).into_owned());
                let _ =
                    stream.write_all(b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n");
                let chunk = vec![b' '; 1024 * 1024];
                for _ in 0..6 {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
            }
        });
        Listener { addr, heads, stop }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A member of `group` that is no streamagg instance: a plain consumer of `topic` whose `client.id`
/// publishes `address` as streamagg's do. It polls (so it keeps its partitions) until `stop`.
fn rogue_member(
    group: &str,
    topic: &str,
    address: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka_settings()
        .client_config(&format!("streamagg@{address}"))
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .create()
        .expect("rogue consumer");
    consumer.subscribe(&[topic]).expect("subscribed");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = consumer.poll(Duration::from_millis(100));
        }
    })
}

#[test]
fn query_never_sends_the_token_to_an_owner_address_a_group_member_made_up() {
    let topics = Topics::create("live-rogue", 2);
    let dir = tempfile::tempdir().expect("dir");
    let group = random_group();
    let mut processor = start(&topics, &group, dir.path(), "state");
    let addr = processor.telemetry_addr(Duration::from_secs(30));
    let listener = Listener::start();
    let stop = Arc::new(AtomicBool::new(false));
    let rogue = rogue_member(&group, &topics.input.name, listener.addr, Arc::clone(&stop));

    // Until the rogue member owns a partition (bounded): a source on it, named with its address.
    let sources: Vec<String> = (0..16).map(|i| format!("probe-{i}")).collect();
    let started = Instant::now();
    let source = loop {
        let found = sources.iter().find(|source| {
            ask(addr, source).1.is_some_and(|answer| {
                !answer.owned
                    && answer.partitions.iter().all(|p| {
                        p.owner.as_ref().and_then(|o| o.address.clone())
                            == Some(listener.addr.to_string())
                    })
            })
        });
        if let Some(source) = found {
            break source.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the rogue member never owned a partition; log:\n{}",
            processor.log()
        );
        processor.assert_alive();
        std::thread::sleep(Duration::from_millis(500));
    };

    // Asked at the processor, `query` prints its answer, names the owner and how to trust it, and
    // never connects to it.
    let token = token_file(dir.path());
    let endpoint = format!("http://{addr}");
    let args = |peer: Option<&str>| {
        let mut args: Vec<String> = [
            "query",
            "--source",
            source.as_str(),
            "--endpoint",
            endpoint.as_str(),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(["--token-file".to_owned(), token.clone()]);
        if let Some(peer) = peer {
            args.extend(["--peer".to_owned(), peer.to_owned()]);
        }
        args
    };
    let (output, _) = run_bounded(
        &args(None),
        &[("RUST_LOG", "warn")],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(listener.heads().is_empty(), "{:?}", listener.heads());
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let answer: WindowsAnswer = serde_json::from_slice(&output.stdout).expect("one JSON answer");
    assert!(!answer.owned && !answer.complete, "{answer:?}");
    assert!(
        stderr.contains(&format!("--peer {}", listener.addr)),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN) && !String::from_utf8_lossy(&output.stdout).contains(TOKEN));

    // Named with --peer it is asked, with the token; its endless answer is cut off at the limit,
    // in bounded time, and the answer printed says it is partial.
    let peer = listener.addr.to_string();
    let (output, took) = run_bounded(
        &args(Some(&peer)),
        &[("RUST_LOG", "warn")],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let heads = listener.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].contains(&format!("Authorization: Bearer {TOKEN}")),
        "{heads:?}"
    );
    assert!(stderr.contains("larger than 4 MiB"), "{stderr}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let answer: WindowsAnswer = serde_json::from_slice(&output.stdout).expect("one JSON answer");
    assert!(!answer.complete, "{answer:?}");

    stop.store(true, Ordering::Relaxed);
    rogue.join().expect("rogue member");
    processor.stop_gracefully();
}

#[test]
fn run_refuses_a_consumer_client_id_with_the_live_state_endpoint_on() {
    let dir = tempfile::tempdir().expect("dir");
    let config = crate::common::config_file(
        dir.path(),
        "input = [\"in\"]\noutput = \"out\"\n[kafka.consumer]\n\"client.id\" = \"billing-7\"\n",
    );
    let args: Vec<String> = [
        "run",
        "--config",
        config.as_str(),
        "--brokers",
        brokers().as_str(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--query-token-file",
        token_file(dir.path()).as_str(),
    ]
    .map(str::to_owned)
    .to_vec();
    let (output, _) = run_bounded(&args, &[("RUST_LOG", "warn")], Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(1));
    let line = crate::bounded::single_error_line("run", &output, &[TOKEN]);
    assert!(
        line.contains("[kafka.consumer] may not set 'client.id'")
            && line.contains("query_token_file"),
        "{line}"
    );
}

/// With two input topics a source has a partition in each; with each owned by another instance, an
/// instance's answer is partial (`"complete": false`, the other owner `elsewhere`), and
/// `streamagg query` asks that owner (on the endpoint's host) and prints the whole.
#[test]
fn a_source_split_over_two_instances_is_marked_partial_and_query_completes_it() {
    let topics = Topics::create("live-split", 1);
    let second_input = crate::common::TestTopic::create("live-split-in2", 1);
    let source = "split-1";
    let first_events = vec![(source.to_owned(), T0 + 1_000, 10.0)];
    let second_events = vec![
        (source.to_owned(), T0 + 2_000, 20.0),
        (source.to_owned(), T0 + 3_000, 30.0),
    ];
    write(&topics.input.name, &first_events);
    write(&second_input.name, &second_events);
    let dir = tempfile::tempdir().expect("dir");
    let group = random_group();
    let inputs = format!("{},{}", topics.input.name, second_input.name);
    let token = token_file(dir.path());
    let instance = |name: &str| {
        let state = dir.path().join(name);
        StreamaggProcess::start(&[
            "--brokers",
            &brokers(),
            "--input",
            &inputs,
            "--output",
            &topics.output.name,
            "--group",
            &group,
            "--state-dir",
            state.to_str().expect("utf8"),
            "--window",
            "60s",
            "--checkpoint-interval",
            "200ms",
            "--query-token-file",
            &token,
        ])
    };
    let mut first = instance("a");
    let mut second = instance("b");
    let addrs = [
        first.telemetry_addr(Duration::from_secs(30)),
        second.telemetry_addr(Duration::from_secs(30)),
    ];

    // Until each instance owns one of the two partitions, with its record(s) in (bounded).
    let started = Instant::now();
    let at = loop {
        let answers = addrs.map(|addr| ask(addr, source).1);
        let split = |i: usize| {
            // (Recounted: `complete` and `elsewhere` as of the partitions, whichever build answered.)
            answers[i].clone().is_some_and(|mut a| {
                a.recount();
                a.owned
                    && !a.complete
                    && a.elsewhere == [addrs[1 - i].to_string()]
                    && a.partitions
                        .iter()
                        .filter_map(|p| p.state.as_ref())
                        .all(|s| s.windows.len() == 1)
            })
        };
        if split(0) && split(1) {
            break addrs[0];
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "never split: {answers:?}"
        );
        check_alive(&mut [&mut first, &mut second]);
        std::thread::sleep(Duration::from_millis(500));
    };

    let output = streamagg(&[
        "query",
        "--source",
        source,
        "--endpoint",
        &format!("http://{at}"),
        "--token-file",
        &token,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let answer: WindowsAnswer =
        serde_json::from_slice(&output.stdout).expect("the answer is printed as JSON");
    assert!(answer.complete && answer.owned, "{answer:?}\n{stderr}");
    assert!(answer.elsewhere.is_empty(), "{answer:?}");
    let counts: Vec<(String, i64)> = answer
        .partitions
        .iter()
        .map(|p| {
            let state = p.state.as_ref().expect("owned");
            (p.topic.clone(), state.windows[0].count)
        })
        .collect();
    assert_eq!(
        counts,
        [
            (topics.input.name.clone(), 1),
            (second_input.name.clone(), 2)
        ]
    );
    first.stop_gracefully();
    second.stop_gracefully();
}
