//! What an operator does to the storage directory by hand while the daemon runs (README
//! "Backups and hand edits"): edits applied on SIGHUP only when nothing acknowledged is lost,
//! `.quarantine` never followed, odd files in place of room files, unwritable directories.

use crate::harness::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// A daemon on a storage dir prepared by hand: `files` are (file name, room).
fn start_seeded(prepare: impl FnOnce(&Path)) -> Daemon {
    let b = Daemon::builder(Backend::File);
    fs::create_dir(b.storage_path()).unwrap();
    fs::set_permissions(b.storage_path(), fs::Permissions::from_mode(0o700)).unwrap();
    prepare(b.storage_path());
    b.start()
}

/// Every entry under `dir` with its mode and (for files) contents.
fn tree(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out: Vec<_> = all_paths_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = if p.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            (p.display().to_string(), mode(&p), bytes)
        })
        .collect();
    out.push((dir.display().to_string(), mode(dir), Vec::new()));
    out.sort();
    out
}

#[test]
fn a_quarantine_symlink_is_never_followed() {
    let b = Daemon::builder(Backend::File);
    let elsewhere = b.dir().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(elsewhere.join("keep.txt"), b"not the daemon's").unwrap();
    fs::set_permissions(
        elsewhere.join("keep.txt"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let before = tree(&elsewhere);
    fs::create_dir(b.storage_path()).unwrap();
    fs::set_permissions(b.storage_path(), fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&elsewhere, b.storage_path().join(".quarantine")).unwrap();
    let broken = b"{\"roomName\": \"broken\", ".to_vec();
    fs::write(b.storage_path().join("broken.json"), &broken).unwrap();
    write_room_file(&b.storage_path().join("good.json"), &room("good"));
    let mut d = b.start();
    let mut c = d.connect();
    assert_eq!(
        c.get("good"),
        Some((room("good"), 1)),
        "the others are served"
    );
    d.wait_log(".quarantine is a symlink or not a directory");
    // It is set aside in the storage directory itself instead, private, and the log says where.
    assert!(!d.storage().join("broken.json").exists());
    assert_eq!(set_aside_beside(&d, "broken.json"), vec![broken]);
    d.wait_log(&format!(
        "set it aside as {}",
        d.storage().join(".set-aside-broken.json.").display()
    ));

    // An invalid edit on SIGHUP is set aside there too: the room keeps its state and its file
    // is written again.
    fs::write(d.room_path("good"), b"{ not json").unwrap();
    d.sighup();
    d.wait_for("the reload to set the edit aside", || {
        set_aside_beside(&d, "good.json").len() == 1
    });
    assert_eq!(
        set_aside_beside(&d, "good.json"),
        vec![b"{ not json".to_vec()]
    );
    assert_eq!(c.get("good"), Some((room("good"), 1)));
    d.wait_for("the room file to be written again", || {
        fs::read(d.room_path("good")).is_ok_and(|b| serde_json::from_slice::<Value>(&b).is_ok())
    });
    drop(c);
    d.stop();
    assert_eq!(tree(&elsewhere), before, "the symlink's target changed");
    assert!(fs::symlink_metadata(d.storage().join(".quarantine"))
        .unwrap()
        .file_type()
        .is_symlink());
    d.restart();
    assert_eq!(
        d.connect().get("good").map(|g| g.0),
        Some(room("good")),
        "the room's state was lost"
    );
}

/// Sets the room's `roomType` to "movie" in `file`, as an operator editing it would, and
/// returns the edited room.
fn edit_by_hand(file: &Path) -> Value {
    let mut edited = read_json_file(file);
    edited["roomType"] = json!("movie");
    write_room_file(file, &edited);
    edited
}

/// The files set aside in the storage directory as `.set-aside-<file>.<stamp>` (0600), in order.
fn set_aside_beside(d: &Daemon, file: &str) -> Vec<Vec<u8>> {
    let prefix = format!(".set-aside-{file}.");
    dir_entries(d.storage())
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .map(|n| {
            let path = d.storage().join(n);
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            fs::read(path).unwrap()
        })
        .collect()
}

#[test]
fn a_refused_edit_is_kept_when_quarantine_is_a_symlink() {
    let b = Daemon::builder(Backend::File);
    let elsewhere = b.dir().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::create_dir(b.storage_path()).unwrap();
    fs::set_permissions(b.storage_path(), fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&elsewhere, b.storage_path().join(".quarantine")).unwrap();
    let mut d = b.start();
    let mut c = d.connect();
    c.save(&room("r"));
    fold(&d);
    assert_eq!(c.rate("r", "m2", "u", "like"), (2, true));
    let (latest, _) = c.get("r").unwrap();
    let edited = edit_by_hand(&d.room_path("r"));
    d.sighup();
    d.wait_log("refused the hand edit of room \"r\"");
    let kept = set_aside_beside(&d, "r.json");
    assert_eq!(kept.len(), 1);
    assert_eq!(serde_json::from_slice::<Value>(&kept[0]).unwrap(), edited);
    drop(c);
    d.stop();
    assert_eq!(
        read_json_file(&d.room_path("r")),
        latest,
        "after a clean stop"
    );
    d.restart();
    assert_eq!(d.connect().get("r").map(|g| g.0), Some(latest));
    assert_eq!(
        set_aside_beside(&d, "r.json").len(),
        1,
        "the edit is still kept"
    );
    assert!(dir_entries(&elsewhere).is_empty());
}

#[test]
fn quarantined_files_are_private() {
    let mut d = start_seeded(|dir| {
        let file = dir.join("broken.json");
        fs::write(&file, b"{ \"password\": \"hunter2\"").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    });
    d.connect().ping();
    let q = d.storage().join(".quarantine");
    let moved = dir_entries(&q);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(mode(&q.join(&moved[0])), 0o600);
    assert_eq!(mode(&q), 0o700);
    d.stop();
}

#[test]
fn a_fifo_in_place_of_a_room_file_keeps_the_room() {
    let d = {
        let mut d = Daemon::start(Backend::File);
        let mut c = d.connect();
        c.save(&room("piped"));
        c.save(&room("other"));
        drop(c);
        d.stop_and_restart();
        d
    };
    let file = d.room_path("piped");
    fs::remove_file(&file).unwrap();
    let path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    d.sighup();
    d.wait_log(&format!("{} is not a regular file", file.display()));
    let mut c = d.connect();
    assert_eq!(c.get("piped").map(|p| p.0), Some(room("piped")));
    // The daemon did not hang on the FIFO: it still takes writes and reloads.
    c.rate("other", "m", "u", "like");
    write_room_file(&d.room_path("new"), &room("new"));
    d.sighup();
    d.wait_for("the second reload", || c.has("new"));
    assert!(c.has("piped"));
}

/// The quarantined versions of `file`, parsed.
fn quarantined_rooms(d: &Daemon, file: &str) -> Vec<Value> {
    let q = d.storage().join(".quarantine");
    dir_entries(&q)
        .into_iter()
        .filter(|n| n.starts_with(file))
        .map(|n| read_json_file(&q.join(n)))
        .collect()
}

#[test]
fn an_edit_and_sighup_during_concurrent_ratings_loses_no_acknowledged_rating() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut d = Daemon::start(Backend::File);
    d.connect().save(&bare_room("movie-night"));
    d.stop_and_restart(); // the file is current
    let stop = Arc::new(AtomicBool::new(false));
    let raters: Vec<_> = (0..4)
        .map(|r| {
            let (mut c, stop) = (d.connect(), stop.clone());
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let media = format!("m{i}");
                    assert!(c.rate("movie-night", &media, &format!("user{r}"), "like").1);
                    acknowledged.push((media, format!("user{r}")));
                }
                acknowledged
            })
        })
        .collect();
    // An operator edits the file the way the README used to recommend, as ratings come in.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let file = d.room_path("movie-night");
    edit_by_hand(&file);
    d.sighup();
    d.wait_log("refused the hand edit of room \"movie-night\"");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<(String, String)> =
        raters.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        acknowledged.len() > 100,
        "only {} ratings",
        acknowledged.len()
    );

    let check = |room: &Value, when: &str| {
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|(media, user)| {
                !room["ratings"][media]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x[0] == json!(user)))
            })
            .collect();
        assert!(
            lost.is_empty(),
            "{when}: {} of {} acknowledged ratings lost, e.g. {:?}",
            lost.len(),
            acknowledged.len(),
            lost.first()
        );
    };
    let (served, revision) = d.connect().get("movie-night").unwrap();
    check(&served, "served");
    assert_eq!(revision as usize, 1 + acknowledged.len());
    // The edit is kept aside, and the log names both revisions and where it went.
    let kept = quarantined_rooms(&d, "movie-night.json");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["roomType"], "movie");
    let log = d.stderr();
    let warning = log
        .lines()
        .find(|l| l.contains("refused the hand edit"))
        .unwrap();
    // The file held an older revision than the room's (which one depends on whether a fold
    // ran before the edit, which the test does not control).
    let number_after = |text: &str| -> u64 {
        let at = warning
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} in {warning}"));
        let digits: String = warning[at + text.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("a number after {text:?} in {warning}"))
    };
    let (held, current) = (
        number_after("the file held revision "),
        number_after(" but the room is at revision "),
    );
    assert!(
        warning.contains("WARN")
            && held < current
            && warning.contains(".quarantine/movie-night.json."),
        "{warning}"
    );
    d.stop();
    check(&read_json_file(&file), "in the file after a clean stop");
    d.restart();
    check(
        &d.connect().get("movie-night").unwrap().0,
        "after a restart",
    );
}

