//! The chaos run at full length: `cargo bench --bench chaos -- --seconds 90 [--seed N]
//! [--server-default-elections]`. Needs the shared services (`cargo xtask up`) for Kafka;
//! starts its own 3-member set, electing within 2 s as the tests do, or with the server's
//! default 10 s election timeout.

#[path = "../tests/it/common/mod.rs"]
mod common;

fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    let value = args.get(i + 1)?;
    match value.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            eprintln!("{name} takes a whole number, not `{value}`");
            std::process::exit(2);
        }
    }
}

fn main() {
    let seconds = arg("--seconds").unwrap_or(90);
    let seed = arg("--seed").unwrap_or(7);
    let elections = if std::env::args().any(|a| a == "--server-default-elections") {
        common::replica_set::Elections::SERVER_DEFAULT
    } else {
        common::replica_set::Elections::FAST
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let started = std::time::Instant::now();
    let report = runtime.block_on(common::chaos::run(seconds, seed, elections));
    println!(
        "chaos run of {seconds} s (seed {seed}, electionTimeoutMillis {}), checks included {:?}",
        elections.timeout_ms,
        started.elapsed()
    );
    for line in report.lines() {
        println!("  {line}");
    }
}
