//! `up`, `down` and `status` over both local services, and the record of what `up` started.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::kafka::{self, Storage};
use crate::mongo::{self, Profile};
use crate::mongod_dist::{self, Mongod, Version};
use crate::paths::{non_empty_env, state_dir};
use crate::process;

/// What `up` started locally; external services (env vars) are never recorded.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    mongodb: Option<MongoRecord>,
    kafka: Option<KafkaRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MongoRecord {
    nodes: u8,
    profile: Profile,
    mongod: PathBuf,
    /// `LD_LIBRARY_PATH` the members were started with.
    #[serde(default)]
    mongod_libs: Option<PathBuf>,
    version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KafkaRecord {
    storage: Storage,
    tansu: PathBuf,
    #[serde(default)]
    version: String,
    /// Prebuilt, built from source, or named by the user.
    #[serde(default)]
    origin: String,
}

fn record_path() -> PathBuf {
    state_dir().join("services.json")
}

impl Record {
    fn load() -> Result<Record> {
        match std::fs::read_to_string(record_path()) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("reading {}", record_path().display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", record_path().display())),
        }
    }

    fn save(&self) -> Result<()> {
        std::fs::write(record_path(), serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", record_path().display()))
    }

    /// The recorded topology when at least one of its members is still running.
    fn live_mongodb(&self) -> Option<&MongoRecord> {
        self.mongodb.as_ref().filter(|m| {
            mongo::members(m.nodes)
                .iter()
                .any(|member| process::running(&member.pid_file()).is_some())
        })
    }

    fn live_kafka(&self) -> Option<&KafkaRecord> {
        self.kafka
            .as_ref()
            .filter(|_| process::running(&kafka::pid_file()).is_some())
    }
}

/// Serialises `up` and `down` across processes.
fn lock_state() -> Result<File> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = File::create(dir.join("lock"))?;
    lock.lock().context("locking the service state")?;
    Ok(lock)
}

/// What `up` asks for; `None` keeps what is running (or takes the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct UpOptions {
    pub nodes: Option<u8>,
    pub profile: Option<Profile>,
    pub storage: Option<Storage>,
    /// The server build; `None` takes `MONGODB_VERSION`, else the default.
    pub mongodb_version: Option<Version>,
}

/// Where the services are and which of them this call started.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub mongodb_uri: String,
    /// The server version, as the server reports it.
    pub mongodb_version: String,
    pub kafka_brokers: String,
    pub started_mongodb: bool,
    pub started_kafka: bool,
}

/// Starts whatever is not running yet and waits until both services serve requests.
pub async fn up(opts: UpOptions) -> Result<Endpoints> {
    let _lock = lock_state()?;
    let mut record = Record::load()?;
    let mut spawned = Vec::new();

    let mongodb_uri;
    let mongodb_version;
    let mut mongo_plan = None;
    if let Some(uri) = non_empty_env("MONGODB_URI") {
        let (kind, version) = mongo::check_external(&uri).await?;
        eprintln!("MongoDB: using MONGODB_URI ({kind}, MongoDB {version})");
        mongodb_uri = uri;
        mongodb_version = version;
    } else {
        let running = record.live_mongodb().cloned();
        let nodes = match (&running, opts.nodes) {
            (Some(r), Some(n)) if r.nodes != n => bail!(
                "a {}-member replica set is running; stop it with `cargo xtask down` before \
                 starting a {n}-member one",
                r.nodes
            ),
            (Some(r), _) => r.nodes,
            (None, n) => n.unwrap_or(1),
        };
        // A running set asked for the test profile gets its parameters at runtime.
        let profile = opts
            .profile
            .or(running.as_ref().map(|r| r.profile))
            .unwrap_or(Profile::Dev);
        let mongod = match &running {
            Some(r) => Mongod {
                bin: r.mongod.clone(),
                libs: r.mongod_libs.clone(),
            },
            None => mongod_dist::locate(match opts.mongodb_version {
                Some(v) => v,
                None => Version::from_env()?,
            })?,
        };
        let version = mongod.version()?;
        if let (Some(r), Some(wanted)) = (&running, opts.mongodb_version)
            && Some(wanted) != Version::named(&r.version)
        {
            bail!(
                "mongod {} is running; stop it with `cargo xtask down --mongodb` before \
                 starting {}",
                r.version,
                wanted.label()
            );
        }
        let started = mongo::start_members(&mongod, nodes, profile)?;
        if !started.is_empty() {
            eprintln!(
                "MongoDB: starting {} of {nodes} member(s) of replica set {} (mongod {version}, \
                 profile {profile:?})",
                started.len(),
                mongo::REPLICA_SET
            );
        }
        spawned.extend(started);
        record.mongodb = Some(MongoRecord {
            nodes,
            profile,
            mongod: mongod.bin,
            mongod_libs: mongod.libs,
            version: version.clone(),
        });
        mongodb_version = version;
        record.save()?;
        mongodb_uri = mongo::uri(nodes);
        mongo_plan = Some((nodes, profile));
    }
    let mongo_spawned = spawned.len();

    let kafka_brokers;
    if let Some(brokers) = non_empty_env("KAFKA_BROKERS") {
        kafka::check_external(&brokers)?;
        eprintln!("Kafka: using KAFKA_BROKERS");
        kafka_brokers = brokers;
    } else {
        let running = record.live_kafka().cloned();
        if let (Some(r), Some(s)) = (&running, opts.storage)
            && r.storage != s
        {
            bail!(
                "the broker is running with {:?} storage; stop it with `cargo xtask down` \
                 before starting it with {s:?} storage",
                r.storage
            );
        }
        let storage = running
            .as_ref()
            .map(|r| r.storage)
            .or(opts.storage)
            .unwrap_or(Storage::Memory);
        let tansu = match &running {
            Some(r) => kafka::Tansu {
                bin: r.tansu.clone(),
                origin: r.origin.clone(),
            },
            None => kafka::locate_tansu(storage)?,
        };
        if let Some(s) = kafka::start(&tansu.bin, storage)? {
            eprintln!(
                "Kafka: starting tansu ({storage:?} storage, {})",
                tansu.origin
            );
            spawned.push(s);
        }
        let version = kafka::tansu_version(&tansu.bin)?;
        record.kafka = Some(KafkaRecord {
            storage,
            tansu: tansu.bin,
            version,
            origin: tansu.origin,
        });
        record.save()?;
        kafka_brokers = kafka::brokers();
    }
    let started_kafka = spawned.len() > mongo_spawned;

    if let Some((nodes, profile)) = mongo_plan {
        mongo::initiate_and_wait(nodes, profile, &mut spawned, Duration::from_secs(120)).await?;
    }
    if non_empty_env("KAFKA_BROKERS").is_none() {
        kafka::wait_ready(&kafka_brokers, &mut spawned, Duration::from_secs(60)).await?;
    }
    Ok(Endpoints {
        mongodb_uri,
        mongodb_version,
        kafka_brokers,
        started_mongodb: mongo_spawned > 0,
        started_kafka,
    })
}

