use super::*;

/// A tar built entry by entry: (path, kind, body or link target).
fn tar_of(entries: &[(&str, char, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(if *kind == 'd' { 0o755 } else { 0o644 });
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match kind {
            'f' => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(body.len() as u64);
                // Raw names (`..` included) as a hostile archive would carry them.
                h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, body.as_bytes()).unwrap();
            }
            'd' => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).unwrap();
            }
            'l' | 'h' => {
                h.set_entry_type(if *kind == 'l' {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_size(0);
                b.append_link(&mut h, path, body).unwrap();
            }
            'c' => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).unwrap();
            }
            _ => unreachable!(),
        }
    }
    b.into_inner().unwrap()
}

fn base() -> Vec<(&'static str, char, &'static str)> {
    vec![
        ("usr/", 'd', ""),
        ("usr/lib/", 'd', ""),
        (
            "usr/lib/os-release",
            'f',
            "PRETTY_NAME=\"Test Linux 1\"\nID=test\n",
        ),
        ("etc/", 'd', ""),
        ("etc/os-release", 'l', "../usr/lib/os-release"),
        ("usr/bin/", 'd', ""),
        ("usr/bin/tool", 'f', "#!/bin/sh\necho tool\n"),
        ("usr/bin/tool2", 'h', "usr/bin/tool"),
        ("bin", 'l', "usr/bin"),
        ("dev/", 'd', ""),
        ("dev/null", 'c', ""),
    ]
}

