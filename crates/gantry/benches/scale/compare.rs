//! `just bench-compare`: Gantry and the BullMQ peer on the same machine and the same `redis-server` build, REPS (3)
//! times each, interleaved (Gantry A, peer A, Gantry B, peer B, then again), so drift of the VM's speed hits both
//! alike. Every raw JSON line is saved to `$CARGO_TARGET_DIR/bench-results/<timestamp>.jsonl`; the table gives per
//! shape the median of the runs of each system and the ratio Gantry / peer.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::{knob, run, run_options, stack::target_dir};

/// Where the peer benchmark lives: `PEER_DIR`, else `../shared/bench/bullmq` from the project root.
pub fn peer_dir() -> PathBuf {
    std::env::var_os("PEER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench/bullmq"))
}

/// One peer run of B×K (`CONC=200` for the 100-task shape, as the peer's README ranks it), its JSON line.
pub async fn peer_run(dir: &Path, b: usize, k: usize) -> anyhow::Result<Value> {
    if !dir.join("node_modules/bullmq").exists() {
        let status = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .await
            .context("npm ci in the peer directory")?;
        anyhow::ensure!(status.success(), "npm ci failed in {}", dir.display());
    }
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("run.sh")
        .current_dir(dir)
        .env("B", b.to_string())
        .env("K", k.to_string())
        .env("REDIS_PORT", gantry_testkit::free_port()?.to_string())
        .stderr(Stdio::inherit());
    if k >= 100 {
        command.env("CONC", "200");
    }
    eprintln!("[bullmq {b}x{k}] running {}/run.sh", dir.display());
    let out = command.output().await.context("running the peer's run.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("the peer printed no JSON line (exit {})", out.status))?;
    let mut value: Value = serde_json::from_str(line)?;
    value["shape"] = format!("{b}x{k}").into();
    Ok(value)
}

/// One figure of a run, read the same way for both systems.
struct Figure {
    title: &'static str,
    read: fn(&Value) -> Option<f64>,
}

fn field(v: &Value, name: &str) -> Option<f64> {
    v[name].as_f64()
}

/// Bytes per task between two of the run's `*_mb` memory fields.
fn mem_per_task(v: &Value, upper: &str) -> Option<f64> {
    let bytes = (field(v, upper)? - field(v, "redis_used_memory_start_mb")?) * 1024.0 * 1024.0;
    Some(bytes / field(v, "tasks")?)
}

const FIGURES: [Figure; 10] = [
    Figure {
        title: "tasks/s",
        read: |v| field(v, "tasks_per_s"),
    },
    Figure {
        title: "wall s",
        read: |v| field(v, "wall_s"),
    },
    Figure {
        title: "p50 ms",
        read: |v| field(v, "lat_p50_ms"),
    },
    Figure {
        title: "p99 ms",
        read: |v| field(v, "lat_p99_ms"),
    },
    Figure {
        title: "redis cmds/task",
        read: |v| field(v, "redis_cmds_per_task"),
    },
    Figure {
        title: "round trips/task",
        read: |v| field(v, "round_trips_per_task").or_else(|| field(v, "client_cmds_per_task")),
    },
    Figure {
        title: "scripts/task",
        read: |v| field(v, "scripts_per_task").or_else(|| field(v, "redis_script_calls_per_task")),
    },
    Figure {
        title: "peak mem B/task",
        read: |v| mem_per_task(v, "redis_used_memory_peak_mb"),
    },
    Figure {
        title: "mem left B/task",
        // Gantry: after retention expired the batches; the peer keeps completed jobs (its default).
        read: |v| {
            mem_per_task(v, "redis_used_memory_after_retention_mb")
                .or_else(|| mem_per_task(v, "redis_used_memory_end_mb"))
        },
    },
    Figure {
        title: "redis CPU µs/task",
        read: |v| field(v, "redis_cpu_us_per_task"),
    },
];

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn show(x: Option<f64>) -> String {
    match x {
        None => "–".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// The shapes of `lines`, in the order they first appear.
fn shapes(lines: &[Value]) -> Vec<&str> {
    let mut shapes: Vec<&str> = Vec::new();
    for line in lines {
        let shape = line["shape"].as_str().unwrap_or("?");
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    shapes
}

/// The markdown table of medians per shape and system, and the ratio Gantry / peer.
pub fn table(lines: &[Value]) -> String {
    let mut out = String::from("| shape | system | runs ok |");
    for figure in &FIGURES {
        out += &format!(" {} |", figure.title);
    }
    out += "\n|---|---|---|";
    out += &"---|".repeat(FIGURES.len());
    out += "\n";
    for shape in shapes(lines) {
        let mut medians = Vec::new();
        for system in ["gantry", "bullmq"] {
            let runs: Vec<&Value> = lines
                .iter()
                .filter(|l| l["shape"] == shape && l["system"] == system)
                .collect();
            let ok = runs.iter().filter(|r| r["ok"] == true).count();
            let row: Vec<Option<f64>> = FIGURES
                .iter()
                .map(|f| median(runs.iter().filter_map(|r| (f.read)(r)).collect()))
                .collect();
            out += &format!("| {shape} | {system} | {ok}/{} |", runs.len());
            for value in &row {
                out += &format!(" {} |", show(*value));
            }
            out += "\n";
            medians.push(row);
        }
        out += &format!("| {shape} | gantry / bullmq | |");
        for (g, p) in medians[0].iter().zip(&medians[1]) {
            let ratio = match (g, p) {
                (Some(g), Some(p)) if *p != 0.0 => format!("{:.2}×", g / p),
                _ => "–".into(),
            };
            out += &format!(" {ratio} |");
        }
        out += "\n";
    }
    out
}

/// Gantry's median tasks/s over the peer's, per shape, against the targets: at least 2×, 6× the goal.
pub fn verdict(lines: &[Value]) -> String {
    let tasks_per_s = |shape: &str, system: &str| {
        median(
            lines
                .iter()
                .filter(|l| l["shape"] == shape && l["system"] == system)
                .filter_map(|l| field(l, "tasks_per_s"))
                .collect(),
        )
    };
    let mut out = String::from("tasks/s, Gantry / peer (medians):");
    for shape in shapes(lines) {
        out += &match (tasks_per_s(shape, "gantry"), tasks_per_s(shape, "bullmq")) {
            (Some(g), Some(p)) if p > 0.0 => {
                let ratio = g / p;
                let mark = if ratio >= 6.0 {
                    "goal of 6x met"
                } else if ratio >= 2.0 {
                    "2x or more"
                } else {
                    "UNDER 2x"
                };
                format!(" {shape} {ratio:.2}× ({mark});")
            }
            _ => format!(" {shape} –;"),
        };
    }
    out.pop();
    out
}

/// Prints the table and the verdict of saved raw lines (a `bench-results/*.jsonl` file).
pub fn reprint(path: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let lines = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{path} holds a line that is not JSON"))?;
    println!("{}", table(&lines));
    println!("{}", verdict(&lines));
    Ok(())
}

/// Runs the interleaved comparison and prints the lines and the table.
pub async fn run() -> anyhow::Result<()> {
    let reps: usize = knob("REPS", 3)?;
    let dir = peer_dir();
    anyhow::ensure!(
        dir.join("run.sh").exists(),
        "no peer benchmark at {} (set PEER_DIR)",
        dir.display()
    );
    let dir = dir.canonicalize()?;
    let results = target_dir().join("bench-results");
    std::fs::create_dir_all(&results)?;
    let stamp = time::OffsetDateTime::now_utc().format(time::macros::format_description!(
        "[year][month][day]-[hour][minute][second]"
    ))?;
    let path = results.join(format!("{stamp}.jsonl"));
    let mut file = std::fs::File::create(&path)?;
    let mut lines = Vec::new();
    for rep in 1..=reps {
        for options in run_options()? {
            eprintln!("== rep {rep}/{reps}, shape {}", options.shape());
            let gantry = run::run(&options).await?.to_string();
            let peer = peer_run(&dir, options.b, options.k).await?.to_string();
            for line in [gantry, peer] {
                println!("{line}");
                writeln!(file, "{line}")?;
                lines.push(serde_json::from_str::<Value>(&line)?);
            }
        }
    }
    println!("\n{}", table(&lines));
    println!("{}", verdict(&lines));
    println!("raw lines: {}", path.display());
    let failed = lines.iter().filter(|l| l["ok"] != true).count();
    if failed > 0 {
        bail!("{failed} run(s) failed their checks");
    }
    Ok(())
}
