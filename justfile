# Gantry's tasks. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() + "/target")

default:
    @just --list

# Run the local stack, submit a six-shot batch and watch it settle (starts its own Redis and simulator).
demo:
    cargo build -q -p gantry
    RUST_LOG="${RUST_LOG:-warn}" "$CARGO_TARGET_DIR/debug/gantry" demo

# The whole test suite (needs redis-server and prometheus on PATH; tests start their own on free ports).
test:
    cargo test --workspace --no-fail-fast

# Observability check: services as processes export one trace per task over OTLP; a real Prometheus scrapes them
# and evaluates every dashboard and alert query (needs `prometheus` on PATH: apt-get install prometheus).
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

# Benchmarks: one 1,000-task batch end to end (time, Redis commands per task).
bench:
    cargo bench -p gantry --bench end_to_end

# Status calls per task and detection delay: Gantry's poll schedule against fixed 5 s polling (200 tasks).
bench-polling:
    cargo bench -p gantry --bench polling

# The chaos test in its long form: five seeds, 3,000 tasks each, kills for at least 40 s (prints one summary line per run).
chaos:
    for seed in 1 2 3 4 5; do \
      GANTRY_CHAOS_SEED=$seed GANTRY_CHAOS_TASKS=3000 GANTRY_CHAOS_SECONDS=40 \
        cargo test -q -p gantry --test gantry chaos:: -- --nocapture 2>&1 | grep -E '^chaos:|panicked|test result'; \
    done
