//! A local MongoDB replica set: find or fetch `mongod`, start the members, initiate the set
//! over a direct connection (no mongosh needed) and wait until a primary takes majority writes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, error::ErrorKind};

use crate::mongod_dist::Mongod;
use crate::paths::state_dir;
use crate::process::{self, Spawned};
use crate::tools::wait_for;

/// The replica set name every local topology uses.
pub const REPLICA_SET: &str = "rs0";
/// Port of the first member; further members take the following ports.
pub const BASE_PORT: u16 = 27017;
/// Server error code for "replica set already initiated".
const ALREADY_INITIALIZED: i32 = 23;

/// Startup flavour: `test` makes TTL expiries observable within about a second.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Dev,
    Test,
}

/// One member of the local replica set and the files that belong to it.
pub struct Member {
    pub port: u16,
    pub dir: PathBuf,
}

impl Member {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("mongod.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("mongod.pid")
    }
}

/// Root of all local replica-set state.
pub fn mongodb_state_dir() -> PathBuf {
    state_dir().join("mongodb")
}

/// The members of an `nodes`-member topology; each topology keeps its own data.
pub fn members(nodes: u8) -> Vec<Member> {
    let topology = mongodb_state_dir().join(format!("{REPLICA_SET}-{nodes}node"));
    (0..u16::from(nodes))
        .map(|i| {
            let port = BASE_PORT + i;
            Member {
                port,
                dir: topology.join(port.to_string()),
            }
        })
        .collect()
}

/// The connection string for the local topology.
pub fn uri(nodes: u8) -> String {
    let hosts: Vec<String> = members(nodes)
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.port))
        .collect();
    format!("mongodb://{}/?replicaSet={REPLICA_SET}", hosts.join(","))
}

/// Server parameters of the test profile: the TTL monitor runs every second (TTL tests
/// need not wait a minute), and a transaction left open by a killed client is aborted
/// after 10 s instead of 60 s (crash tests wait for it before the replay can count).
const TEST_PARAMETERS: [(&str, i32); 2] = [
    ("ttlMonitorSleepSecs", 1),
    ("transactionLifetimeLimitSeconds", 10),
];

fn mongod_args(member: &Member, profile: Profile) -> Vec<String> {
    let mut args: Vec<String> = [
        "--replSet",
        REPLICA_SET,
        "--bind_ip",
        "127.0.0.1",
        "--port",
        &member.port.to_string(),
        "--dbpath",
        &member.data_dir().to_string_lossy(),
        // Several members share one machine; keep each one's cache modest.
        "--wiredTigerCacheSizeGB",
        "0.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if profile == Profile::Test {
        for (name, value) in TEST_PARAMETERS {
            args.extend(["--setParameter".into(), format!("{name}={value}")]);
        }
    }
    args
}

/// Starts every member that is not running yet; returns those started by this call.
pub fn start_members(mongod: &Mongod, nodes: u8, profile: Profile) -> Result<Vec<Spawned>> {
    let mut started = Vec::new();
    for member in members(nodes) {
        if process::running(&member.pid_file()).is_some() {
            continue;
        }
        if crate::tools::port_in_use(member.port) {
            bail!(
                "127.0.0.1:{} is in use by a process `cargo xtask up` did not start; stop it, \
                 or point MONGODB_URI at it to use it instead",
                member.port
            );
        }
        std::fs::create_dir_all(member.data_dir())
            .with_context(|| format!("creating {}", member.data_dir().display()))?;
        let name = format!("mongod on port {}", member.port);
        let libs = mongod.libs.as_deref().map(|l| ("LD_LIBRARY_PATH", l));
        started.push(process::spawn_detached(
            &name,
            &mongod.bin,
            &mongod_args(&member, profile),
            libs.as_slice(),
            &member.log(),
            &member.pid_file(),
        )?);
    }
    Ok(started)
}

async fn direct_client(port: u16) -> Result<Client> {
    let opts = ClientOptions::parse(format!(
        "mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000"
    ))
    .await?;
    Ok(Client::with_options(opts)?)
}

/// Initiates the set if needed and waits until a primary acknowledges a majority write.
pub async fn initiate_and_wait(
    nodes: u8,
    profile: Profile,
    spawned: &mut [Spawned],
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let members = members(nodes);
    for member in &members {
        let client = direct_client(member.port).await?;
        wait_for(
            deadline,
            spawned,
            &format!("mongod on port {} to answer", member.port),
            || {
                let client = client.clone();
                async move {
                    Ok(client
                        .database("admin")
                        .run_command(doc! {"ping": 1})
                        .await
                        .is_ok())
                }
            },
        )
        .await?;
    }
    let first = direct_client(BASE_PORT).await?;
    let config = doc! {
        "_id": REPLICA_SET,
        "members": members.iter().enumerate().map(|(i, m)| doc! {
            "_id": i as i32,
            "host": format!("127.0.0.1:{}", m.port),
        }).collect::<Vec<Document>>(),
    };
    match first
        .database("admin")
        .run_command(doc! {"replSetInitiate": config})
        .await
    {
        Ok(_) => {}
        Err(e) if command_error_code(&e) == Some(ALREADY_INITIALIZED) => {}
        Err(e) => return Err(e).context("replSetInitiate"),
    }
    if profile == Profile::Test {
        // Members started earlier with the dev profile get the test setting at runtime.
        for member in &members {
            let mut command = doc! {"setParameter": 1};
            for (name, value) in TEST_PARAMETERS {
                command.insert(name, value);
            }
            direct_client(member.port)
                .await?
                .database("admin")
                .run_command(command)
                .await
                .with_context(|| format!("setting test parameters on port {}", member.port))?;
        }
    }
    let mut opts = ClientOptions::parse(uri(nodes)).await?;
    opts.server_selection_timeout = Some(Duration::from_secs(1));
    let client = Client::with_options(opts)?;
    let probe = client
        .database("changeflow_xtask")
        .collection::<Document>("readiness");
    wait_for(
        deadline,
        spawned,
        "a primary to take majority writes",
        || {
            let probe = probe.clone();
            async move {
                Ok(probe
                    .insert_one(doc! {"at": mongodb::bson::DateTime::now()})
                    .write_concern(WriteConcern::majority())
                    .await
                    .is_ok())
            }
        },
    )
    .await
}

fn command_error_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// Checks that a user-provided MongoDB is reachable and is a replica set or mongos;
/// returns what it is and its version.
pub async fn check_external(uri: &str) -> Result<(String, String)> {
    let mut opts = ClientOptions::parse(uri)
        .await
        .context("MONGODB_URI is not a valid connection string")?;
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    let client = Client::with_options(opts)?;
    let hello = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .context("MongoDB at MONGODB_URI did not answer")?;
    let is_mongos = hello.get_str("msg").is_ok_and(|m| m == "isdbgrid");
    let build = client
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .context("MongoDB at MONGODB_URI did not answer buildInfo")?;
    let version = build.get_str("version").unwrap_or("unknown").to_owned();
    match hello.get_str("setName") {
        Ok(set) => Ok((format!("replica set {set}"), version)),
        Err(_) if is_mongos => Ok(("mongos".to_owned(), version)),
        Err(_) => bail!(
            "MongoDB at MONGODB_URI is a standalone server; change streams need a replica set \
             (start mongod with --replSet and run replSetInitiate) or a sharded cluster"
        ),
    }
}
