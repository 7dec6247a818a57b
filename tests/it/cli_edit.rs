//! `moviematch-storage edit` and `fold` against a real daemon: the safe ways to change a room
//! by hand while the daemon runs (README "Backups and hand edits"). The editor is a script.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::*;
use serde_json::{json, Value};

const CLI: &str = env!("CARGO_BIN_EXE_moviematch-storage");

/// Writes an executable editor script into the daemon's temp dir; `$1` is the file to edit.
fn editor(d: &Daemon, name: &str, body: &str) -> PathBuf {
    let path = d.dir().join(name);
    fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `moviematch-storage edit NAME` with `EDITOR` (and `VISUAL` unset unless given), no terminal.
fn edit(d: &Daemon, name: &str, env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(CLI);
    command
        .env_remove("STORAGE_SOCKET")
        .env_remove("VISUAL")
        .env_remove("EDITOR")
        .env("TMPDIR", d.dir())
        .arg("--socket")
        .arg(d.socket())
        .args(["edit", name])
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run moviematch-storage edit")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The edit files the command left in the temp dir.
fn kept_edits(d: &Daemon) -> Vec<PathBuf> {
    dir_entries(d.dir())
        .into_iter()
        .filter(|n| n.starts_with("moviematch-edit-"))
        .map(|n| d.dir().join(n))
        .collect()
}

#[test]
fn edit_saves_what_the_editor_wrote_with_numbers_as_written() {
    let d = Daemon::start(Backend::File);
    let mut c = d.connect();
    let original = with(room("movie-night"), json!({"big": 1}));
    c.save(&original);
    c.send_raw(
        br#"{"op":"saveRoom","room":{"roomName":"odd","sort":"random","createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":"1","creatorPlexUsername":"u","big":12345678901234567890123,"a":2.50}}
"#,
    );
    c.read_json();
    let mode_seen = d.dir().join("mode-seen");
    let script = editor(
        &d,
        "ed.sh",
        &format!(
            "stat -c %a \"$1\" > {}\nsed -i 's/\"john_doe\"/\"edited\"/; s/\"u\"/\"v\"/' \"$1\"",
            mode_seen.display()
        ),
    );
    let out = edit(&d, "movie-night", &[("EDITOR", &script)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!({"revision": 2})
    );
    assert_eq!(fs::read_to_string(&mode_seen).unwrap().trim(), "600");
    let (saved, revision) = c.get("movie-night").unwrap();
    assert_eq!(revision, 2);
    assert_eq!(saved["creatorPlexUsername"], "edited");
    assert_eq!(saved["ratings"]["movie-123"][0][0], "edited");
    assert!(
        kept_edits(&d).is_empty(),
        "the temporary file was left behind"
    );

    // Numbers in fields the CLI does not know reach the daemon as the editor left them.
    let out = edit(&d, "odd", &[("EDITOR", &script)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    c.send_raw(b"{\"op\":\"getRoom\",\"roomName\":\"odd\"}\n");
    let line = c.read_line().unwrap();
    assert!(
        line.contains(r#""creatorPlexUsername":"v","big":12345678901234567890123,"a":2.50}"#),
        "{line}"
    );
}

#[test]
fn edit_prefers_visual_and_saves_nothing_when_unchanged() {
    let d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    let unchanged = editor(&d, "true.sh", "true");
    let failing = editor(&d, "fail.sh", "exit 1");
    let out = edit(&d, "r", &[("VISUAL", &unchanged), ("EDITOR", &failing)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unchanged; nothing saved"));
    assert_eq!(c.get("r").unwrap().1, 1, "an unchanged room was saved");

    // Whitespace alone is no change either.
    let reindent = editor(
        &d,
        "reindent.sh",
        "tr -d ' \\n' < \"$1\" > \"$1.x\"; mv \"$1.x\" \"$1\"",
    );
    let out = edit(&d, "r", &[("EDITOR", &reindent)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(c.get("r").unwrap().1, 1);

    // A failing editor saves nothing.
    let out = edit(&d, "r", &[("EDITOR", &failing)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("failed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(c.get("r").unwrap().1, 1);
}

#[test]
fn edit_of_a_room_changed_meanwhile_saves_nothing_and_keeps_the_edit() {
    let d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    // While the "user" edits, a client rates in the room.
    let script = editor(
        &d,
        "racing.sh",
        &format!(
            "{CLI} --socket {} rate r m2 someone like >/dev/null\nsed -i 's/\"john_doe\"/\"edited\"/' \"$1\"",
            d.socket().display()
        ),
    );
    let out = edit(&d, "r", &[("EDITOR", &script)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(
            "changed while you edited it (you edited revision 1; it is now at revision 2)"
        ),
        "{stderr}"
    );
    let (now, revision) = c.get("r").unwrap();
    assert_eq!(revision, 2);
    assert_eq!(
        now["ratings"]["m2"][0][0], "someone",
        "the rating was overwritten"
    );
    assert_eq!(now["creatorPlexUsername"], "john_doe");
    let kept = kept_edits(&d);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(stderr.contains(&kept[0].display().to_string()), "{stderr}");
    assert_eq!(read_json_file(&kept[0])["creatorPlexUsername"], "edited");
}

#[test]
fn edit_refuses_invalid_rooms_renames_and_missing_rooms() {
    let d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    for (script, says) in [
        ("echo '{ broken' > \"$1\"", "not valid JSON"),
        (
            "sed -i 's/\"random\"/\"alphabetical\"/' \"$1\"",
            "the daemon refused the room",
        ),
        (
            "sed -i 's/\"roomName\": \"r\"/\"roomName\": \"s\"/' \"$1\"",
            "roomName must stay",
        ),
    ] {
        let ed = editor(&d, "bad.sh", script);
        let out = edit(&d, "r", &[("EDITOR", &ed)]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{script}: {stderr}");
        assert!(stderr.contains(says), "{script}: {stderr}");
        assert!(stderr.contains("your version is kept"), "{stderr}");
        for kept in kept_edits(&d) {
            fs::remove_file(kept).unwrap();
        }
    }
    assert_eq!(c.get("r"), Some((room("r"), 1)));
    assert!(!c.has("s"));
    let ed = editor(&d, "never.sh", "exit 1");
    let out = edit(&d, "nobody", &[("EDITOR", &ed)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no room named \"nobody\""));
}

#[test]
fn fold_makes_every_room_file_current_so_a_hand_edit_is_applied() {
    let d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    assert_eq!(c.rate("r", "m2", "u", "like"), (2, true));
    let out = Command::new(CLI)
        .arg("--socket")
        .arg(d.socket())
        .arg("fold")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (latest, _) = c.get("r").unwrap();
    assert_eq!(
        read_json_file(&d.room_path("r")),
        latest,
        "fold left the file behind"
    );
    // Now the file holds the latest state: an edit of it is applied on SIGHUP.
    let mut edited = latest.clone();
    edited["roomType"] = json!("movie");
    write_room_file(&d.room_path("r"), &edited);
    d.sighup();
    d.wait_for("the edit to be applied", || c.get("r").unwrap().0 == edited);
    assert_eq!(c.get("r").unwrap().1, 3);
}

#[test]
fn on_a_terminal_a_conflict_offers_to_edit_again_on_the_latest_version() {
    let d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    // The first round races a rating; the second edits the latest version.
    let rounds = d.dir().join("rounds");
    let script = editor(
        &d,
        "twice.sh",
        &format!(
            "echo x >> {rounds}\nif [ $(wc -l < {rounds}) -eq 1 ]; then {CLI} --socket {sock} rate r m2 someone like >/dev/null; fi\nsed -i 's/\"john_doe\"/\"edited\"/' \"$1\"",
            rounds = rounds.display(),
            sock = d.socket().display()
        ),
    );
    // `script` gives the command a terminal; "y" answers the question.
    let command = format!(
        "EDITOR={} TMPDIR={} {CLI} --socket {} edit r",
        script.display(),
        d.dir().display(),
        d.socket().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("VISUAL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("changed while you edited it"), "{shown}");
    assert!(
        shown.contains("Edit again on the latest version?"),
        "{shown}"
    );
    let (now, revision) = c.get("r").unwrap();
    assert_eq!(revision, 3);
    assert_eq!(now["creatorPlexUsername"], "edited");
    assert_eq!(
        now["ratings"]["m2"][0][0], "someone",
        "the racing rating was lost"
    );
}
