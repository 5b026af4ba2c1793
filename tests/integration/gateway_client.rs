//! The tests' side of the gateway: start a real `streamagg ingest` on ports of its own, speak HTTP
//! and TCP to it by hand (no client library between the test and the bytes), and read back what
//! reached the topic with an independent decoder.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use streamagg::codec::Format;

use crate::common::{brokers, read_all, StreamaggProcess};
use crate::oracle::parse_independently;

/// An event as the test knows it: source, timestamp, and the value's bits (compared exactly).
pub(crate) type Event = (String, i64, u64);

pub(crate) fn event(source: String, timestamp: i64, value: f64) -> Event {
    (source, timestamp, value.to_bits())
}

pub(crate) fn event_json(e: &Event) -> String {
    serde_json::json!({"source": e.0, "timestamp": e.1, "value": f64::from_bits(e.2)}).to_string()
}

/// A running `streamagg ingest` and where it listens; killed if still running when dropped.
pub(crate) struct Gateway {
    pub(crate) process: StreamaggProcess,
    pub(crate) tcp: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) metrics: SocketAddr,
}

impl Gateway {
    /// [`Gateway::start`] with `token` required on both doors (`--http-token-file`, a file of its
    /// own, read before the gateway is ready) and the `extra` flags.
    pub(crate) fn start_with_token(topic: &str, token: &str, extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("token written");
        let mut args = vec!["--http-token-file", token_file.to_str().expect("utf8")];
        args.extend_from_slice(extra);
        Gateway::start(topic, &args)
    }

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

    pub(crate) fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    pub(crate) fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
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
    pub(crate) fn rss_bytes(&self) -> u64 {
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

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2, …: another client as the
/// gateway sees it), made within `timeout`.
pub(crate) fn connect_from(
    from: std::net::Ipv4Addr,
    to: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.into(), 0))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = runtime.block_on(async {
        tokio::time::timeout(timeout, socket.connect(to))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// One HTTP response read by its `Content-Length` (the connection stays usable); `None` if the
/// gateway closed the connection before answering.
pub(crate) fn read_one_reply(stream: &mut TcpStream) -> std::io::Result<Option<Reply>> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => raw.push(byte[0]),
            Err(e) if raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        if raw.len() > 64 << 10 {
            return Err(std::io::Error::other("response head over 64 KiB"));
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let mut reply = Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status: {head}")))?,
        head,
        body: String::new(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    reply.body = String::from_utf8_lossy(&body).into_owned();
    Ok(Some(reply))
}

/// An NDJSON body of valid events of exactly `bytes` bytes, each line about `line` bytes long
/// (padded with an ignored field), sources prefixed with `prefix`.
pub(crate) fn padded_ndjson(prefix: &str, bytes: usize, line: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes);
    let mut n = 0;
    while body.len() < bytes {
        let bare = format!(
            r#"{{"source":"{prefix}-{n}","timestamp":{},"value":1,"pad":""}}"#,
            1_700_000_000_000_i64 + n
        );
        let left = bytes - body.len();
        let want = if left < 2 * line { left } else { line };
        let pad = want.saturating_sub(bare.len() + 1);
        let text = bare.replace(r#""pad":"""#, &format!(r#""pad":"{}""#, "p".repeat(pad)));
        body.extend_from_slice(text.as_bytes());
        body.push(b'\n');
        n += 1;
    }
    body
}