#[test]
fn an_unwritable_existing_directory_is_reported_as_such() {
    // As user nobody, on a directory root owns (0755): it exists, it cannot be written.
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let storage = tmp.path().join("rooms");
    fs::create_dir(&storage).unwrap();
    fs::set_permissions(&storage, fs::Permissions::from_mode(0o755)).unwrap();
    let run = tmp.path().join("run");
    fs::create_dir(&run).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg("--storage-path")
        .arg(&storage)
        .arg("--socket")
        .arg(run.join("s.sock"))
        .output()
        .unwrap();
    let stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot write to the storage directory {}: Permission denied",
            storage.display()
        )) && stderr.contains("choose another storagePath")
            && !stderr.contains("cannot create"),
        "{stderr}"
    );
    assert_eq!(mode(&storage), 0o755);
}

/// `moviematch-storage fold` against the daemon: every room file holds its room's latest state.
fn fold(d: &Daemon) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moviematch-storage"))
        .arg("--socket")
        .arg(d.socket())
        .arg("fold")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn removing_a_room_file_that_lags_its_room_keeps_the_room() {
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    fold(&d);
    assert_eq!(c.rate("r", "m2", "u", "like"), (2, true));
    let (latest, _) = c.get("r").unwrap();
    fs::remove_file(d.room_path("r")).unwrap();
    d.sighup();
    d.wait_log("refused the removal of room \"r\"");
    let warning = d
        .stderr()
        .lines()
        .find(|l| l.contains("refused the removal"))
        .unwrap()
        .to_owned();
    assert!(
        warning.contains("WARN")
            && warning.contains("the file held revision 1 but the room is at revision 2"),
        "{warning}"
    );
    assert_eq!(c.get("r"), Some((latest.clone(), 2)));
    d.wait_for("the room file to be written again", || {
        d.room_path("r").exists()
    });
    assert_eq!(read_json_file(&d.room_path("r")), latest);
    drop(c);
    d.stop();
    d.restart();
    assert_eq!(d.connect().get("r").map(|g| g.0), Some(latest));

    // A file that held the room's latest state: its removal deletes the room.
    let mut c = d.connect();
    fold(&d);
    fs::remove_file(d.room_path("r")).unwrap();
    d.sighup();
    d.wait_for("the room to be deleted", || !c.has("r"));
}

