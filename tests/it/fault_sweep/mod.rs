//! The fault-injection sweep of the real binary (issue 15): every file-system call the file
//! backend makes is failed, in turn, while the daemon works, and five promises are checked after
//! each case.
//!
//! A case is one daemon on a copy of a seed directory. Three clients write (saveRoom, addRating,
//! deleteRoom) while `strace -p` is attached to the daemon and fails one system call on the
//! storage directory's files (`-P`), with one errno, at the calls `when=` selects: the Nth
//! (`once`), a `burst` of consecutive calls, or every call `until` strace detaches, which is how
//! the fault ends. The phase says what the daemon is doing meanwhile: serving writes, folding
//! (every upkeep tick, through the test-only `STORAGED_TEST_FOLD_INTERVAL_MS`), starting up
//! (strace is attached before `exec`), re-reading on SIGHUP, or stopping cleanly.
//!
//! Checked for every case:
//! 1. no `ok` for a change that is not durable (strict) or that a clean stop cannot write:
//!    the clients' model of acknowledged changes must match what the daemon serves, after a
//!    `kill -9` and restart and in the files after a clean stop;
//! 2. within 2 s of the fault's end a saveRoom and a flush succeed, without a restart;
//! 3. after `kill -9` and a restart, every acknowledged change is there and no refused one;
//! 4. a clean stop after the fault exits 0 with every room in its file and no `.tmp-*` left;
//! 5. the daemon never exits or panics on an I/O error (a start-up it cannot complete exits
//!    non-zero, never 101), and every refusal is a `storage` error naming the file and the OS
//!    error.
//!
//! `short_sweep` runs in CI; `full_sweep` (ignored; `bash .ci/fault-sweep`) runs every case.
//! `FAULT_SWEEP_FILTER=substring` picks cases by name, `FAULT_SWEEP_JOBS` sets how many run at
//! once (default 2). Every bug the sweep found is kept below as a named regression case.

mod cases;
mod harness;
mod workload;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cases::{Case, Mode, Phase};
use harness::{Bed, Fault};
use workload::{Model, Tally, Writers};

/// How long writes may keep failing after the fault ended (invariant 2).
const HEAL_WITHIN: Duration = Duration::from_secs(2);

/// The seed directories every case starts from, made once per test process.
struct Seeds {
    /// Room files only, after a clean stop.
    files: tempfile::TempDir,
    model: Model,
    /// Room files plus a journal to replay (a `kill -9` after more changes): start-up folds.
    journaled: tempfile::TempDir,
    journaled_model: Model,
}

static SEEDS: OnceLock<Seeds> = OnceLock::new();

/// A static is never dropped: the seed directories are removed when the test process exits.
extern "C" fn remove_seeds() {
    if let Some(seeds) = SEEDS.get() {
        let _ = std::fs::remove_dir_all(seeds.files.path());
        let _ = std::fs::remove_dir_all(seeds.journaled.path());
    }
}

fn seeds() -> &'static Seeds {
    SEEDS.get_or_init(|| {
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(remove_seeds) };
        let mut bed = Bed::new(None, &[], &[]);
        bed.start();
        let model = Model::seed(&mut bed.connect());
        stop_cleanly(&mut bed);
        let files = snapshot(&bed);
        bed.start();
        let mut journaled_model = model.clone();
        let mut c = bed.connect();
        for name in ["s0", "c1"] {
            let body = workload::room(name, 1000);
            let rev = c.save(&body);
            journaled_model.rooms.insert(name.into(), Some((body, rev)));
        }
        bed.kill9();
        Seeds {
            files,
            model,
            journaled: snapshot(&bed),
            journaled_model,
        }
    })
}

