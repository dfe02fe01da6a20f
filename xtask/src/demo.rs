//! `cargo xtask demo`: build changeflow while the services start, then run `changeflow demo`,
//! the real pipeline with all handlers under a small load. One line per phase, with the
//! time since the start, so a first run says where its minutes go.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::checks::workspace_root;
use crate::mongo::Profile;
use crate::process::log_tail;
use crate::services::{self, UpOptions};

/// Prints phase lines stamped with the time since the demo started.
struct Phases(Instant);

impl Phases {
    fn say(&self, what: impl std::fmt::Display) {
        eprintln!("[{:>6.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

/// Starts the build of the `changeflow` binary, then the services, then runs
/// `changeflow demo --payments <payments>` against them.
pub async fn run(payments: u32) -> Result<ExitCode> {
    let phases = Phases(Instant::now());
    let log = build_log();
    phases.say(format!(
        "building changeflow in the background (the first build compiles its dependencies: \
         minutes; log {})",
        log.display()
    ));
    let build = std::thread::spawn({
        let log = log.clone();
        move || build_changeflow(&log)
    });
    // The test profile (set at runtime on a running set): the TTL monitor runs every
    // second, so the workload's expiring threads go within a second, not up to a minute.
    let endpoints = services::up(UpOptions {
        profile: Some(Profile::Test),
        ..UpOptions::default()
    })
    .await
    .context("starting MongoDB and Kafka")?;
    phases.say(format!(
        "services ready: MongoDB {} at {}, Kafka at {}",
        endpoints.mongodb_version, endpoints.mongodb_uri, endpoints.kafka_brokers
    ));
    let binary = match build.join() {
        Ok(result) => result?,
        Err(_) => bail!("the build thread panicked"),
    };
    phases.say("changeflow built; running `changeflow demo`");
    let status = tokio::process::Command::new(&binary)
        .args(["demo", "--payments", &payments.to_string()])
        .current_dir(workspace_root())
        .env("CHANGEFLOW_MONGODB_URI", &endpoints.mongodb_uri)
        .env("CHANGEFLOW_KAFKA_BROKERS", &endpoints.kafka_brokers)
        .status()
        .await
        .with_context(|| format!("running {}", binary.display()))?;
    phases.say(format!("demo finished ({status})"));
    eprintln!("the services keep running: `cargo xtask down` stops them");
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where the background build writes its output.
fn build_log() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("demo-build.log")
}

/// `cargo build --bin changeflow` (only the binary the demo runs, not the tests or the
/// benches), its output in `log`; returns the executable cargo reports.
fn build_changeflow(log: &std::path::Path) -> Result<PathBuf> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--locked", "--bin", "changeflow"])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .context("starting cargo build")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut executable = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "changeflow"
            && let Some(path) = message["executable"].as_str()
        {
            executable = Some(PathBuf::from(path));
        }
    }
    let status = child.wait()?;
    match executable {
        Some(path) if status.success() => Ok(path),
        _ => bail!(
            "building changeflow failed ({status}); log {}\n--- last lines ---\n{}",
            log.display(),
            log_tail(log, 30)
        ),
    }
}