#[test]
fn a_journal_name_someone_else_took_is_skipped_never_followed() {
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    let newest = dir_entries(d.storage())
        .iter()
        .filter_map(|n| n.strip_prefix(".journal-")?.parse::<u64>().ok())
        .max()
        .expect("a journal");
    let target = d.dir().join("not-the-daemons");
    fs::write(&target, b"keep").unwrap();
    let planted = d.storage().join(format!(".journal-{}", newest + 1));
    symlink(&target, &planted).unwrap();
    fold(&d);
    d.wait_log(&format!(
        "{} exists but the daemon did not create it",
        planted.display()
    ));
    assert_eq!(c.rate("r", "m2", "u", "like"), (2, true));
    fold(&d);
    assert!(fs::symlink_metadata(&planted)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&target).unwrap(), b"keep");
    let (latest, _) = c.get("r").unwrap();
    drop(c);
    d.kill9();
    d.restart();
    assert_eq!(d.connect().get("r"), Some((latest, 2)));
}

/// The first line of the daemon's current run's log that contains `needle`.
fn log_line(d: &Daemon, needle: &str) -> String {
    let log = d.stderr();
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"))
        .to_owned()
}

#[test]
fn an_edit_after_a_crash_that_lacks_journal_changes_is_refused_at_start() {
    // The file is loaded at start, so the daemon knows its bytes (`.cache`): the version the
    // edit replaced can be restored.
    let mut d = start_seeded(|dir| write_room_file(&dir.join("r.json"), &room("r")));
    d.wait_for("the cache", || d.storage().join(".cache").exists());
    let mut c = d.connect();
    assert_eq!(c.rate("r", "m2", "u", "like"), (2, true));
    let (latest, _) = c.get("r").unwrap();
    drop(c);
    d.kill9();
    assert_ne!(
        read_json_file(&d.room_path("r")),
        latest,
        "the rating is only in the journal"
    );
    let edited = edit_by_hand(&d.room_path("r"));
    d.restart();
    assert_eq!(d.connect().get("r"), Some((latest.clone(), 2)));
    let warning = log_line(&d, "refused the hand edit of room \"r\"");
    let kept = quarantined_rooms(&d, "r.json");
    assert_eq!(kept, vec![edited]);
    assert!(
        warning.contains("WARN")
            && warning.contains("the file held revision 1")
            && warning.contains("up to revision 2")
            && warning.contains(&format!(
                "{}",
                d.storage().join(".quarantine/r.json.").display()
            )),
        "{warning}"
    );
    let q = d.storage().join(".quarantine");
    assert!(dir_entries(&q).iter().all(|n| mode(&q.join(n)) == 0o600));
    // A crash before the room's file is written again loses nothing and changes nothing.
    d.kill9();
    d.restart();
    assert_eq!(d.connect().get("r"), Some((latest.clone(), 2)));
    d.stop();
    assert_eq!(read_json_file(&d.room_path("r")), latest);
}

