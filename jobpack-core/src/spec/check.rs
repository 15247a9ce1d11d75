//! The checks of each field of a spec, one function per kind of value: each records what is
//! wrong in [`Errors`] (every problem, each with its field) and returns the checked value.

use std::collections::BTreeMap;

use url::Url;

use super::*;

#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<FieldError>);

impl Errors {
    pub(super) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

pub(super) fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

pub(super) fn check_name(name: &str, errs: &mut Errors) {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        errs.push(
            "name",
            format!(
                "must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a \
                 letter or digit; got {name:?}"
            ),
        );
    }
}

pub(super) fn check_git_url(url: &str, errs: &mut Errors) -> Option<String> {
    validate_git_url(url)
        .map_err(|msg| errs.push("git_url", msg))
        .ok()
}

/// Accepts `https`, `http`, `ssh`, `git` and `file` URLs and scp-like `user@host:path`; says what
/// is wrong otherwise.
pub fn validate_git_url(url: &str) -> Result<String, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("longer than {MAX_URL_LEN} characters"));
    }
    if url.is_empty() || has_control(url) || url.contains(char::is_whitespace) {
        return Err(format!(
            "must be a non-empty URL without spaces or control characters; got {url:?}"
        ));
    }
    if url.starts_with('-') {
        return Err(format!("must not start with '-'; got {url:?}"));
    }
    match Url::parse(url) {
        Ok(u) => match u.scheme() {
            "https" | "http" | "ssh" | "git" if u.host_str().is_none_or(str::is_empty) => {
                Err(format!("has no host; got {url:?}"))
            }
            "https" | "http" | "ssh" | "git" | "file" => Ok(url.to_owned()),
            other => Err(format!(
                "unsupported scheme {other:?}: use https, http, ssh, git or file (or user@host:path)"
            )),
        },
        Err(_) if is_scp_like(url) => Ok(url.to_owned()),
        Err(e) => Err(format!("not a valid URL ({e}); got {url:?}")),
    }
}

/// `user@host:path`, as git accepts for ssh.
pub(super) fn is_scp_like(url: &str) -> bool {
    let Some((userhost, path)) = url.split_once(':') else {
        return false;
    };
    let host = userhost.rsplit('@').next().unwrap_or(userhost);
    !path.is_empty()
        && !host.is_empty()
        && !userhost.contains('/')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

pub(super) fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(super) fn check_commit(commit: &str, errs: &mut Errors) -> Option<CommitRef> {
    let c = commit.to_ascii_lowercase();
    if !is_hex(&c) || c.is_empty() {
        errs.push(
            "commit_hash",
            format!("must be hexadecimal (a commit id, not a branch or tag name); got {commit:?}"),
        );
        return None;
    }
    match c.len() {
        40 | 64 => Some(CommitRef::Full(c)),
        7..=39 => Some(CommitRef::Abbreviated(c)),
        n => {
            errs.push(
                "commit_hash",
                format!(
                    "must be 40 (SHA-1) or 64 (SHA-256) hex digits, or an abbreviation of at \
                     least 7; got {n} digits"
                ),
            );
            None
        }
    }
}

pub(super) fn check_data(field: &str, item: &DataSpec, errs: &mut Errors) -> Option<DataItem> {
    let url_field = if field == "data_url" {
        field.to_owned()
    } else {
        format!("{field}.url")
    };
    let mut ok = true;
    let url = if item.url.len() > MAX_URL_LEN {
        errs.push(&url_field, format!("longer than {MAX_URL_LEN} characters"));
        None
    } else {
        match Url::parse(&item.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            Ok(u) => {
                errs.push(
                    &url_field,
                    format!(
                        "only http and https URLs with a host can be downloaded; got scheme {:?}",
                        u.scheme()
                    ),
                );
                None
            }
            Err(e) => {
                errs.push(
                    &url_field,
                    format!("not a valid URL ({e}); got {:?}", item.url),
                );
                None
            }
        }
    };
    let sha256 = match &item.sha256 {
        Some(h) => {
            let h = h.to_ascii_lowercase();
            if h.len() != 64 || !is_hex(&h) {
                errs.push(
                    format!("{field}.sha256"),
                    format!("must be 64 hex digits, got {} characters", h.len()),
                );
                ok = false;
            }
            Some(h)
        }
        None => None,
    };
    let path = match &item.path {
        Some(p) => match normalise_rel_path(p) {
            Ok(p) => Some(p),
            Err(msg) => {
                errs.push(format!("{field}.path"), msg);
                None
            }
        },
        None => url.as_ref().map(default_data_name),
    };
    match (url, path) {
        (Some(url), Some(path)) if ok => Some(DataItem { url, sha256, path }),
        _ => None,
    }
}

/// The file name a download gets when the spec gives no `path`: the URL's last path segment,
/// with anything but `[A-Za-z0-9._-]` replaced by `_`; `data` when that leaves nothing usable.
pub(super) fn default_data_name(url: &Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("");
    let name: String = last
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        "data".to_owned()
    } else {
        name
    }
}

