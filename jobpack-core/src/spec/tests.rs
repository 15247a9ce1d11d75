//! The spec's parsing and validation, field by field.

use super::*;

#[test]
fn every_unknown_field_is_named_and_the_field_list_is_the_specs() {
    let err = JobSpec::from_json(
        r#"{"command": "x", "comand": "y", "gti_url": "z", "data": [{"url": "https://a/b", "sha": "1"}]}"#,
    )
    .unwrap_err()
    .to_string();
    for f in [
        "unknown field `comand`",
        "unknown field `gti_url`",
        "unknown field `sha` in data[0]",
    ] {
        assert!(err.contains(f), "{err}");
    }
    // A spec with every field set names exactly SPEC_FIELDS.
    let full = JobSpec {
        name: Some("n".into()),
        git_url: Some("https://a/r.git".into()),
        commit_hash: Some("a".repeat(40)),
        data_url: Some("https://a/d".into()),
        data: vec![DataSpec {
            url: "https://a/d".into(),
            sha256: Some("0".repeat(64)),
            path: Some("d".into()),
        }],
        command: Command::Shell("true".into()),
        env: [("A".to_owned(), "b".to_owned())].into(),
        base_image: Some("debian".into()),
        runtime: Some("none".into()),
        install: Some(vec!["make".into()]),
        runtime_fs: Some("py".into()),
    };
    let v = serde_json::to_value(&full).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    let mut want = SPEC_FIELDS.to_vec();
    want.sort();
    assert_eq!(keys, want);
    let mut data: Vec<&str> = v["data"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    data.sort();
    assert_eq!(data, ["path", "sha256", "url"]);
}

fn spec(json: &str) -> Result<Job, SpecError> {
    JobSpec::from_json(json)?.validate()
}

#[test]
fn accepts_the_original_packager_request() {
    let job = spec(
        r#"{"git_url": "https://github.com/octocat/Hello-World",
            "commit_hash": "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d",
            "data_url": "https://example.org/hw_200.csv",
            "command": "python main.py"}"#,
    )
    .unwrap();
    let src = job.source.unwrap();
    assert_eq!(src.url, "https://github.com/octocat/Hello-World");
    assert_eq!(
        src.commit,
        CommitRef::Full("7fd1a60b01f91b314f59955a4e4d4e80d8edf11d".into())
    );
    assert_eq!(job.data.len(), 1);
    assert_eq!(job.data[0].path, "hw_200.csv");
    assert_eq!(job.command, Command::Shell("python main.py".into()));
    assert_eq!(job.base_image, DEFAULT_BASE_IMAGE);
}

