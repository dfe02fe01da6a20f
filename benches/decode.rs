//! Per-event CPU of decoding: a recorded insert and update change through `Domains::decode`,
//! and the parts of it, in ns per call. Needs no server.
//!
//!     cargo bench --bench decode
//!
//! For counts that the machine's noise does not move, run the built bench under
//! `DECODE_N=2000 valgrind --tool=callgrind` and compare instructions per call.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use changeflow::decode::{Domains, change_meta, payments};
use changeflow::domain::EventId;
use mongodb::bson::{Bson, RawDocumentBuf};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fixture(name: &str) -> RawDocumentBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/payments")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    match Bson::try_from(json) {
        Ok(Bson::Document(doc)) => {
            RawDocumentBuf::from_document(&doc).unwrap_or_else(|e| panic!("{e}"))
        }
        other => panic!("{name}: not a document: {other:?}"),
    }
}

fn time(label: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let began = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let ns = began.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("{label:<44} {ns:>8.0} ns");
}

fn main() {
    // DECODE_N=2000 keeps a run under `valgrind --tool=callgrind` short: instruction counts
    // do not depend on what else the machine is doing, unlike these timings.
    let n = match std::env::var("DECODE_N") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("DECODE_N=`{v}` is not a whole number")),
        Err(_) => 200_000,
    };
    let insert = fixture("insert_pending");
    let update = fixture("update_confirmed");
    let ns = insert.get_document("ns").unwrap_or_else(|e| panic!("{e}"));
    let domains = Domains::new(
        ns.get_str("db").unwrap_or_else(|e| panic!("{e}")),
        ns.get_str("coll").unwrap_or_else(|e| panic!("{e}")),
    );
    time("clone raw insert (what the driver hands over)", n, || {
        black_box(insert.clone());
    });
    time("Domains::decode(insert), clone included", n, || {
        black_box(domains.decode(insert.clone()));
    });
    time("Domains::decode(update), clone included", n, || {
        black_box(domains.decode(update.clone()));
    });
    time("payments::decode(insert)", n, || {
        black_box(payments::decode(&insert).ok());
    });
    time("change_meta(insert)", n, || {
        black_box(change_meta(&insert).ok());
    });
    time("EventId::from_token_data", n, || {
        black_box(EventId::from_token_data(black_box(
            "826B020F61000000032B022C0100296E5A1004A1B2C3D4E5F60718293A4B5C6D7E8F463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046",
        )));
    });
}
