//! A TCP proxy a test puts between changeflow and a server, to make the network fail the
//! ways real ones do: pass traffic, add latency, drop everything silently while keeping
//! the connections open (a blackhole: no error, no close, the OS would wait minutes), hold
//! everything until the fault ends (a partition that heals: TCP delivers what waited,
//! intact), or reset every connection and refuse new ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards everything.
    Pass = 0,
    /// Forwards nothing and closes nothing.
    Blackhole = 1,
    /// Closes every connection (RST) and refuses new ones.
    Reset = 2,
    /// Forwards nothing until the mode changes, then everything that waited: a network
    /// partition. Unlike a blackhole, no byte is lost, so the connections stay usable.
    Hold = 3,
}

/// `uri` with its hosts replaced by the proxy, connecting to it directly.
pub fn through(uri: &str, port: u16) -> String {
    let (scheme, rest) = uri.split_once("://").expect("a mongodb:// URI");
    let (authority, query) = rest.split_once('/').unwrap_or((rest, ""));
    let credentials = authority
        .rsplit_once('@')
        .map_or(String::new(), |(c, _)| format!("{c}@"));
    let kept: Vec<&str> = query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("replicaSet="))
        .collect();
    let mut options = vec!["directConnection=true"];
    options.extend(kept);
    format!(
        "{scheme}://{credentials}127.0.0.1:{port}/?{}",
        options.join("&")
    )
}

/// The shared server's primary (`host:port`), for a proxy in front of it.
pub async fn shared_primary() -> String {
    let hello = super::mongo()
        .await
        .database("admin")
        .run_command(mongodb::bson::doc! {"hello": 1})
        .await
        .expect("hello");
    hello
        .get_str("primary")
        .expect("the shared server names its primary")
        .to_owned()
}

/// A running proxy; dropping it stops it.
pub struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    latency_ms: Arc<AtomicU64>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free local port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("proxy address").port();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let latency_ms = Arc::new(AtomicU64::new(0));
        let (generation, _) = watch::channel(0u64);
        let (m, l, g) = (mode.clone(), latency_ms.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if m.load(Ordering::SeqCst) == Mode::Reset as u8 {
                    reset(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream.as_str()).await else {
                    reset(client);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                tokio::spawn(pipe(client, server, m.clone(), l.clone(), g.subscribe()));
            }
        });
        Proxy {
            port,
            mode,
            latency_ms,
            generation,
            task,
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Switches what happens to traffic; `Reset` also ends every open connection.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        if mode == Mode::Reset {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// Delays every chunk forwarded by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Closes `stream` with a RST (linger 0), as a crashed peer or a firewall would.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mode: Arc<AtomicU8>,
    latency_ms: Arc<AtomicU64>,
    mut generation: watch::Receiver<u64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = copy(&mut client_read, &mut server_write, &mode, &latency_ms);
    let down = copy(&mut server_read, &mut client_write, &mode, &latency_ms);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = generation.changed() => {}
    }
    if let (Ok(client), Ok(server)) = (
        client_read.reunite(client_write),
        server_read.reunite(server_write),
    ) {
        reset(client);
        reset(server);
    }
}

/// Copies `from` to `to` chunk by chunk; in a blackhole, reads and drops.
async fn copy(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mode: &AtomicU8,
    latency_ms: &AtomicU64,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        held(mode).await;
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = latency_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if mode.load(Ordering::SeqCst) == Mode::Blackhole as u8 {
            continue;
        }
        held(mode).await;
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while the proxy holds traffic.
async fn held(mode: &AtomicU8) {
    while mode.load(Ordering::SeqCst) == Mode::Hold as u8 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