#[test]
fn references_parse_and_refuse() {
    let d = "a".repeat(64);
    let r = RuntimeRef::parse(&format!("python-3.11-bookworm@sha256:{d}")).unwrap();
    assert_eq!(r.name, "python-3.11-bookworm");
    assert_eq!(r.digest.as_deref(), Some(format!("sha256:{d}").as_str()));
    assert_eq!(r.to_string(), format!("python-3.11-bookworm@sha256:{d}"));
    assert_eq!(RuntimeRef::parse("plain").unwrap().digest, None);
    for bad in [
        "",
        "Upper",
        "a..b",
        "-a",
        "a/b",
        "../x",
        "a@sha256:12",
        "a@md5:00",
        &format!("a@sha256:{}", "g".repeat(64)),
        &"a".repeat(65),
    ] {
        assert!(RuntimeRef::parse(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn a_tarball_imports_to_a_digest_that_is_its_content() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sa, sb) = (
        Store::open(a.path()).unwrap(),
        Store::open(b.path()).unwrap(),
    );
    let tar = tar_of(&base());
    let rt = sa
        .import_tar("t1", &tar[..], "test", ImportLimits::default())
        .unwrap();
    assert!(
        rt.digest.starts_with("sha256:") && rt.digest.len() == 71,
        "{rt:?}"
    );
    assert_eq!(rt.os_release.as_deref(), Some("Test Linux 1"));
    assert!(rt.image.starts_with("localhost/jobpack-runtime/t1@sha256:"));
    let tree = sa.tree(&rt);
    assert_eq!(
        fs::read_to_string(tree.join("bin/tool")).unwrap(),
        "#!/bin/sh\necho tool\n"
    );
    assert!(!tree.join("dev/null").exists(), "devices are never kept");
    // The same bytes in another store, or the canonical layer itself imported again: one digest.
    let again = sb
        .import_tar("t1", &tar[..], "test", ImportLimits::default())
        .unwrap();
    assert_eq!(again.digest, rt.digest);
    assert_eq!(again.image, rt.image);
    let layer = fs::read(a.path().join("blobs/sha256").join(&rt.digest[7..])).unwrap();
    let relayered = sb
        .import_tar("t2", &layer[..], "test", ImportLimits::default())
        .unwrap();
    assert_eq!(
        relayered.digest, rt.digest,
        "the canonical layer is a fixed point"
    );
    // One changed byte: another digest.
    let mut changed = base();
    changed[6] = ("usr/bin/tool", 'f', "#!/bin/sh\necho Tool\n");
    let other = sb
        .import_tar("t3", &tar_of(&changed)[..], "test", ImportLimits::default())
        .unwrap();
    assert_ne!(other.digest, rt.digest);
    // The store is an OCI layout naming each runtime.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(b.path().join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"][oci::REF_NAME].as_str().unwrap())
        .collect();
    assert_eq!(names, ["t1", "t2", "t3"]);
    // A name is taken once; removing one of two names of a digest keeps the tree.
    let err = sb
        .import_tar("t1", &tar[..], "test", ImportLimits::default())
        .unwrap_err();
    assert!(matches!(err, RootfsError::Exists { .. }), "{err}");
    sb.remove("t2").unwrap();
    assert!(sb.tree(&rt).join("usr/bin/tool").exists());
    sb.remove("t1").unwrap();
    assert!(!sb.tree(&rt).exists());
    assert!(!b.path().join("blobs/sha256").join(&rt.digest[7..]).exists());
    assert!(matches!(sb.get("t1"), Err(RootfsError::NotFound(_))));
    let pinned = RuntimeRef::parse(&format!("t3@{}", rt.digest)).unwrap();
    assert!(matches!(
        sb.resolve(&pinned),
        Err(RootfsError::Mismatch { .. })
    ));
    assert_eq!(
        fs::read_dir(b.path().join("tmp")).unwrap().count(),
        0,
        "nothing is left staged"
    );
}

#[test]
fn hostile_tarballs_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let escape_link = outside.path().display().to_string();
    let cases: Vec<Vec<(&str, char, &str)>> = vec![
        vec![("../evil", 'f', "x")],
        vec![("a/../../evil", 'f', "x")],
        // A link out, then a file through it.
        vec![("etc", 'l', escape_link.as_str()), ("etc/evil", 'f', "x")],
        vec![("etc", 'l', "../../.."), ("etc/evil", 'f', "x")],
    ];
    for (i, c) in cases.iter().enumerate() {
        let err = s
            .import_tar(
                &format!("bad{i}"),
                &tar_of(c)[..],
                "test",
                ImportLimits::default(),
            )
            .unwrap_err();
        assert!(matches!(err, RootfsError::BadArchive(_)), "case {i}: {err}");
    }
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing was written outside"
    );
    assert!(s.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    // Limits.
    let small = ImportLimits {
        max_bytes: 10,
        max_entries: 100,
    };
    let err = s
        .import_tar("big", &tar_of(&base())[..], "test", small)
        .unwrap_err();
    assert!(matches!(err, RootfsError::TooLarge(_)), "{err}");
    let few = ImportLimits {
        max_bytes: 1 << 20,
        max_entries: 3,
    };
    let err = s
        .import_tar("many", &tar_of(&base())[..], "test", few)
        .unwrap_err();
    assert!(matches!(err, RootfsError::TooLarge(_)), "{err}");
}

#[test]
fn oci_layouts_import_with_whiteouts_and_checked_digests() {
    let src = tempfile::tempdir().unwrap();
    let blobs = src.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let lower = tar_of(&[
        ("keep", 'f', "k"),
        ("gone", 'f', "g"),
        ("opaque/", 'd', ""),
        ("opaque/old", 'f', "o"),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(
        &mut gz,
        &tar_of(&[
            (".wh.gone", 'f', ""),
            ("opaque/", 'd', ""),
            ("opaque/.wh..wh..opq", 'f', ""),
            ("opaque/new", 'f', "n"),
        ]),
    )
    .unwrap();
    let upper = gz.finish().unwrap();
    let (l1, n1) = put(&lower);
    let (l2, n2) = put(&upper);
    let (cfg, ncfg) = put(b"{}");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": ncfg},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l1, "size": n1},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l2, "size": n2},
        ],
    }))
    .unwrap();
    let (m, nm) = put(&manifest);
    fs::write(
        src.path().join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": oci::MANIFEST_TYPE, "digest": m, "size": nm,
             "annotations": {oci::REF_NAME: "img"}}]}))
        .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let rt = s
        .import_oci("img", src.path(), Some("img"), ImportLimits::default())
        .unwrap();
    let tree = s.tree(&rt);
    assert!(tree.join("keep").exists());
    assert!(
        !tree.join("gone").exists(),
        "a whiteout removes the lower file"
    );
    assert!(
        !tree.join("opaque/old").exists(),
        "an opaque directory hides the lower ones"
    );
    assert!(tree.join("opaque/new").exists());
    assert!(!tree.join(".wh.gone").exists());
    // A layer whose bytes are not its digest.
    let err = s
        .import_oci(
            "missing",
            src.path(),
            Some("other"),
            ImportLimits::default(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("no image other"), "{err}");
    fs::write(blobs.join(&l1[7..]), b"tampered").unwrap();
    let err = s
        .import_oci("tampered", src.path(), None, ImportLimits::default())
        .unwrap_err();
    assert!(err.to_string().contains("has digest"), "{err}");
}
