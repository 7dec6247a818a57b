//! Issue 14 (outside probe): the socket set-up must not touch anything by a path another user
//! can swap. Whoever can write the socket's directory sees the daemon's private `.sb` directory
//! appear (inotify), renames it away and puts a symlink to any file in its place; a daemon that
//! then chmods the private directory by path changes the mode of that file.

use crate::harness::*;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const SWAP_DIR: &str = "MM_TEST_SWAP_DIR";
const SWAP_TARGET: &str = "MM_TEST_SWAP_TARGET";

/// Not a test of its own: the attacker of `a_swapped_private_directory_changes_no_other_file`,
/// run as a child process as user nobody. It watches the socket's directory and, for every new
/// `.sb` name, renames the directory away and puts a symlink to the target in its place.
#[test]
fn swapping_attacker_helper() {
    let (Some(dir), Some(target)) = (std::env::var_os(SWAP_DIR), std::env::var_os(SWAP_TARGET))
    else {
        return;
    };
    let cdir = CString::new(dir.as_bytes()).unwrap();
    // SAFETY: plain syscalls on a C string that outlives them.
    let fd = unsafe { libc::inotify_init() };
    assert!(fd >= 0, "inotify_init");
    assert!(unsafe { libc::inotify_add_watch(fd, cdir.as_ptr(), libc::IN_CREATE) } >= 0);
    println!("WATCHING");
    let dir = std::path::PathBuf::from(dir);
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        let mut at = 0;
        while at < n as usize {
            let header = std::mem::size_of::<libc::inotify_event>();
            // SAFETY: the kernel wrote a whole event at `at`; read unaligned.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            let name = &buf[at + header..at + header + ev.len as usize];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            at += header + ev.len as usize;
            if name.starts_with(b".sb") && !name.ends_with(b".x") {
                let name = std::ffi::OsStr::from_bytes(name);
                let fresh = dir.join(name);
                let mut away = fresh.clone().into_os_string();
                away.push(".x");
                if fs::rename(&fresh, &away).is_ok() {
                    let _ = std::os::unix::fs::symlink(&target, &fresh);
                }
            }
        }
    }
}

/// Over 50 starts with an attacker swapping the private directory for a symlink, the file the
/// symlink points to keeps its mode, and every start either serves on the socket with its mode
/// or refuses with an error that names the socket and says what happened.
#[test]
fn a_swapped_private_directory_changes_no_other_file() {
    assert_root("the attacker runs as nobody");
    let open = world_writable_tempdir();
    let socket = open.path().join("storaged.sock");
    let precious = tempfile::tempdir().unwrap();
    let target = precious.path().join("passwd");
    fs::write(&target, "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(precious.path(), fs::Permissions::from_mode(0o755)).unwrap();

    let mut attacker = one_test_as_nobody(module_path!(), "swapping_attacker_helper");
    attacker
        .env(SWAP_DIR, open.path())
        .env(SWAP_TARGET, &target);
    let mut attacker = attacker.spawn().expect("start the attacker");
    let mut out = std::io::BufReader::new(attacker.stdout.take().unwrap());
    let mut line = String::new();
    // The test harness prints its own lines first; wait for the watch to be in place.
    while !line.contains("WATCHING") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "the attacker ended before watching"
        );
    }

    let (mut served, mut refused) = (0, 0);
    for i in 0..50 {
        let mut d = Daemon::builder(Backend::Memory)
            .socket(&socket)
            .umask(0o077)
            .spawn();
        let start = Instant::now();
        loop {
            if !d.is_running() {
                assert_target_untouched(&target, i);
                let log = d.stderr();
                assert!(
                    log.contains("storaged.sock") && log.contains("was replaced by something"),
                    "start {i}: refused without saying why:\n{log}"
                );
                refused += 1;
                break;
            }
            if socket.exists() && d.try_connect().is_ok() {
                d.wait_ready();
                let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o660, "start {i}: socket mode");
                d.stop();
                served += 1;
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "start {i}: neither served nor refused:\n{}",
                d.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_target_untouched(&target, i);
    }
    let _ = attacker.kill();
    let _ = attacker.wait();
    eprintln!("served {served}, refused {refused} of 50 starts under attack");
}

fn assert_target_untouched(target: &std::path::Path, start: usize) {
    let mode = fs::symlink_metadata(target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode, 0o644,
        "start {start}: the daemon changed the mode of a file the attacker pointed at"
    );
}
