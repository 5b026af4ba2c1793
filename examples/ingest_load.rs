//! A loopback load generator for `streamagg ingest` (a benchmark, not a test): `clients` threads
//! each send `requests` HTTP requests of `events` NDJSON events over one keep-alive connection, or
//! `clients` TCP connections each write `requests × events` lines; prints the events per second.
//!
//! ```sh
//! cargo run --release --example ingest_load -- http 127.0.0.1:8081 16 200 500
//! cargo run --release --example ingest_load -- tcp 127.0.0.1:8080 4 200 500
//! ```
//!
//! Over TCP the rate is the rate the gateway *read* lines at; how much of it Kafka has acknowledged
//! is on the gateway's `/metrics` (`streamagg_ingest_events_delivered_total`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ingest_load http|tcp ADDR CLIENTS REQUESTS EVENTS";
    let [mode, addr, clients, requests, events] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let parse = |s: &str| -> usize {
        s.parse().unwrap_or_else(|_| {
            eprintln!("{usage}");
            std::process::exit(2)
        })
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| {
        eprintln!("{usage}");
        std::process::exit(2)
    });
    let (clients, requests, events) = (parse(clients), parse(requests), parse(events));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let mode = mode.clone();
            std::thread::spawn(move || match mode.as_str() {
                "http" => http_client(addr, client, requests, events),
                _ => tcp_client(addr, client, requests, events),
            })
        })
        .collect();
    let mut sent = 0;
    for worker in workers {
        sent += worker.join().unwrap_or(0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{mode}: {sent} events acknowledged/written in {elapsed:.2}s = {:.0} events/s ({clients} clients x {requests} x {events})",
        sent as f64 / elapsed
    );
}

fn lines(client: usize, request: usize, events: usize) -> String {
    let base = 1_700_000_000_000_i64 + (request * events) as i64;
    (0..events)
        .map(|i| {
            format!(
                "{{\"source\":\"router-{client}-{}\",\"timestamp\":{},\"value\":{}.5}}\n",
                i % 50,
                base + i as i64,
                i
            )
        })
        .collect()
}

/// Events acknowledged with 200.
fn http_client(addr: SocketAddr, client: usize, requests: usize, events: usize) -> usize {
    let Ok(stream) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return 0;
    };
    let mut reader = BufReader::new(stream);
    let mut acknowledged = 0;
    for request in 0..requests {
        let body = lines(client, request, events);
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err()
        {
            break;
        }
        let mut status_line = String::new();
        if reader.read_line(&mut status_line).unwrap_or(0) == 0 {
            break;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return acknowledged;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            break;
        }
        if status_line.split_whitespace().nth(1) == Some("200") {
            acknowledged += events;
        } else {
            eprintln!("{}: {}", status_line.trim(), String::from_utf8_lossy(&body));
        }
    }
    acknowledged
}

/// Lines written.
fn tcp_client(addr: SocketAddr, client: usize, requests: usize, events: usize) -> usize {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0;
    };
    let mut written = 0;
    for request in 0..requests {
        if stream
            .write_all(lines(client, request, events).as_bytes())
            .is_err()
        {
            break;
        }
        written += events;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    if !answer.is_empty() {
        eprintln!("{answer}");
    }
    written
}
