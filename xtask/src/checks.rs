//! `cargo xtask test`: every check CI runs, in the order that fails fastest, with timings.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::mongo::Profile;
use crate::mongod_dist::Version;
use crate::services::{self, DownOptions, UpOptions};
use crate::tools::find_on_path;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs a command with inherited output; Ok(false) when it ran and failed.
fn run_step(what: &str, cmd: &mut Command) -> Result<bool> {
    eprintln!("==> {what}");
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    Ok(status.success())
}

struct Timings(Vec<(String, f64)>);

impl Timings {
    fn time<T>(&mut self, step: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.0
            .push((step.to_owned(), start.elapsed().as_secs_f64()));
        out
    }

    fn print(&self) {
        let total: f64 = self.0.iter().map(|(_, s)| s).sum();
        let steps: Vec<String> = self.0.iter().map(|(n, s)| format!("{n} {s:.0}s")).collect();
        eprintln!("timings: {} (total {total:.0}s)", steps.join(", "));
    }
}

/// fmt, clippy, compose validation, services up (test profile), cargo test, and services
/// down again when this run started them.
pub async fn run_all(
    keep_services: bool,
    mongodb_version: Option<Version>,
    cargo_test_args: &[String],
) -> Result<ExitCode> {
    let mongodb_version = match mongodb_version {
        Some(v) => v,
        None => Version::from_env()?,
    };
    let mut timings = Timings(Vec::new());
    let fmt_ok = timings.time("fmt", || {
        run_step(
            "cargo fmt --check",
            cargo().args(["fmt", "--all", "--", "--check"]),
        )
    })?;
    if !fmt_ok {
        bail!("formatting differs: run `cargo fmt --all`");
    }
    let clippy_ok = timings.time("clippy", || {
        run_step(
            "cargo clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ]),
        )
    })?;
    if !clippy_ok {
        bail!("clippy reported problems (see above)");
    }
    timings.time("compose", validate_compose_file)?;

    eprintln!("==> services up (test profile)");
    let start = Instant::now();
    let endpoints = services::up(UpOptions {
        profile: Some(Profile::Test),
        mongodb_version: Some(mongodb_version),
        ..UpOptions::default()
    })
    .await?;
    timings
        .0
        .push(("services".into(), start.elapsed().as_secs_f64()));

    // Some tests run a broker of their own (memory storage, behind a proxy they cut).
    let tansu = crate::kafka::locate_tansu(crate::kafka::Storage::Memory)
        .context("locating tansu for the tests that run their own broker")?;
    // The credentials and oplog-wrap tests start their own mongod with access control.
    let mongod = crate::mongod_dist::locate(mongodb_version)
        .context("locating mongod for the tests that start their own")?;
    eprintln!(
        "==> tests run against mongod {} (own servers: {})",
        endpoints.mongodb_version,
        mongod.launcher().display()
    );
    let tests_ok = timings.time("cargo test", || {
        run_step(
            "cargo test",
            cargo()
                .args(["test", "--workspace", "--locked", "--no-fail-fast"])
                .args(cargo_test_args)
                .env("MONGODB_URI", &endpoints.mongodb_uri)
                .env("KAFKA_BROKERS", &endpoints.kafka_brokers)
                .env("TANSU_BIN", &tansu.bin)
                .env("MONGOD_BIN", mongod.launcher()),
        )
    });

    if !keep_services && (endpoints.started_mongodb || endpoints.started_kafka) {
        eprintln!("==> stopping the services this run started");
        services::down(DownOptions {
            mongodb: endpoints.started_mongodb,
            kafka: endpoints.started_kafka,
            wipe: false,
        })?;
    }
    timings.print();
    if tests_ok? {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("cargo test failed (see above)");
        Ok(ExitCode::FAILURE)
    }
}

/// Validates docker-compose.yml with Docker Compose's own parser (no engine needed).
fn validate_compose_file() -> Result<()> {
    let compose = compose_command()?;
    let mut cmd = Command::new(&compose[0]);
    cmd.args(&compose[1..])
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(workspace_root());
    if !run_step("docker-compose.yml validation", &mut cmd)? {
        bail!("docker-compose.yml is not a valid Compose file (see above)");
    }
    Ok(())
}

/// `docker compose` (plugin) or `docker-compose`; installed from Debian's package when
/// neither exists and we may use apt-get (root), as on a fresh CI machine.
fn compose_command() -> Result<Vec<String>> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    if find_on_path("docker-compose").is_some() {
        return Ok(vec!["docker-compose".into()]);
    }
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if is_root && find_on_path("apt-get").is_some() {
        eprintln!("==> installing Debian's docker-compose (only its `config` check is used)");
        let installed = run_step(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )? && run_step(
            "apt-get install docker-compose",
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "docker-compose",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        if installed && find_on_path("docker-compose").is_some() {
            return Ok(vec!["docker-compose".into()]);
        }
        bail!("installing docker-compose with apt-get failed (see above)");
    }
    bail!(
        "validating docker-compose.yml needs Docker Compose: install Docker's compose plugin \
         or the `docker-compose` package (apt-get install docker-compose), then rerun"
    )
}