fn snapshot(bed: &Bed) -> tempfile::TempDir {
    let dir = harness::keep_if_asked(tempfile::Builder::new().prefix("mm-image-"))
        .tempdir()
        .expect("create a temp dir");
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(bed.storage.join("."))
        .arg(dir.path())
        .output()
        .expect("run cp");
    assert!(
        out.status.success(),
        "copy {}: {}",
        bed.storage.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn stop_cleanly(bed: &mut Bed) {
    bed.signal(libc::SIGTERM);
    let status = bed.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "a clean stop after the fault: {status}; stderr:\n{}",
        bed.stderr()
    );
}

/// What one case did, for the sweep's summary.
struct Outcome {
    injected: usize,
    acked: usize,
    refused: usize,
    healed: Duration,
}

/// Runs one case; panics with the broken promise.
fn run_case(case: &Case) -> Outcome {
    let seeds = seeds();
    let mut args = Vec::new();
    if case.relaxed {
        args.extend(["--durability", "relaxed", "--flush-interval-ms", "200"]);
    }
    let mut env = Vec::new();
    if case.phase == Phase::Fold {
        env.push(("STORAGED_TEST_FOLD_INTERVAL_MS", "0"));
    }
    let (seed, mut model) = match case.phase {
        Phase::Startup => (&seeds.journaled, seeds.journaled_model.clone()),
        _ => (&seeds.files, seeds.model.clone()),
    };
    let mut bed = Bed::new(Some(seed.path()), &args, &env);
    let mut tally = Tally::default();
    let window = case.window();
    let (syscalls, errno, when) = (case.syscalls, case.errno, case.when());

    let injected = match case.phase {
        Phase::Startup => {
            bed.spawn(true);
            let fault = Fault::attach(&bed, syscalls, errno, &when);
            bed.signal(libc::SIGCONT);
            let ready = bed.wait_ready(Duration::from_secs(30));
            if ready {
                let writers = Writers::start(&bed.socket, &bed.storage, &model);
                std::thread::sleep(window);
                let injected = fault.end();
                healed_or_panic(&bed, &mut model, &mut tally, writers);
                injected
            } else {
                let injected = fault.end();
                let status = bed.wait_exit(Duration::from_secs(10));
                refused_start(&bed, status);
                bed.start();
                injected
            }
        }
        Phase::Stop => {
            bed.start();
            let writers = Writers::start(&bed.socket, &bed.storage, &model);
            std::thread::sleep(Duration::from_millis(300));
            writers.stop(&mut model, &mut tally);
            let fault = Fault::attach(&bed, syscalls, errno, &when);
            bed.signal(libc::SIGTERM);
            let start = Instant::now();
            while bed.running() && start.elapsed() < window {
                std::thread::sleep(Duration::from_millis(10));
            }
            let injected = fault.end();
            let status = bed.wait_exit(Duration::from_secs(30));
            if status.code() != Some(0) {
                refused_stop(&bed, status);
            }
            bed.start();
            injected
        }
        Phase::Workload | Phase::Fold | Phase::Sighup => {
            bed.start();
            let writers = Writers::start(&bed.socket, &bed.storage, &model);
            std::thread::sleep(Duration::from_millis(200));
            let fault = Fault::attach(&bed, syscalls, errno, &when);
            if case.phase == Phase::Sighup {
                bed.signal(libc::SIGHUP);
            }
            std::thread::sleep(window);
            let injected = fault.end();
            healed_or_panic(&bed, &mut model, &mut tally, writers);
            injected
        }
    };
    let healed = match workload::heal(&bed.socket, &bed.storage, &mut model, HEAL_WITHIN) {
        Ok(took) => took,
        Err(e) => panic!("invariant 2: {e}\nstderr:\n{}", bed.stderr()),
    };
    assert!(
        bed.running(),
        "invariant 5: the daemon exited; stderr:\n{}",
        bed.stderr()
    );
    assert!(
        tally.violations.is_empty(),
        "invariant 5: {:?}\nstderr:\n{}",
        tally.violations,
        bed.stderr()
    );
    if let Err(e) = workload::check_rooms(&mut bed.connect(), &model) {
        panic!("invariant 1 (live): {e}\nstderr:\n{}", bed.stderr());
    }

    if case.relaxed {
        bed.connect().ok(serde_json::json!({"op": "flush"}));
    }
    // What a `kill -9` now would leave: the directory copied while the daemon is stopped.
    bed.freeze();
    let crash = snapshot(&bed);
    bed.thaw();
    let own_temps = harness::temp_files(crash.path())
        .into_iter()
        .filter(|n| !n.starts_with(".tmp-clock-") && !n.starts_with(".tmp-cache-"))
        .count();
    // A fold in progress holds a temporary file for each room it writes and one for the index
    // (they are synced together, then renamed); more are failed folds' leftovers.
    let one_fold = model.rooms.len() + 1;
    assert!(
        own_temps <= one_fold,
        "invariant 4: {own_temps} temporary files pile up while the daemon runs (one fold writes at most {one_fold})"
    );

    // The faulted daemon itself stops cleanly, every room in its file.
    stop_cleanly(&mut bed);
    if let Err(e) = workload::check_files(&bed.storage, &model) {
        panic!("invariant 4: {e}\nstderr:\n{}", bed.stderr());
    }
    let logs = bed.all_stderr();
    if let Some(line) = logs.lines().find(|l| l.contains("panicked")) {
        panic!("invariant 5: a panic in the logs: {line}");
    }

    // A restart on the crash image serves every acknowledged change and no refused one.
    let mut bed = Bed::new(Some(crash.path()), &args, &[]);
    bed.start();
    if let Err(e) = workload::check_rooms(&mut bed.connect(), &model) {
        panic!(
            "invariant 3 (after kill -9): {e}\nstderr:\n{}",
            bed.stderr()
        );
    }
    stop_cleanly(&mut bed);
    if let Err(e) = workload::check_files(&bed.storage, &model) {
        panic!(
            "invariant 4 (after kill -9): {e}\nstderr:\n{}",
            bed.stderr()
        );
    }
    let logs = bed.all_stderr();
    if let Some(line) = logs.lines().find(|l| l.contains("panicked")) {
        panic!("invariant 5: a panic in the logs: {line}");
    }
    Outcome {
        injected,
        acked: tally.acked,
        refused: tally.refused,
        healed,
    }
}

/// Invariant 2 while the writers still run, then stops them.
fn healed_or_panic(bed: &Bed, model: &mut Model, tally: &mut Tally, writers: Writers) {
    let healed = workload::heal(&bed.socket, &bed.storage, model, HEAL_WITHIN);
    std::thread::sleep(Duration::from_millis(100));
    writers.stop(model, tally);
    if let Err(e) = healed {
        panic!("invariant 2: {e}\nstderr:\n{}", bed.stderr());
    }
}

/// A start-up the fault made impossible: exit non-zero (not a panic) with the file and the
/// OS error in the log.
fn refused_start(bed: &Bed, status: std::process::ExitStatus) {
    let log = bed.stderr();
    assert!(
        status.code().is_some_and(|c| c != 0 && c != 101),
        "invariant 5: a start-up that failed must exit non-zero without a panic: {status}\n{log}"
    );
    assert!(
        log.contains(&bed.storage.display().to_string()) && log.contains("os error"),
        "invariant 5: the start-up error must name the file and the OS error:\n{log}"
    );
}

/// A clean stop during the fault that could not write every room: exit 1 (not a panic, not a
/// signal), saying which file and why. Nothing acknowledged may be lost (checked after).
fn refused_stop(bed: &Bed, status: std::process::ExitStatus) {
    let log = bed.stderr();
    assert_eq!(
        status.code(),
        Some(1),
        "invariant 5: a stop during a fault exits 0 or 1: {status}\n{log}"
    );
    assert!(
        log.contains(&bed.storage.display().to_string()) && log.contains("os error"),
        "invariant 5: the stop's error must name the file and the OS error:\n{log}"
    );
}

/// Runs `cases` (filtered by `FAULT_SWEEP_FILTER`), `FAULT_SWEEP_JOBS` at a time, and fails with
/// every broken case at the end.
fn sweep(cases: Vec<Case>) {
    let filter = std::env::var("FAULT_SWEEP_FILTER").unwrap_or_default();
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| c.name().contains(&filter))
        .collect();
    let jobs: usize = std::env::var("FAULT_SWEEP_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2);
    seeds();
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    // Per case: how many calls strace failed, or `None` if the case broke a promise.
    let results = Mutex::new(vec![None; cases.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i).cloned() else {
                    return;
                };
                let t = Instant::now();
                match std::thread::spawn(move || run_case(&case)).join() {
                    Ok(o) => {
                        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(o.injected);
                        eprintln!(
                            "ok   {:<44} injected {:>3}  acked {:>4}  refused {:>3}  healed in {:>4} ms  ({:.1} s)",
                            cases[i].name(),
                            o.injected,
                            o.acked,
                            o.refused,
                            o.healed.as_millis(),
                            t.elapsed().as_secs_f64()
                        );
                    }
                    Err(panic) => {
                        let why = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        eprintln!("FAIL {}", cases[i].name());
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("{}: {why}", cases[i].name()));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!("{}", summary(&cases, &results));
    eprintln!(
        "fault sweep: {} cases ({} with an injected fault), {} failed, in {:.0} s",
        cases.len(),
        results.iter().filter(|r| r.is_some_and(|n| n > 0)).count(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases broke a promise:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// The README's table: per system call, its errors and phases, cases run, cases in which strace
/// failed at least one call, and cases passed.
fn summary(cases: &[Case], results: &[Option<usize>]) -> String {
    let mut out = String::from(
        "| call | errors | phases | cases (strict + relaxed) | with a failed call | passed |\n|---|---|---|---|---|---|\n",
    );
    for &(call, errnos, phases) in
        cases::CALLS
            .iter()
            .chain(&[("fsync,fdatasync", &["EIO"][..], &[Phase::Workload][..])])
    {
        let mine: Vec<(&Case, &Option<usize>)> = cases
            .iter()
            .zip(results)
            .filter(|(c, _)| c.syscalls == call)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let relaxed = mine.iter().filter(|(c, _)| c.relaxed).count();
        let words: Vec<String> = phases
            .iter()
            .map(|p| format!("{p:?}").to_lowercase())
            .collect();
        out += &format!(
            "| `{call}` | {} | {} | {} ({} + {relaxed}) | {} | {} |\n",
            errnos.join(", "),
            words.join(", "),
            mine.len(),
            mine.len() - relaxed,
            mine.iter()
                .filter(|(_, r)| r.is_some_and(|n| n > 0))
                .count(),
            mine.iter().filter(|(_, r)| r.is_some()).count(),
        );
    }
    out
}

#[test]
fn short_sweep() {
    sweep(cases::short());
}

#[test]
#[ignore = "the full sweep takes a while: bash .ci/fault-sweep"]
fn full_sweep() {
    sweep(cases::full());
}

/// One case by itself, with its name in the failure.
fn regression(case: Case) {
    let name = case.name();
    if let Err(panic) = std::thread::spawn(move || run_case(&case)).join() {
        let why = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        panic!("{name}: {why}");
    }
}

/// The wedge of issue 15: a burst of failed fsyncs left every later saveRoom answering
/// "cannot create the journal .journal-2: File exists" and the clean stop exiting 1.
#[test]
fn regression_fsync_burst_wedges_the_journal() {
    regression(Case {
        phase: Phase::Workload,
        syscalls: "fsync,fdatasync",
        errno: "EIO",
        mode: Mode::Burst(1, 8),
        relaxed: false,
    });
}

/// Found by the sweep (fold/openat/ENOSPC/once@3/relaxed): a fold failed after replacing some
/// room files; the next fold replaced `.index.next` with its own before rewriting them, and a
/// crash in between left files that neither index described. The restart took them for hand
/// edits, restarted their revisions and replayed their ratings a second time.
#[test]
fn regression_a_crash_after_a_failed_fold_takes_its_files_for_hand_edits() {
    let seeds = seeds();
    let fold_often = [("STORAGED_TEST_FOLD_INTERVAL_MS", "0")];
    let mut bed = Bed::new(Some(seeds.files.path()), &[], &fold_often);
    let (mut model, mut tally) = (seeds.model.clone(), Tally::default());
    bed.start();
    let writers = Writers::start(&bed.socket, &bed.storage, &model);
    std::thread::sleep(Duration::from_millis(300));
    // A fold (on a thread of its own) replaces its first room file, then fails on the second.
    let fault = Fault::attach(&bed, "rename", "EIO", "2");
    std::thread::sleep(Duration::from_millis(1500));
    let failed = fault.end();
    writers.stop(&mut model, &mut tally);
    assert!(failed > 0, "no fold ran while the fault was on");
    assert!(tally.violations.is_empty(), "{:?}", tally.violations);
    // More ratings, so that the next fold has newer versions of the same rooms to write.
    let mut c = bed.connect();
    for n in 0..20u64 {
        let name = ["b0", "b1"][n as usize % 2];
        let media = format!("late{n}");
        let resp = c.ok(serde_json::json!({"op": "addRating", "roomName": name,
            "mediaId": media, "userName": "u", "rating": "like", "timestamp": n}));
        let Some(Some((body, rev))) = model.rooms.get_mut(name) else {
            panic!("{name} is in the seed");
        };
        body["ratings"][&media] = serde_json::json!([["u", "like", n]]);
        *rev = resp["revision"].as_u64().unwrap_or(0);
    }
    // The next fold's first rename is a crash.
    let crash = Fault::crash_at(&bed, "rename", "1");
    let start = Instant::now();
    while bed.running() {
        assert!(start.elapsed() < Duration::from_secs(10), "no fold ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    crash.end();
    bed.start();
    if let Err(e) = workload::check_rooms(&mut bed.connect(), &model) {
        panic!("after the crash: {e}\nstderr:\n{}", bed.stderr());
    }
    stop_cleanly(&mut bed);
    if let Err(e) = workload::check_files(&bed.storage, &model) {
        panic!("{e}");
    }
}

/// Found by the sweep (startup/read/EIO/until@1+): a room file that could not be read at start
/// was moved to `.quarantine/` as if it were not a valid room, so a passing I/O error took
/// every room out of service.
#[test]
fn regression_an_io_error_reading_room_files_at_start_quarantines_them() {
    regression(Case {
        phase: Phase::Startup,
        syscalls: "read",
        errno: "EIO",
        mode: Mode::Until(1),
        relaxed: false,
    });
}

/// Found while reading the start-up path the sweep covers: `.index` that could not be read
/// (EIO) was treated as missing, so revisions restarted from the room files and the journal's
/// ratings were replayed onto files that already held them.
#[test]
fn regression_an_unreadable_index_restarts_revisions() {
    let seeds = seeds();
    let mut bed = Bed::new(Some(seeds.journaled.path()), &[], &[]);
    bed.spawn(true);
    let index = [bed.storage.join(".index")];
    let fault = Fault::attach_to(&bed, &index, "read", "EIO", "1+");
    bed.signal(libc::SIGCONT);
    let ready = bed.wait_ready(Duration::from_secs(30));
    assert!(fault.end() > 0, ".index was not read");
    if !ready {
        let status = bed.wait_exit(Duration::from_secs(10));
        refused_start(&bed, status);
        bed.start();
    }
    if let Err(e) = workload::check_rooms(&mut bed.connect(), &seeds.journaled_model) {
        panic!("{e}\nstderr:\n{}", bed.stderr());
    }
    stop_cleanly(&mut bed);
}
