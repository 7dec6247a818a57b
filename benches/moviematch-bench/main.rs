//! moviematch-bench: the daemon side by side with Redis, same machine, same run, same client.
//!
//! `cargo bench --bench moviematch-bench -- [--quick] [--only TEXT] [--client-threads N]
//! [--rooms N] [--csv FILE] [--svg FILE]`
//!
//! Starts its own daemons (file storage in a temporary directory, strict and relaxed, and one
//! with `storageType: redis`) and its own redis-servers on Unix sockets (`appendfsync always` and
//! `everysec`), runs every workload against both through one client (`wire.rs`), and prints one
//! throughput table per client setting (its tokio runtime on 1 thread, then on 2): ops/s, p50
//! and p99 latency, each server's and the client's CPU per request, and the ratio ours / Redis
//! (higher is better for us). Each table ends with a check of the client against
//! `redis-benchmark` on the same Redis (`check.rs`). Then single numbers (`memory.rs`,
//! `rows.rs`): memory with 100,000 rooms of 5 KB (loaded from files, and saved through the
//! socket then folded), start-up, a stop right after a burst of saves, and `addRating` as one
//! media's ratings grow; and `listRooms` with `summary` over 10,000 rooms. Numbers drift on
//! shared machines; the ratios and the CPU per request, taken in one run, are what to compare.

mod check;
mod memory;
mod procs;
mod report;
mod rows;
mod wire;
mod work;

use std::path::Path;
use std::time::Duration;

use crate::report::{Report, Row};
use crate::work::{measure, Work};

struct Options {
    quick: bool,
    csv: std::path::PathBuf,
    svg: Option<std::path::PathBuf>,
    /// Only the workloads whose name or mode contains this text (`--only saveRoom`).
    only: Option<String>,
    /// The client runtime's threads, one table each (`--client-threads 1`; default 1 and 2).
    client_threads: Vec<usize>,
    /// Rooms of the memory, start-up and stop rows (`--rooms N`; default 100,000, 10,000 quick).
    rooms: Option<usize>,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        quick: false,
        csv: std::path::PathBuf::from("target/bench/moviematch-bench.csv"),
        svg: None,
        only: None,
        client_threads: vec![1, 2],
        rooms: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--csv" => options.csv = args.next().expect("--csv FILE").into(),
            "--svg" => options.svg = Some(args.next().expect("--svg FILE").into()),
            "--only" => options.only = Some(args.next().expect("--only TEXT")),
            "--client-threads" => {
                let n = args.next().and_then(|n| n.parse().ok());
                options.client_threads = vec![n.filter(|&n| n > 0).expect("--client-threads N")];
            }
            "--rooms" => {
                let n = args.next().and_then(|n| n.parse().ok());
                options.rooms = Some(n.filter(|&n| n > 0).expect("--rooms N"));
            }
            // `cargo bench` passes --bench; ignore anything else it adds.
            _ => {}
        }
    }
    options
}

/// Whether `--only` lets a row whose name is `what` run.
pub fn wanted(only: Option<&str>, what: &str) -> bool {
    only.is_none_or(|only| what.contains(only))
}

/// How long each side of a throughput row is driven.
pub fn row_duration(quick: bool) -> Duration {
    Duration::from_millis(if quick { 150 } else { 3000 })
}

async fn throughput(report: &mut Report, quick: bool, only: Option<&str>, dir: &Path) {
    let duration = row_duration(quick);
    let shapes: &[(usize, usize)] = &[(1, 1), (50, 1), (50, 16)];
    for (mode, appendfsync) in [("strict", "always"), ("relaxed", "everysec")] {
        let ours_dir = dir.join(format!("ours-{mode}"));
        let redis_dir = dir.join(format!("redis-{appendfsync}"));
        std::fs::create_dir_all(&ours_dir).unwrap();
        std::fs::create_dir_all(&redis_dir).unwrap();
        let (ours, _) = procs::daemon(&ours_dir, mode).await;
        let (redis, _) = procs::redis(&redis_dir, appendfsync).await;
        let mut works = vec![
            Work::Save { kb: 5 },
            Work::Save { kb: 100 },
            Work::Rate { kb: 5 },
            Work::Rate { kb: 100 },
        ];
        if mode == "strict" {
            works.splice(0..0, [Work::Get5k, Work::Has]);
        }
        for work in works {
            let label = match work {
                Work::Get5k | Work::Has => String::new(),
                _ => format!("{mode} vs appendfsync {appendfsync}"),
            };
            for &(clients, depth) in shapes {
                let what = format!("{} {label} {clients}x{depth};", work.name());
                if !wanted(only, &what) {
                    continue;
                }
                work.prepare(&ours, &redis, clients).await;
                let a = measure(&ours, work, clients, depth, duration).await;
                let b = measure(&redis, work, clients, depth, duration).await;
                report.push(Row::throughput(&work.name(), &label, clients, depth, a, b));
            }
        }
        ours.stop();
        redis.stop();
        let _ = std::fs::remove_dir_all(&ours_dir);
        let _ = std::fs::remove_dir_all(&redis_dir);
    }
}

fn main() {
    let options = options();
    let dir = tempfile::Builder::new()
        .prefix("mm-bench-")
        .tempdir()
        .unwrap();
    let only = options.only.as_deref();
    let mut report = Report::default();
    for &threads in &options.client_threads {
        // One thread: everything the client does runs on the thread that drives it, as in
        // redis-benchmark; more: a multi-thread runtime with that many workers.
        let runtime = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        .enable_all()
        .build()
        .unwrap();
        report.client_threads = threads;
        eprintln!("client on {threads} thread(s)");
        runtime.block_on(async {
            throughput(&mut report, options.quick, only, dir.path()).await;
            rows::redis_backend(&mut report, options.quick, only, dir.path()).await;
            check::redis_benchmark(&mut report, options.quick, only, dir.path()).await;
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rooms = options
            .rooms
            .unwrap_or(if options.quick { 10_000 } else { 100_000 });
        if wanted(only, "start-up") {
            memory::from_files(&mut report, rooms, dir.path()).await;
        }
        if wanted(only, "memory through the socket") {
            memory::through_socket(&mut report, rooms, options.quick, dir.path()).await;
        }
        if wanted(only, "stop after a burst") {
            // Few rooms in --quick: CI runs it, and each dirty room may cost a sync at a stop.
            let rooms = if options.quick {
                rooms.min(2_000)
            } else {
                rooms
            };
            memory::stop_after_burst(&mut report, rooms, dir.path()).await;
        }
        if wanted(only, "growing ratings") {
            rows::growing_ratings(&mut report, options.quick, dir.path()).await;
        }
        if wanted(only, "listRooms") {
            rows::list_summary(&mut report, dir.path()).await;
        }
    });
    print!("{}", report.markdown());
    report.write_csv(&options.csv).expect("write the CSV");
    println!("\nCSV: {}", options.csv.display());
    if let Some(svg) = &options.svg {
        report.write_svg(svg).expect("write the SVG");
        println!("SVG: {}", svg.display());
    }
    // Removed now: exit() below would leave it behind.
    drop(dir);
    if !report.failures.is_empty() {
        println!("\nFailed checks:");
        for failure in &report.failures {
            println!("- {failure}");
        }
        std::process::exit(1);
    }
}
