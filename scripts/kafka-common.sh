# scripts/kafka-common.sh — what scripts/kafka (one broker) and scripts/kafka-cluster (three nodes)
# share: is a port open, is a launched process alive, the Kafka tools' quiet log4j config, and
# waiting for a signalled broker to exit. Sourced by both; the caller defines `say`.
# shellcheck shell=bash

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A process we launched is alive (not exited, not a zombie awaiting its parent's wait). Unlike a
# check of the JVM's command line this holds from the moment of the fork, before /proc shows it.
launched_alive() {
  local state
  [[ -n "${1:-}" ]] || return 1
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# write_tools_log_config FILE — log4j2 for Kafka's command-line tools: errors only, on stderr.
write_tools_log_config() {
  mkdir -p "$(dirname "$1")"
  cat >"$1" <<L4J
status = error
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = ERROR
rootLogger.appenderRef.err.ref = err
L4J
}

# wait_stopped PID NAME POLL_SECONDS — after the caller signalled PID to stop: waits up to 30 s for
# it to exit, then kills it (-9).
wait_stopped() {
  local deadline=$((SECONDS + 30))
  while kill -0 "$1" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      say "$2 did not stop within 30s; killing it"
      kill -KILL "$1" 2>/dev/null || true
      break
    fi
    sleep "$3"
  done
}
