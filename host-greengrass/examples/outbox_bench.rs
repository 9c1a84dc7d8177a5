//! Outbox commit throughput: messages per second pushed durably (WAL,
//! synchronous=FULL: one fsync per commit), as the API does before each
//! answer, against SQLite without fsync as the baseline measured in the same run.
//!
//! cargo run --release -p verge-device --example outbox_bench -- [DIR] [COUNT]

use std::time::Instant;

use verge_device::outbox::Policy;
use verge_device::outbox::{Outbox, new_id};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("verge-outbox-bench")
            .display()
            .to_string()
    }));
    let count: usize = args.next().map_or(Ok(2000), |c| c.parse())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // A payload the size of a file-type result.
    let payload = vec![b'x'; 420];

    let outbox = Outbox::open(
        &dir.join("outbox.db"),
        1 << 30,
        128 << 10,
        Policy::RejectNew,
    )?;
    let t = Instant::now();
    for _ in 0..count {
        outbox.push(&new_id()?, "verge/bench/results", &payload)?;
    }
    let durable = count as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut drained = 0;
    loop {
        let batch = outbox.after(0, 32)?;
        if batch.is_empty() {
            break;
        }
        drained += batch.len();
        outbox.remove(&batch.iter().map(|m| m.seq).collect::<Vec<_>>())?;
    }
    let drain = drained as f64 / t.elapsed().as_secs_f64();

    // Baseline: the same inserts without fsync.
    let conn = rusqlite::Connection::open(dir.join("baseline.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
         CREATE TABLE m (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, topic TEXT, payload BLOB);",
    )?;
    let t = Instant::now();
    for _ in 0..count {
        conn.execute(
            "INSERT INTO m (id, topic, payload) VALUES (?1, ?2, ?3)",
            rusqlite::params![new_id()?, "verge/bench/results", payload],
        )?;
    }
    let baseline = count as f64 / t.elapsed().as_secs_f64();
    println!(
        "outbox: {count} pushes, {durable:.0} msg/s durable (fsync per commit); \
         baseline without fsync {baseline:.0} msg/s (ratio {:.2}); \
         removal after ack in batches of 32: {drain:.0} msg/s",
        durable / baseline
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
