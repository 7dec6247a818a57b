use std::collections::HashMap;
use std::io::Write;

use super::*;

/// Loads with `args` after the program name, the given environment, and (if any) a config file
/// holding `yaml`.
fn load(args: &[&str], env: &[(&str, &str)], yaml: Option<&str>) -> Result<Loaded, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let file = yaml.map(|text| {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write temp file");
        file
    });
    let mut argv = vec!["moviematch-storaged".to_owned()];
    if let Some(file) = &file {
        argv.extend(["--config".to_owned(), file.path().display().to_string()]);
    }
    argv.extend(args.iter().map(|arg| arg.to_string()));
    Config::load(argv, &|name| env.get(name).cloned())
}

fn config(args: &[&str], env: &[(&str, &str)], yaml: Option<&str>) -> Config {
    match load(args, env, yaml) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("expected a valid configuration, got: {e}"),
    }
}

/// The error's one line; fails the test if loading succeeded.
fn error(args: &[&str], env: &[(&str, &str)], yaml: Option<&str>) -> String {
    match load(args, env, yaml) {
        Ok(loaded) => panic!("expected an error, got {:?}", loaded.config),
        Err(e) => e.to_string(),
    }
}

fn yaml_value(key: &str, value: &str) -> Config {
    config(&[], &[], Some(&format!("{key}: {value}\n")))
}

#[test]
fn nothing_configured_gives_the_defaults() {
    let loaded = load(&[], &[], None).expect("defaults load");
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.config_file, None);
}

#[test]
fn the_default_column_agrees_with_default_impl() {
    let mut config = Config::default();
    for setting in SETTINGS {
        (setting.apply)(&mut config, setting.default).expect(setting.key);
    }
    assert_eq!(config, Config::default());
}

#[test]
fn the_example_config_file_holds_every_key_at_its_default() {
    let example = include_str!("../../config/moviematch-storaged.yaml");
    let loaded = load(&[], &[], Some(example)).expect("example loads");
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    for setting in SETTINGS {
        assert!(
            example.contains(&format!("\n{}: ", setting.key)),
            "{}",
            setting.key
        );
        assert!(
            example.contains(&format!("Env {}, flag --{}", setting.env, setting.flag)),
            "{}",
            setting.key
        );
    }
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let yaml = "storageType: memory\ndurability: relaxed\nmaxConnections: 7\nlogLevel: debug\n";
    let env = [
        ("STORAGE_TYPE", "redis"),
        ("STORAGE_DURABILITY", "strict"),
        ("STORAGE_MAX_CONNECTIONS", "8"),
    ];
    let loaded = load(&["--storage-type", "file"], &env, Some(yaml)).expect("loads");
    assert!(
        loaded.warnings.is_empty(),
        "overridden keys are still ours: {:?}",
        loaded.warnings
    );
    let c = loaded.config;
    assert_eq!(c.storage_type, StorageType::File, "flag over env and file");
    assert_eq!(c.durability, Durability::Strict, "env over file");
    assert_eq!(c.max_connections, 8, "env over file");
    assert_eq!(c.log_level, "debug", "file over default");
    assert_eq!(
        c.socket_path,
        PathBuf::from("./data/storaged.sock"),
        "default"
    );
}

#[test]
fn the_config_file_comes_from_flag_or_environment() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(b"storageType: memory\n").expect("write");
    let path = file.path().display().to_string();
    let env = |name: &str| (name == "STORAGE_CONFIG").then(|| path.clone());
    let loaded = Config::load(["moviematch-storaged"], &env).expect("loads");
    assert_eq!(loaded.config.storage_type, StorageType::Memory);
    assert_eq!(loaded.config_file, Some(file.path().to_owned()));

    let missing = Config::load(["x", "--config", "/nonexistent/c.yaml"], &env);
    let message = missing
        .expect_err("flag wins and names a missing file")
        .to_string();
    assert!(
        message.contains("/nonexistent/c.yaml") && message.contains("cannot read"),
        "{message}"
    );
}