/// Normalises a relative path: `/`-separated, no empty, `.` or `..` components, not absolute, no
/// control characters or backslashes. Returns a message saying what is wrong otherwise.
pub fn normalise_rel_path(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    if p.starts_with('/') {
        return Err(format!("must be relative, got absolute path {p:?}"));
    }
    if has_control(p) || p.contains('\\') {
        return Err(format!(
            "must not contain control characters or backslashes; got {p:?}"
        ));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => continue,
            ".." => return Err(format!("must not contain '..'; got {p:?}")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(format!("names no file; got {p:?}"));
    }
    Ok(parts.join("/"))
}

pub(super) fn check_data_paths(items: &[(String, DataSpec)], data: &[DataItem], errs: &mut Errors) {
    // Only meaningful when every item validated; otherwise indices would not line up.
    if items.len() != data.len() {
        return;
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for ((field, _), d) in items.iter().zip(data) {
        if let Some(prev) = seen.insert(&d.path, field) {
            errs.push(
                field.clone(),
                format!(
                    "writes data/{} which {prev} writes too: give one of them a distinct `path`",
                    d.path
                ),
            );
        }
    }
    for ((field, _), d) in items.iter().zip(data) {
        let dir = format!("{}/", d.path);
        if let Some((other, _)) = seen
            .range(dir.as_str()..)
            .next()
            .filter(|(k, _)| k.starts_with(&dir))
        {
            errs.push(
                field.clone(),
                format!(
                    "data/{} is a file but data/{other} needs it to be a directory",
                    d.path
                ),
            );
        }
    }
}

pub(super) fn check_command(command: &Command, errs: &mut Errors) -> Option<Command> {
    match command {
        Command::Shell(s) => {
            if s.trim().is_empty() {
                errs.push("command", "must not be empty");
            } else if s.len() > MAX_VALUE_LEN {
                errs.push("command", format!("longer than {MAX_VALUE_LEN} bytes"));
            } else if s.contains('\0') {
                errs.push("command", "must not contain NUL bytes");
            } else {
                return Some(command.clone());
            }
        }
        Command::Argv(argv) => {
            if argv.first().is_none_or(|a| a.is_empty()) {
                errs.push(
                    "command",
                    "argv must be non-empty with a non-empty program name",
                );
                return None;
            }
            // run.sh ends in `exec PROGRAM ARGS...`: a POSIX shell's exec takes no `--`, so a
            // program named like an option could not be started as written.
            if argv[0].starts_with('-') {
                errs.push(
                    "command[0]",
                    "the program name must not begin with '-' (give a path: ./-name)",
                );
                return None;
            }
            let mut ok = true;
            let mut total = 0;
            for (i, a) in argv.iter().enumerate() {
                total += a.len();
                if a.contains('\0') {
                    errs.push(format!("command[{i}]"), "must not contain NUL bytes");
                    ok = false;
                }
            }
            if total > MAX_VALUE_LEN {
                errs.push(
                    "command",
                    format!("longer than {MAX_VALUE_LEN} bytes in all"),
                );
                ok = false;
            }
            if ok {
                return Some(command.clone());
            }
        }
    }
    None
}

/// Environment variable names: `[A-Za-z_][A-Za-z0-9_]*`; values: no NUL (a shell cannot carry it).
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "not a valid variable name (letters, digits and '_', not starting with a digit); \
             got {name:?}"
        ))
    }
}

pub(super) fn check_env(env: &BTreeMap<String, String>, errs: &mut Errors) {
    if env.len() > MAX_ENV_VARS {
        errs.push(
            "env",
            format!("at most {MAX_ENV_VARS} variables, got {}", env.len()),
        );
        return;
    }
    for (k, v) in env {
        if let Err(msg) = check_env_name(k) {
            errs.push(format!("env.{k}"), msg);
        } else if v.contains('\0') {
            errs.push(format!("env.{k}"), "value must not contain NUL bytes");
        } else if v.len() > MAX_VALUE_LEN {
            errs.push(
                format!("env.{k}"),
                format!("value longer than {MAX_VALUE_LEN} bytes"),
            );
        }
    }
}

/// A container image reference: `[registry/]name[:tag][@sha256:digest]`.
/// Install commands: each a non-empty shell command line without NUL (it is rendered into the
/// Dockerfile as one JSON string, so newlines and quotes are safe).
pub(super) fn check_install(cmds: &[String], errs: &mut Errors) {
    if cmds.is_empty() || cmds.len() > 64 {
        errs.push(
            "install",
            "give 1 to 64 commands, or leave install out".to_owned(),
        );
    }
    for (i, c) in cmds.iter().enumerate() {
        if c.trim().is_empty() || c.contains('\0') || c.len() > 8192 {
            errs.push(
                format!("install[{i}]"),
                "a command is non-empty, at most 8192 bytes, without NUL".to_owned(),
            );
        }
    }
}

pub(super) fn check_image(img: &str, errs: &mut Errors) {
    let ok = !img.is_empty()
        && img.len() <= 512
        && img.as_bytes()[0].is_ascii_alphanumeric()
        && img.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        });
    if !ok {
        errs.push(
            "base_image",
            format!(
                "not an image reference like `debian:bookworm` or `name@sha256:<digest>`; \
                 got {img:?}"
            ),
        );
    }
}