/// Kills the daemon, edits room "r"'s file by hand, starts the daemon again and returns the
/// edited room.
fn crash_and_edit_by_hand(d: &mut Daemon) -> Value {
    d.kill9();
    let edited = edit_by_hand(&d.room_path("r"));
    d.restart();
    edited
}

#[test]
fn an_edit_after_a_crash_never_reuses_a_revision() {
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    fold(&d);
    assert_eq!(c.rate("r", "m2", "u", "like"), (2, true));
    drop(c);
    crash_and_edit_by_hand(&mut d);
    // The version the edit replaced is gone (only the edited file holds the rest of the room):
    // the rating is applied on top of the edit, at a revision the room never had.
    let (served, revision) = d.connect().get("r").unwrap();
    assert_eq!(revision, 3);
    assert_eq!(served["roomType"], "movie");
    assert!(
        served["ratings"]["m2"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x[0] == json!("u"))),
        "{served}"
    );
    let warning = log_line(&d, "was edited by hand");
    assert!(
        warning.contains("WARN")
            && warning.contains("held revision 1")
            && warning.contains("up to revision 2")
            && warning.contains("now at revision 3"),
        "{warning}"
    );
    d.kill9();
    d.restart();
    assert_eq!(d.connect().get("r"), Some((served, 3)));
}

#[test]
fn an_edit_before_a_start_with_nothing_newer_in_the_journal_is_taken() {
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    assert_eq!(c.rate("r", "m2", "u", "like"), (2, true));
    fold(&d);
    drop(c);
    let edited = crash_and_edit_by_hand(&mut d);
    assert_eq!(d.connect().get("r"), Some((edited, 3)));
}

#[test]
fn an_edit_after_a_crash_of_a_room_deleted_since_is_kept_aside() {
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    fold(&d);
    c.ok(json!({"op": "deleteRoom", "roomName": "r"}));
    drop(c);
    let edited = crash_and_edit_by_hand(&mut d);
    assert!(!d.connect().has("r"), "the deletion was acknowledged");
    d.stop();
    assert_eq!(
        quarantined_rooms(&d, "r.json"),
        vec![edited],
        "the edit was lost"
    );
}