#[test]
fn empty_environment_values_count_as_unset() {
    assert_eq!(
        config(&[], &[("STORAGE_TYPE", "")], None).storage_type,
        StorageType::File
    );
}

#[test]
fn every_setting_has_a_flag_and_an_env_variable_that_work() {
    let c = config(
        &[
            "--storage-path",
            "/srv/rooms",
            "--socket",
            "/run/s.sock",
            "--socket-mode",
            "600",
            "--flush-interval-ms",
            "250",
            "--redis-url",
            "unix:///run/redis.sock",
            "--redis-prefix",
            "mm:",
            "--max-request-bytes",
            "1024",
            "--room-expiry",
            "7d",
            "--log-level",
            "TRACE",
            "--password-hashing",
            "argon2",
            "--allowed-uids",
            "0, 1000",
        ],
        &[("STORAGE_ALLOWED_GIDS", "33")],
        None,
    );
    assert_eq!(c.storage_path, PathBuf::from("/srv/rooms"));
    assert_eq!(c.socket_path, PathBuf::from("/run/s.sock"));
    assert_eq!(c.socket_mode, 0o600);
    assert_eq!(c.flush_interval, Duration::from_millis(250));
    assert_eq!(c.redis_url, "unix:///run/redis.sock");
    assert_eq!(c.redis_prefix, "mm:");
    assert_eq!(c.max_request_bytes, 1024);
    assert_eq!(c.room_expiry, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(c.log_level, "trace");
    assert_eq!(c.password_hashing, PasswordHashing::Argon2);
    assert_eq!(c.allowed_uids, vec![0, 1000]);
    assert_eq!(c.allowed_gids, vec![33]);
}

#[test]
fn an_invalid_value_is_one_line_naming_key_source_value_and_what_is_allowed() {
    let message = error(&[], &[("STORAGE_TYPE", "mongo")], None);
    assert_eq!(
        message,
        "invalid configuration: storageType = \"mongo\" (from environment variable STORAGE_TYPE): \
         expected one of memory, file, redis"
    );
    let message = error(&["--durability", "yolo"], &[], None);
    assert!(
        message.contains("durability = \"yolo\" (from flag --durability)"),
        "{message}"
    );
    let message = error(&[], &[], Some("# comment\ndurability: 5\n"));
    assert!(
        message.contains("durability = \"5\" (from config file "),
        "{message}"
    );
    assert!(
        message.contains(" line 2): expected one of strict, relaxed"),
        "{message}"
    );
}

#[test]
fn each_invalid_value_names_its_key_on_one_line() {
    let cases = [
        ("STORAGE_PATH", "storagePath", " "),
        ("STORAGE_SOCKET_MODE", "socketMode", "rw"),
        ("STORAGE_FLUSH_INTERVAL_MS", "flushIntervalMs", "0"),
        ("REDIS_URL", "redisUrl", "http://localhost"),
        ("REDIS_URL", "redisUrl", "redis://host:notaport/0"),
        ("REDIS_URL", "redisUrl", "unix://"),
        ("STORAGE_MAX_REQUEST_BYTES", "maxRequestBytes", "1023"),
        ("STORAGE_MAX_CONNECTIONS", "maxConnections", "-5"),
        ("STORAGE_ROOM_EXPIRY", "roomExpiry", "forever"),
        ("STORAGE_LOG_LEVEL", "logLevel", "loud"),
        ("STORAGE_PASSWORD_HASHING", "passwordHashing", "md5"),
        ("STORAGE_ALLOWED_UIDS", "allowedUids", "root"),
        ("STORAGE_ALLOWED_GIDS", "allowedGids", "1,,2"),
    ];
    for (env, key, value) in cases {
        // storagePath " " is kept as given (a path may contain spaces); use an empty flag instead.
        let message = if key == "storagePath" {
            error(&["--storage-path="], &[], None)
        } else {
            error(&[], &[(env, value)], None)
        };
        assert!(
            message.starts_with(&format!("invalid configuration: {key} = ")),
            "{message}"
        );
        assert!(message.contains(": expected "), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
    let message = error(&[], &[("REDIS_URL", "redis://:hunter2@host:port/0")], None);
    assert!(
        message.contains("redis://:***@host:port/0") && !message.contains("hunter2"),
        "a password is never repeated: {message}"
    );
    let message = error(&[], &[("STORAGE_MAX_REQUEST_BYTES", "100")], None);
    assert!(message.contains("at least 1024"), "{message}");
    let message = error(&[], &[], Some("storageType: |\n  multi\n  line\n"));
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn unknown_yaml_keys_warn_and_moviematch_keys_are_accepted() {
    let yaml = "host: 0.0.0.0\nport: 8000\nplexToken: abc\nservers:\n  - url: https://plex\n    \
                token: t\nbasicAuth: {userName: a, password: b}\nstoragetype: memory\n\
                storageType: memory\n";
    let loaded = load(&[], &[], Some(yaml)).expect("shared config loads");
    assert_eq!(loaded.config.storage_type, StorageType::Memory);
    let path = loaded
        .config_file
        .as_ref()
        .expect("file")
        .display()
        .to_string();
    assert_eq!(loaded.warnings.len(), 6, "{:?}", loaded.warnings);
    assert_eq!(
        loaded.warnings[2],
        format!("config file {path}: unknown key \"plexToken\" ignored")
    );
    assert!(
        loaded.warnings[5].contains("did you mean \"storageType\"?"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn yaml_nulls_and_empty_files_mean_not_set() {
    assert_eq!(config(&[], &[], Some("")), Config::default());
    assert_eq!(
        config(&[], &[], Some("# only a comment\n")),
        Config::default()
    );
    assert_eq!(config(&[], &[], Some("---\n")), Config::default());
    assert_eq!(
        config(
            &[],
            &[],
            Some("storageType:\nlogLevel: ~\nroomExpiry: null\n")
        ),
        Config::default()
    );
    // A quoted "null" is a string, and so a wrong storage type.
    assert!(error(&[], &[], Some("storageType: \"null\"\n")).contains("storageType = \"null\""));
}

#[test]
fn yaml_scalars_of_any_type_are_read_as_their_text() {
    assert_eq!(yaml_value("maxConnections", "100").max_connections, 100);
    assert_eq!(yaml_value("maxConnections", "\"100\"").max_connections, 100);
    assert_eq!(
        yaml_value("flushIntervalMs", "'20'").flush_interval,
        Duration::from_millis(20)
    );
    assert_eq!(
        yaml_value("redisPrefix", "\"moviematch:\"").redis_prefix,
        "moviematch:"
    );
    assert!(error(&[], &[], Some("passwordHashing: true\n")).contains("passwordHashing = \"true\""));
}

#[test]
fn a_file_that_is_not_a_yaml_mapping_is_refused_naming_the_file() {
    for yaml in [
        "storageType: [unclosed\n",
        "- a\n- b\n",
        "just text\n",
        "a: 1\n---\nb: 2\n",
        "a: 1\na: 2\n",
    ] {
        let message = error(&[], &[], Some(yaml));
        assert!(message.starts_with("config file /"), "{yaml:?}: {message}");
    }
}

#[test]
fn a_list_or_mapping_where_one_value_belongs_is_invalid() {
    let message = error(&[], &[], Some("storagePath: [a, b]\n"));
    assert!(message.contains("storagePath = \"[a, b]\""), "{message}");
    assert!(message.contains("expected a single value"), "{message}");
    assert!(error(&[], &[], Some("socketPath: {a: 1}\n")).contains("socketPath = "));
}

#[test]
fn socket_mode_forms() {
    for (yaml, mode) in [
        ("\"0660\"", 0o660),
        ("0660", 0o660),
        ("660", 0o660),
        ("\"0o660\"", 0o660),
        ("0o600", 0o600),
        ("0", 0),
    ] {
        assert_eq!(yaml_value("socketMode", yaml).socket_mode, mode, "{yaml}");
    }
    for bad in [
        "\"0999\"",
        "\"1777\"",
        "0o",
        "\"\"",
        "-660",
        "0x1b0",
        "7777777777777",
    ] {
        let message = error(&[], &[], Some(&format!("socketMode: {bad}\n")));
        assert!(
            message.starts_with("invalid configuration: socketMode = "),
            "{bad}: {message}"
        );
    }
    assert_eq!(
        config(&[], &[("STORAGE_SOCKET_MODE", "0o640")], None).socket_mode,
        0o640
    );
}

#[test]
fn room_expiry_forms() {
    let hour = 3600;
    for (text, seconds) in [
        ("7d", 7 * 24 * hour),
        ("12h", 12 * hour),
        ("30s", 30),
        ("5m", 300),
        ("1d", 24 * hour),
    ] {
        let expected = Some(Duration::from_secs(seconds));
        assert_eq!(
            config(&["--room-expiry", text], &[], None).room_expiry,
            expected,
            "{text}"
        );
    }
    assert_eq!(yaml_value("roomExpiry", "off").room_expiry, None);
    assert_eq!(
        config(&[], &[("STORAGE_ROOM_EXPIRY", "OFF")], None).room_expiry,
        None
    );
    for bad in [
        "0d",
        "10x",
        "-1h",
        "+1h",
        "h",
        "1.5h",
        "7 d",
        "",
        "99999999999999999999d",
    ] {
        let message = error(&[&format!("--room-expiry={bad}")], &[], None);
        assert!(
            message.starts_with("invalid configuration: roomExpiry = "),
            "{bad}: {message}"
        );
        assert!(message.contains("(like 30s, 12h, 7d), or off"), "{message}");
    }
}

#[test]
fn allowed_uid_forms() {
    assert_eq!(
        yaml_value("allowedUids", "[1000, 1001]").allowed_uids,
        vec![1000, 1001]
    );
    assert_eq!(
        yaml_value("allowedUids", "\n  - 0\n  - \"33\"").allowed_uids,
        vec![0, 33]
    );
    assert_eq!(yaml_value("allowedUids", "1000").allowed_uids, vec![1000]);
    assert_eq!(
        yaml_value("allowedUids", "\"1000,1001\"").allowed_uids,
        vec![1000, 1001]
    );
    assert_eq!(
        yaml_value("allowedUids", "[]").allowed_uids,
        Vec::<u32>::new()
    );
    assert_eq!(yaml_value("allowedGids", "[5]").allowed_gids, vec![5]);
    // An empty flag lifts a restriction set lower down.
    assert!(config(
        &["--allowed-uids", ""],
        &[("STORAGE_ALLOWED_UIDS", "5")],
        None
    )
    .allowed_uids
    .is_empty());
    for bad in ["[1000, bob]", "-1", "4294967296", "[[1]]", "1,"] {
        let message = error(&[], &[], Some(&format!("allowedUids: {bad}\n")));
        assert!(
            message.starts_with("invalid configuration: allowedUids = "),
            "{bad}: {message}"
        );
    }
}

#[test]
fn moviematch_log_level_names_are_understood() {
    assert_eq!(yaml_value("logLevel", "WARNING").log_level, "warn");
    assert_eq!(yaml_value("logLevel", "CRITICAL").log_level, "error");
    assert_eq!(yaml_value("logLevel", "Debug").log_level, "debug");
}

#[test]
fn help_and_version_come_back_as_cli_errors_and_bad_flags_too() {
    let env = |_: &str| None;
    for args in [
        vec!["x", "--help"],
        vec!["x", "--version"],
        vec!["x", "--no-such-flag"],
        vec!["x", "stray"],
    ] {
        assert!(matches!(Config::load(args, &env), Err(ConfigError::Cli(_))));
    }
    let help = command().render_long_help().to_string();
    for setting in SETTINGS {
        assert!(
            help.contains(&format!("--{}", setting.flag)),
            "{}",
            setting.flag
        );
        assert!(
            help.contains(&format!("[env: {}]", setting.env)),
            "{}",
            setting.env
        );
    }
    assert!(help.contains("moviematch-storaged") && help.contains("STORAGE_CONFIG"));
    // Repeating a flag is not an error: the last one wins.
    assert_eq!(
        config(&["--log-level", "warn", "--log-level", "error"], &[], None).log_level,
        "error"
    );
}
