# Gantry's tasks. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() + "/target")

default:
    @just --list

# Run the local stack, submit a six-shot batch and watch it settle (starts its own Redis and simulator).
demo:
    cargo build -q -p gantry
    RUST_LOG="${RUST_LOG:-warn}" "$CARGO_TARGET_DIR/debug/gantry" demo

# Needs redis-server, prometheus and openssl on PATH; tests start their own servers on free ports. The second pass runs
# the end-to-end tests on a private three-master Redis Cluster, leaving out the modules that pick their own Redis and
# the chaos and trace checks (`cluster::` runs those on a cluster already).
# The whole test suite: every crate's tests, then the end-to-end tests again on a Redis Cluster.
test:
    cargo test --workspace --no-fail-fast
    GANTRY_TEST_BACKEND=cluster cargo test -p gantry --test gantry --no-fail-fast -- --skip chaos:: --skip cluster:: --skip tls:: --skip observe::

# Services as processes export one trace per task over OTLP; a real Prometheus scrapes them and evaluates every
# dashboard and alert query (needs `prometheus` on PATH: apt-get install prometheus).
# Observability check: traces across the services, every dashboard and alert query on a real Prometheus.
observe-check:
    cargo test -p gantry --test gantry observe:: -- --nocapture

# Run every service and the simulator in one process (private Redis unless GANTRY__REDIS__URL is set).
dev:
    cargo run -q -p gantry -- dev

# Format the code.
fmt:
    cargo fmt --all

# Lint: rustfmt check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Knobs: SHAPES, B, K, INFLIGHT, REPS, RETENTION_SECS, TIMEOUT_S (what is measured: crates/gantry/benches/scale/main.rs).
# Benchmark: the services as release processes on a private Redis, 2,000 x 10 and 200 x 100 tasks, one JSON line each.
bench:
    cargo bench -q -p gantry --bench scale

# The old in-process benchmark: one 1,000-task batch through `gantry dev`'s stack (time, Redis commands per task).
bench-inprocess:
    cargo bench -p gantry --bench end_to_end

# The BullMQ peer benchmark (../shared/bench/bullmq) on the same redis-server build, both shapes, its JSON lines.
bench-peer:
    #!/usr/bin/env bash
    set -euo pipefail
    cd "{{justfile_directory()}}/../shared/bench/bullmq"
    [ -d node_modules/bullmq ] || npm ci --no-audit --no-fund >&2
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    REDIS_PORT=$port B=2000 K=10 ./run.sh
    REDIS_PORT=$port B=200 K=100 CONC=200 ./run.sh

# Gantry and the peer, 3 runs each, interleaved; medians and ratios per shape (raw lines in $CARGO_TARGET_DIR/bench-results).
bench-compare:
    cargo bench -q -p gantry --bench scale -- compare

# 50 x 4,000 tasks at a steady rate with retention 5 s: used_memory every 10 s, at the end within 10 % of the start.
soak:
    cargo bench -q -p gantry --bench scale -- soak

# Status calls per task and detection delay: Gantry's poll schedule against fixed 5 s polling (200 tasks).
bench-polling:
    cargo bench -p gantry --bench polling

# The chaos test in its long form: five seeds, 3,000 tasks each, kills for at least 40 s (prints one summary line per run).
chaos:
    for seed in 1 2 3 4 5; do \
      GANTRY_CHAOS_SEED=$seed GANTRY_CHAOS_TASKS=3000 GANTRY_CHAOS_SECONDS=40 \
        cargo test -q -p gantry --test gantry chaos:: -- --nocapture 2>&1 | grep -E '^chaos |panicked|test result'; \
    done

# Schemathesis (PyPI, in a venv under $CARGO_TARGET_DIR) against proto-docs/openapi.yaml on a live local stack with a
# tenant key: every answer must be documented and conform, and none may be a 5xx.
# Contract fuzzing of the public API: every answer documented and conforming, no 5xx.
fuzz examples="25":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -q -p gantry
    venv="$CARGO_TARGET_DIR/fuzz-venv"
    [ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q 'schemathesis>=4,<5'; }
    token="fuzz-admin-$(openssl rand -hex 24 2>/dev/null || echo 0123456789abcdef0123456789abcdef)"
    port=$((20000 + RANDOM % 20000))
    export GANTRY__GATEWAY__LISTEN=127.0.0.1:$port GANTRY__GATEWAY__ADMIN_LISTEN=127.0.0.1:$((port + 1)) \
      GANTRY__GATEWAY__ADMIN_TOKEN=$token GANTRY__SIM__LISTEN=127.0.0.1:$((port + 2)) \
      GANTRY__GATEWAY__TENANT_RATE_PER_SEC=100000 GANTRY__GATEWAY__TENANT_BURST=100000 RUST_LOG=error
    "$CARGO_TARGET_DIR/debug/gantry" dev > "$CARGO_TARGET_DIR/fuzz-stack.log" 2>&1 &
    stack=$!
    trap 'kill $stack 2>/dev/null; wait $stack 2>/dev/null || true' EXIT
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
    key=$(curl -sf -X POST "http://127.0.0.1:$((port + 1))/admin/v1/tenants" -H "Authorization: Bearer $token" \
      -H 'content-type: application/json' -d '{"name": "fuzz", "credits": 1000000}' \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
    # The admin API and /metrics live on the admin listener; the public API is what tenants can reach.
    "$venv/bin/schemathesis" --config-file proto-docs/schemathesis.toml run proto-docs/openapi.yaml --url "http://127.0.0.1:$port" \
      -H "Authorization: Bearer $key" --exclude-path-regex '^/(admin|metrics)' \
      --max-examples {{examples}} --workers 1 --seed 1
