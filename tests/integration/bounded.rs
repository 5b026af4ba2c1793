//! Runs of the binary that must end: killed (and the test failed) past a deadline, and held to one
//! `streamagg: error:` line that carries no secret.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs the binary with `args` and `env`, killing it if it has not exited within `deadline`.
pub fn run_bounded(
    args: &[String],
    env: &[(&str, &str)],
    deadline: Duration,
) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(crate::common::binary())
        .args(args)
        .envs(env.iter().copied())
        .env("STREAMAGG_METRICS_ADDR", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the streamagg binary starts");
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "streamagg {args:?} did not exit within {deadline:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    (output, started.elapsed())
}

/// The one `streamagg: error:` line of a failed run; fails unless there is exactly one, the exit
/// code is non-zero, and none of `secrets` shows anywhere in its output.
pub fn single_error_line(what: &str, output: &Output, secrets: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{what}: must fail:\n{stderr}");
    for secret in secrets {
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "{what}: a password leaked:\n{stderr}"
        );
    }
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("streamagg: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{what}: one error line:\n{stderr}");
    errors[0].to_owned()
}