/// Which services `down` stops.
#[derive(Debug, Clone, Copy)]
pub struct DownOptions {
    pub mongodb: bool,
    pub kafka: bool,
    /// Also delete the data directories.
    pub wipe: bool,
}

/// Stops what `up` started (by pid file), optionally deleting its data.
pub fn down(opts: DownOptions) -> Result<()> {
    let _lock = lock_state()?;
    let mut record = Record::load()?;
    if opts.mongodb {
        // Every topology ever started, not only the recorded one: nothing of ours is left.
        for nodes in recorded_topologies()? {
            for member in mongo::members(nodes) {
                report_stop(
                    &format!("mongod on port {}", member.port),
                    &member.pid_file(),
                    Duration::from_secs(60),
                )?;
            }
        }
        record.mongodb = None;
        if opts.wipe {
            remove_dir(&mongo::mongodb_state_dir())?;
        }
    }
    if opts.kafka {
        report_stop("tansu broker", &kafka::pid_file(), Duration::from_secs(15))?;
        record.kafka = None;
        if opts.wipe {
            remove_dir(&kafka::kafka_state_dir())?;
        }
    }
    record.save()
}

fn report_stop(name: &str, pid_file: &Path, grace: Duration) -> Result<()> {
    if process::stop(pid_file, grace)? {
        eprintln!("stopped {name}");
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {
            eprintln!("deleted {}", dir.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {}", dir.display())),
    }
}

/// Member counts of every topology directory under the MongoDB state directory.
fn recorded_topologies() -> Result<Vec<u8>> {
    let dir = mongo::mongodb_state_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let prefix = format!("{}-", mongo::REPLICA_SET);
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)?
                .strip_suffix("node")?
                .parse()
                .ok()
        })
        .collect())
}

/// Prints what is running, where its logs are, and how to point a shell at it.
pub fn status() -> Result<bool> {
    let record = Record::load()?;
    let mut all_up = true;
    println!("state directory: {}", state_dir().display());
    if non_empty_env("MONGODB_URI").is_some() {
        println!("MongoDB  external (MONGODB_URI is set)");
    } else if let Some(m) = &record.mongodb {
        println!(
            "MongoDB  replica set {}, {} member(s), profile {:?}, mongod {} ({})",
            mongo::REPLICA_SET,
            m.nodes,
            m.profile,
            m.version,
            m.mongod.display()
        );
        println!("  uri    {}", mongo::uri(m.nodes));
        for member in mongo::members(m.nodes) {
            let state = match process::running(&member.pid_file()) {
                Some(p) => format!("running (pid {})", p.pid),
                None => {
                    all_up = false;
                    "stopped".to_owned()
                }
            };
            println!("  {}  {state}  log {}", member.port, member.log().display());
        }
    } else {
        all_up = false;
        println!("MongoDB  not started (`cargo xtask up`)");
    }
    if non_empty_env("KAFKA_BROKERS").is_some() {
        println!("Kafka    external (KAFKA_BROKERS is set)");
    } else if let Some(k) = &record.kafka {
        let state = match process::running(&kafka::pid_file()) {
            Some(p) => format!("running (pid {})", p.pid),
            None => {
                all_up = false;
                "stopped".to_owned()
            }
        };
        println!(
            "Kafka    {}, {:?} storage, {} ({})",
            k.version,
            k.storage,
            if k.origin.is_empty() {
                "origin not recorded"
            } else {
                &k.origin
            },
            k.tansu.display()
        );
        println!("  brokers {}", kafka::brokers());
        println!("  {state}  log {}", kafka::log_file().display());
    } else {
        all_up = false;
        println!("Kafka    not started (`cargo xtask up`)");
    }
    Ok(all_up)
}
