//! Tests of [`super`] (telemetry).

use super::server::respond;
use super::*;
use hyper::StatusCode;

fn partition(fetch_state: &str, ls: i64, hi: i64, app: i64, committed: i64) -> Partition {
    Partition {
        fetch_state: fetch_state.to_owned(),
        ls_offset: ls,
        hi_offset: hi,
        app_offset: app,
        committed_offset: committed,
        ..Partition::default()
    }
}

#[test]
fn lag_is_the_distance_from_the_position_to_the_stable_end() {
    let cases = [
        // (fetch state, ls_offset, hi_offset, app_offset, committed, lag)
        ("active", 100, 120, 40, 10, Some(60)),
        ("active", -1, 120, 40, 10, Some(80)),
        ("active", 100, 120, -1001, 10, Some(90)),
        ("active", 100, 120, -1001, -1001, None),
        ("active", 100, 120, 130, 10, Some(0)),
        ("stopped", 100, 120, 40, 10, None),
        ("none", 100, 120, 40, 10, None),
    ];
    for (state, ls, hi, app, committed, expected) in cases {
        assert_eq!(
            partition_lag(&partition(state, ls, hi, app, committed)),
            expected,
            "{state} ls={ls} hi={hi} app={app} committed={committed}"
        );
    }
}

#[test]
fn health_is_live_at_start_up_and_not_after_a_stall() {
    let health = Health::new(Duration::from_millis(50));
    assert!(health.is_live(), "no poll yet: starting up, alive");
    assert!(!health.is_ready());
    health.polled();
    health.set_ready(true);
    assert!(health.is_live() && health.is_ready());
    std::thread::sleep(Duration::from_millis(80));
    assert!(!health.is_live(), "no poll for longer than stall_after");
    assert!(!health.is_ready(), "a stalled loop is not ready either");
    health.polled();
    assert!(health.is_live() && health.is_ready());
}

#[test]
fn a_loop_that_polls_while_its_commit_hangs_is_stalled_all_the_same() {
    let health = Health::new(Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(10));
    let commit_sent = std::time::Instant::now();
    health.polled_unless_waiting_since(Some(commit_sent));
    assert!(health.is_live(), "waiting less than stall_after");
    std::thread::sleep(Duration::from_millis(80));
    health.polled_unless_waiting_since(Some(commit_sent));
    assert!(
        !health.is_live(),
        "the commit has been waiting longer than stall_after"
    );
    assert!(health
        .since_last_poll()
        .is_some_and(|since| since >= Duration::from_millis(80)));
    health.polled_unless_waiting_since(None);
    assert!(health.is_live(), "the answer came");
}

#[test]
fn the_endpoint_answers_probes_by_health() {
    let health = Health::new(Duration::from_secs(60));
    let status = |path: &str, health: &Health| respond(path, None, health).status();
    assert_eq!(status("/healthz", &health), StatusCode::OK);
    assert_eq!(status("/readyz", &health), StatusCode::SERVICE_UNAVAILABLE);
    health.set_ready(true);
    assert_eq!(status("/readyz", &health), StatusCode::OK);
    assert_eq!(
        status("/metrics", &health),
        StatusCode::NOT_FOUND,
        "metrics off"
    );
    assert_eq!(status("/other", &health), StatusCode::NOT_FOUND);
}

#[test]
fn a_rate_limited_warning_logs_once_per_interval_and_counts_the_rest() {
    let warning = RateLimitedWarning::new(Duration::from_secs(3600));
    let mut logged = Vec::new();
    for _ in 0..5 {
        warning.warn(|suppressed| logged.push(suppressed));
    }
    assert_eq!(logged, vec![0]);
    let every_time = RateLimitedWarning::new(Duration::ZERO);
    every_time.warn(|_| {});
    let mut suppressed = None;
    every_time.warn(|n| suppressed = Some(n));
    assert_eq!(suppressed, Some(0));
}

#[test]
fn probes_say_nosniff() {
    let health = Health::new(Duration::from_secs(30));
    let response = respond("/healthz", None, &health);
    assert_eq!(
        response
            .headers()
            .get(hyper::header::X_CONTENT_TYPE_OPTIONS)
            .map(|v| v.as_bytes()),
        Some(&b"nosniff"[..])
    );
}