#[test]
fn yaml_and_argv_and_extensions() {
    let job = JobSpec::from_yaml(
        "name: demo\ngit_url: git@example.org:team/repo.git\ncommit_hash: ABCDEF1\n\
         command: [python3, main.py, --n, '3']\nenv: {MODE: fast}\n\
         data:\n  - url: http://127.0.0.1:9/x.bin\n    sha256: \
         E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\n    path: in/x.bin\n",
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(
        job.source.unwrap().commit,
        CommitRef::Abbreviated("abcdef1".into())
    );
    assert_eq!(job.data[0].path, "in/x.bin");
    assert_eq!(
        job.data[0].sha256.as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert!(matches!(job.command, Command::Argv(ref a) if a.len() == 4));
}

#[test]
fn unknown_fields_are_rejected() {
    let err = spec(r#"{"command": "x", "comand": "y"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `comand`"), "{err}");
    let err = spec(r#"{"command": "x", "data": [{"url": "http://a/b", "sha": "0"}]}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `sha`"), "{err}");
}

#[test]
fn command_must_be_string_or_array_of_strings() {
    let err = spec(r#"{"command": 3}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("a string (run by `sh -c`) or an array"),
        "{err}"
    );
    let err = spec(r#"{"command": []}"#).unwrap_err();
    assert_eq!(err.field_errors()[0].field, "command");
}

#[test]
fn a_program_named_like_an_option_is_refused_with_the_way_round() {
    // run.sh's POSIX `exec` takes no `--`: `exec -x` would be read as an option.
    let err = spec(r#"{"command": ["-x", "a"]}"#).unwrap_err();
    assert_eq!(err.field_errors()[0].field, "command[0]");
    assert!(err.to_string().contains("./-name"), "{err}");
    // Later arguments may look like options: they follow the program.
    spec(r#"{"command": ["./-x", "-a", "--"]}"#).unwrap();
}

#[test]
fn every_bad_field_is_named() {
    let err = spec(
        r#"{"name": "-bad name", "git_url": "ftp://x/y", "commit_hash": "main",
            "data": [{"url": "file:///etc/passwd"}, {"url": "http://a/b", "sha256": "12",
            "path": "../../etc/cron.d/x"}],
            "command": "", "env": {"1BAD": "x", "OK": "a\u0000b"}, "base_image": "x y"}"#,
    )
    .unwrap_err();
    let fields: Vec<_> = err
        .field_errors()
        .iter()
        .map(|e| e.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "name",
            "git_url",
            "commit_hash",
            "data[0].url",
            "data[1].sha256",
            "data[1].path",
            "command",
            "env.1BAD",
            "env.OK",
            "base_image"
        ]
    );
    assert!(
        err.to_string().contains("unsupported scheme \"ftp\""),
        "{err}"
    );
}

#[test]
fn git_url_and_commit_go_together() {
    let err = spec(r#"{"git_url": "https://h/r", "command": "x"}"#).unwrap_err();
    assert_eq!(err.field_errors()[0].field, "commit_hash");
    let err = spec(r#"{"commit_hash": "0123456", "command": "x"}"#).unwrap_err();
    assert_eq!(err.field_errors()[0].field, "git_url");
}

#[test]
fn data_paths_must_not_collide() {
    let err = spec(
        r#"{"command": "x", "data_url": "http://h/a.csv",
            "data": [{"url": "http://h/b", "path": "a.csv"},
                     {"url": "http://h/c", "path": "d"}, {"url": "http://h/e", "path": "d/e"}]}"#,
    )
    .unwrap_err();
    let msgs = err.to_string();
    assert!(
        msgs.contains("data[0]: writes data/a.csv which data_url writes too"),
        "{msgs}"
    );
    assert!(
        msgs.contains("data[1]: data/d is a file but data/d/e"),
        "{msgs}"
    );
}

#[test]
fn default_data_names_are_safe() {
    let name = |u: &str| default_data_name(&Url::parse(u).unwrap());
    assert_eq!(name("http://h/a%20b$(x).csv?q=1"), "a_20b__x_.csv");
    assert_eq!(name("http://h/"), "data");
    assert_eq!(name("http://h/.."), "data");
    assert_eq!(name("http://h/x/..."), "data");
}

#[test]
fn rel_paths_are_normalised() {
    assert_eq!(normalise_rel_path("./a//b/").unwrap(), "a/b");
    assert!(normalise_rel_path("/etc/x").is_err());
    assert!(normalise_rel_path("a/../../b").is_err());
    assert!(normalise_rel_path("a\\b").is_err());
    assert!(normalise_rel_path("a\nb").is_err());
    assert!(normalise_rel_path("./").is_err());
}

#[test]
fn normalised_spec_folds_data_url_and_records_the_commit() {
    let job = spec(
        r#"{"git_url": "https://h/r", "commit_hash": "abcdef1",
            "data_url": "http://h/x.csv", "command": ["a"]}"#,
    )
    .unwrap();
    let n = job.normalised_spec(Some(&"f".repeat(40)));
    assert_eq!(n.commit_hash.as_deref(), Some("f".repeat(40).as_str()));
    assert_eq!(n.data_url, None);
    assert_eq!(n.data[0].path.as_deref(), Some("x.csv"));
    assert_eq!(n.base_image.as_deref(), Some(DEFAULT_BASE_IMAGE));
    // The normalised spec is itself valid and stable.
    assert_eq!(n.validate().unwrap().normalised_spec(None), n);
}

/// Every spec under `fixtures/specs/` is valid; every one under `fixtures/specs/invalid/` is
/// rejected with an error naming the field its file is named after.
#[test]
fn fixture_specs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/specs");
    let mut valid = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            JobSpec::from_path(&p).unwrap().validate().unwrap();
            valid += 1;
        }
    }
    let mut invalid = 0;
    for e in std::fs::read_dir(dir.join("invalid")).unwrap() {
        let p = e.unwrap().path();
        let field = p.file_stem().unwrap().to_str().unwrap().to_owned();
        let err = JobSpec::from_path(&p).unwrap().validate().unwrap_err();
        assert!(
            err.field_errors().iter().any(|e| e.field == field),
            "{}: expected an error on {field}, got: {err}",
            p.display()
        );
        invalid += 1;
    }
    assert!(
        valid >= 2 && invalid >= 8,
        "fixtures missing: {valid} valid, {invalid} invalid"
    );
}
