//! `jobpack admin`: users, tokens, quotas and the audit log, straight on the server's database
//! (`--data-dir`), for the operator of the machine. The server may be running: SQLite in WAL mode
//! takes both, and every request reads users and tokens afresh, so a change applies at once.
//! Admins elsewhere use the same operations over HTTP (`/v1/users`, `/v1/tokens`, `/v1/audit`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::server::store::Store;
use crate::server::store::accounts::{Quota, Role};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The server's data directory (holds jobpack.db).
    #[arg(
        long,
        env = "JOBPACK_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Users: add, list, disable, enable, quota.
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The keys that sign password sign-ins' sessions (JWTs).
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// The audit log: who submitted, cancelled and deleted what.
    Audit {
        #[arg(long)]
        actor: Option<String>,
        /// A job id, user name or token id.
        #[arg(long)]
        target: Option<String>,
        /// Entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Remove ended jobs' files as retention says (--retain, --max-data-gb, or the server's
    /// JOBPACK_RETAIN / JOBPACK_MAX_DATA_GB); their records stay. Pinned, queued and running
    /// jobs are never touched.
    Gc {
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        retention: crate::server::RetentionArgs,
        /// The shared directory jobs work in, if the server has one (`--shared-dir`).
        #[arg(long, env = "JOBPACK_SHARED_DIR")]
        shared_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct QuotaArgs {
    /// Most jobs not yet ended at once.
    #[arg(long)]
    max_concurrent: Option<u64>,
    /// Largest time limit a job may ask for, in seconds.
    #[arg(long)]
    max_timeout: Option<f64>,
    /// Largest memory limit a job may ask for, in MiB.
    #[arg(long)]
    max_memory: Option<u64>,
    /// Largest CPU limit, in percent of one core.
    #[arg(long)]
    max_cpu: Option<u32>,
    /// Largest process limit.
    #[arg(long)]
    max_pids: Option<u64>,
    /// Let the user run jobs with `"network": "host"`.
    #[arg(long)]
    allow_host_network: bool,
}

impl QuotaArgs {
    fn quota(&self) -> anyhow::Result<Quota> {
        if let Some(t) = self.max_timeout
            && !(t.is_finite() && t > 0.0)
        {
            anyhow::bail!("--max-timeout must be a positive number of seconds");
        }
        Ok(Quota {
            max_concurrent: self.max_concurrent,
            max_timeout_secs: self.max_timeout,
            max_memory_bytes: self
                .max_memory
                .map(|m| m.checked_mul(1 << 20).context("--max-memory is too large"))
                .transpose()?,
            max_cpu_percent: self.max_cpu,
            max_pids: self.max_pids,
            allow_host_network: self.allow_host_network.then_some(true),
        })
    }
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (then give them a token with `admin token create`, or a password).
    Add {
        /// The login name (an email address is fine: `dev@example.com`).
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Also set a password (asked for on the terminal, or read as one line from stdin),
        /// for `POST /api/v1/auth/token` and the dashboard's sign-in.
        #[arg(long)]
        password: bool,
        #[command(flatten)]
        quota: QuotaArgs,
    },
    /// Set a user's password (asked for on the terminal, or one line from stdin); `--remove`
    /// takes it away (tokens and certificates keep working).
    Passwd {
        name: String,
        #[arg(long)]
        remove: bool,
    },
    /// List users.
    List,
    /// Disable a user: their tokens and certificates are refused from now on.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
    /// Replace a user's quota (flags not given: no cap).
    Quota {
        name: String,
        #[command(flatten)]
        quota: QuotaArgs,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token for a user; it is printed once and stored only as a hash.
    Create {
        user: String,
        /// A label (where the token is used).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never the tokens themselves).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by id (or a unique prefix of it).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum JwtCommand {
    /// Sign new sessions with a new key: sessions signed with the previous key stay valid until
    /// they expire, older ones end now.
    Rotate,
}

/// A password from the terminal (not echoed, asked twice) or one line of stdin.
fn read_password(name: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let line = |prompt: &str| -> anyhow::Result<String> {
        let tty = stdin.is_terminal();
        let saved = if tty {
            eprint!("{prompt}");
            std::io::stderr().flush().ok();
            let t =
                rustix::termios::tcgetattr(&stdin).context("cannot read the terminal's mode")?;
            let mut quiet = t.clone();
            quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)
                .context("cannot turn off echo")?;
            Some(t)
        } else {
            None
        };
        let mut s = String::new();
        let read = stdin.lock().read_line(&mut s);
        if let Some(t) = saved {
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t)
                .context("cannot restore the terminal's echo")?;
            eprintln!();
        }
        read.context("cannot read the password")?;
        Ok(s.trim_end_matches(['\n', '\r']).to_owned())
    };
    let pw = line(&format!("password for {name}: "))?;
    if stdin.is_terminal() && line("again: ")? != pw {
        anyhow::bail!("the two passwords differ");
    }
    Ok(pw)
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn hash(password: &str) -> anyhow::Result<String> {
    crate::server::service::sign_in::hash_password(password)
        .map_err(|e| anyhow::anyhow!("{}", e.message))
}

fn time(t: f64) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
    humantime::format_rfc3339_seconds(st).to_string()
}

pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let db = args.data_dir.join("jobpack.db");
    if !db.exists() {
        anyhow::bail!(
            "no database at {}: start `jobpack serve --data-dir {}` once, or pass the right \
             --data-dir",
            db.display(),
            args.data_dir.display()
        );
    }
    let store = Store::open(&db).with_context(|| format!("cannot open {}", db.display()))?;
    let actor = format!(
        "cli:{}",
        std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into())
    );
    let json = args.json;
    let print = |v: serde_json::Value, table: String| {
        if json {
            println!("{v:#}");
        } else {
            print!("{table}");
        }
    };
    match args.command {
        AdminCommand::Gc {
            dry_run,
            retention,
            shared_dir,
        } => {
            use crate::server::service::retention::{Roots, collect};
            let policy = retention.policy();
            if !policy.is_set() && !dry_run {
                anyhow::bail!(
                    "nothing says what to remove: give --retain DURATION and/or --max-data-gb N"
                );
            }
            let roots = Roots {
                data_dir: args.data_dir.clone(),
                work_root: shared_dir.unwrap_or_else(|| args.data_dir.clone()),
            };
            let rep = collect(&store, &roots, &policy, dry_run, &|_| false)?;
            if !dry_run && !rep.collected.is_empty() {
                store.audit(
                    &actor,
                    "gc",
                    None,
                    Some(&format!(
                        "jobs={} bytes={}",
                        rep.collected.len(),
                        rep.freed_bytes
                    )),
                );
            }
            let mut table = String::new();
            for c in &rep.collected {
                table.push_str(&format!(
                    "{}  {:>12} bytes  {}\n",
                    c.job_id, c.bytes, c.reason
                ));
            }
            table.push_str(&format!(
                "{} {} jobs, {} bytes (of {} used){}\n",
                if dry_run { "would remove" } else { "removed" },
                rep.collected.len(),
                rep.freed_bytes,
                rep.used_bytes,
                if rep.recovered > 0 {
                    format!("; finished {} left by an interrupted run", rep.recovered)
                } else {
                    String::new()
                }
            ));
            print(serde_json::to_value(&rep)?, table);
        }
        AdminCommand::User(UserCommand::Add {
            name,
            role,
            password,
            quota,
        }) => {
            let q = quota.quota()?;
            let hash = if password {
                Some(hash(&read_password(&name)?)?)
            } else {
                None
            };
            store.add_user(&name, role, &q)?;
            if let Some(h) = &hash {
                store.set_password_hash(&name, Some(h))?;
            }
            store.audit(
                &actor,
                "user.add",
                Some(&name),
                Some(&format!("role={role}")),
            );
            print(
                serde_json::json!({"name": name, "role": role, "quota": q}),
                format!("added user {name} ({role})\n"),
            );
        }
        AdminCommand::User(UserCommand::List) => {
            let users = store.users()?;
            let mut table = format!("{:<24} {:<10} {:<8} QUOTA\n", "NAME", "ROLE", "STATE");
            for u in &users {
                let q = serde_json::to_string(&u.quota)?;
                let state = if u.disabled { "disabled" } else { "active" };
                table.push_str(&format!("{:<24} {:<10} {state:<8} {q}\n", u.name, u.role));
            }
            let v = users
                .iter()
                .map(|u| {
                    serde_json::json!({"name": u.name, "role": u.role, "disabled": u.disabled,
                        "quota": u.quota, "created_at": time(u.created_at)})
                })
                .collect();
            print(serde_json::Value::Array(v), table);
        }
        AdminCommand::User(UserCommand::Passwd { name, remove }) => {
            let h = if remove {
                None
            } else {
                Some(hash(&read_password(&name)?)?)
            };
            store.set_password_hash(&name, h.as_deref())?;
            let action = if remove {
                "user.password_remove"
            } else {
                "user.password"
            };
            store.audit(&actor, action, Some(&name), None);
            print(
                serde_json::json!({"name": name, "password": !remove}),
                format!(
                    "{} the password of {name}\n",
                    if remove { "removed" } else { "set" }
                ),
            );
        }
        AdminCommand::Jwt(JwtCommand::Rotate) => {
            let id = crate::server::service::sign_in::rotate_key(&store)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            store.audit(&actor, "jwt.rotate", Some(&id), None);
            print(
                serde_json::json!({"key_id": id}),
                format!("new signing key {id}; sessions signed before the previous key now end\n"),
            );
        }
        AdminCommand::User(UserCommand::Disable { name }) => {
            store.set_user_disabled(&name, true)?;
            store.audit(&actor, "user.disable", Some(&name), None);
            print(
                serde_json::json!({"name": name, "disabled": true}),
                format!("disabled {name}\n"),
            );
        }
        AdminCommand::User(UserCommand::Enable { name }) => {
            store.set_user_disabled(&name, false)?;
            store.audit(&actor, "user.enable", Some(&name), None);
            print(
                serde_json::json!({"name": name, "disabled": false}),
                format!("enabled {name}\n"),
            );
        }
        AdminCommand::User(UserCommand::Quota { name, quota }) => {
            let q = quota.quota()?;
            store.set_quota(&name, &q)?;
            let detail = serde_json::to_string(&q)?;
            store.audit(&actor, "user.quota", Some(&name), Some(&detail));
            print(
                serde_json::json!({"name": name, "quota": q}),
                format!("quota of {name}: {detail}\n"),
            );
        }
        AdminCommand::Token(TokenCommand::Create { user, name }) => {
            let (row, token) = store.create_token(&user, name.as_deref())?;
            store.audit(
                &actor,
                "token.create",
                Some(&row.id),
                Some(&format!("user={user}")),
            );
            print(
                serde_json::json!({"token_id": row.id, "user": user, "token": token}),
                format!(
                    "token {} for {user} (shown only this once):\n{token}\n",
                    row.id
                ),
            );
        }
        AdminCommand::Token(TokenCommand::List { user }) => {
            let rows = store.tokens(user.as_deref())?;
            let mut table = format!(
                "{:<36} {:<16} {:<16} {:<20} STATE\n",
                "ID", "USER", "NAME", "CREATED"
            );
            for t in &rows {
                let state = match t.revoked_at {
                    Some(r) => format!("revoked {}", time(r)),
                    None => "active".into(),
                };
                table.push_str(&format!(
                    "{:<36} {:<16} {:<16} {:<20} {state}\n",
                    t.id,
                    t.user_name,
                    t.name.as_deref().unwrap_or("-"),
                    time(t.created_at)
                ));
            }
            let v = rows
                .iter()
                .map(|t| {
                    serde_json::json!({"token_id": t.id, "user": t.user_name, "name": t.name,
                        "created_at": time(t.created_at),
                        "last_used_at": t.last_used_at.map(time),
                        "revoked_at": t.revoked_at.map(time)})
                })
                .collect();
            print(serde_json::Value::Array(v), table);
        }
        AdminCommand::Token(TokenCommand::Revoke { id }) => {
            let t = store.revoke_token(&id)?;
            store.audit(
                &actor,
                "token.revoke",
                Some(&t.id),
                Some(&format!("user={}", t.user_name)),
            );
            print(
                serde_json::json!({"token_id": t.id, "user": t.user_name, "revoked": true}),
                format!("revoked token {} of {}\n", t.id, t.user_name),
            );
        }
        AdminCommand::Audit {
            actor: who,
            target,
            after,
            limit,
        } => {
            let rows = store.audit_log(who.as_deref(), target.as_deref(), after, limit)?;
            let mut table = format!(
                "{:<6} {:<20} {:<16} {:<14} {:<36} DETAIL\n",
                "SEQ", "AT", "ACTOR", "ACTION", "TARGET"
            );
            for a in &rows {
                table.push_str(&format!(
                    "{:<6} {:<20} {:<16} {:<14} {:<36} {}\n",
                    a.seq,
                    time(a.at),
                    a.actor,
                    a.action,
                    a.target.as_deref().unwrap_or("-"),
                    a.detail.as_deref().unwrap_or("")
                ));
            }
            let v = rows
                .iter()
                .map(|a| {
                    serde_json::json!({"seq": a.seq, "at": time(a.at), "actor": a.actor,
                        "action": a.action, "target": a.target, "detail": a.detail})
                })
                .collect();
            print(serde_json::Value::Array(v), table);
        }
    }
    Ok(ExitCode::SUCCESS)
}
