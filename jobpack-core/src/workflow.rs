//! Workflows: jobs named by key, each a job submission plus `requires` (other jobs and the status
//! each must reach), checked as a whole before anything runs.
//!
//! ```yaml
//! jobs:
//!   setup-data: {command: "python3 setup.py"}
//!   process-data:
//!     command: "python3 process.py"
//!     requires: [{setup-data: completed}]   # or just [setup-data]
//! ```
//!
//! This module parses the file, checks names, requirements and cycles, and gives an order in which
//! every job comes after what it requires. What a job body may contain is the caller's business
//! (a `JobSpec`, or a service's submission with limits and secrets): [`Workflow::check_jobs`] runs
//! the caller's check on each body and reports problems at their exact path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Statuses a requirement may name: a job's final statuses, `ended` for any of them, and the
/// gRPC job service's words (`COMPLETED`, `FAILED` for any failure, `STOPPED`).
pub const REQUIRABLE: &[&str] = &[
    "completed",
    "failed",
    "stopped",
    "timed_out",
    "oom_killed",
    "limit_exceeded",
    "ended",
    "COMPLETED",
    "FAILED",
    "STOPPED",
];

/// Final statuses of a workflow's jobs: a run's final statuses, and `skipped` for a job whose
/// requirements could no longer be met (it never ran).
pub const FINAL: &[&str] = &[
    "completed",
    "failed",
    "stopped",
    "timed_out",
    "oom_killed",
    "limit_exceeded",
    "skipped",
];

/// Where a waiting job stands, given the statuses of the jobs it requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Some required job has not ended yet.
    Waiting,
    /// Every requirement is met: the job may start.
    Ready,
    /// A requirement can no longer be met (the reason names it): the job is `skipped`.
    Unmeetable(String),
}

/// Decides a waiting job's fate from its requirements and `status_of` (the current status of a
/// job of the workflow by name, `None` if it no longer exists). A requirement that can no longer
/// be met decides at once, even while other required jobs still run.
pub fn readiness<'a>(
    requires: &[Requirement],
    status_of: impl Fn(&str) -> Option<&'a str>,
) -> Readiness {
    let mut waiting = false;
    for r in requires {
        match status_of(&r.job) {
            None => {
                return Readiness::Unmeetable(format!("required job {} no longer exists", r.job));
            }
            Some(s) if FINAL.contains(&s) => {
                if !r.met_by(s) {
                    return Readiness::Unmeetable(format!(
                        "required {} to be {}, but it ended {s}",
                        r.job, r.status
                    ));
                }
            }
            Some(_) => waiting = true,
        }
    }
    if waiting {
        Readiness::Waiting
    } else {
        Readiness::Ready
    }
}

/// One requirement: `job` must end in `status` (`ended`: in any final status, `skipped`
/// included).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Requirement {
    pub job: String,
    pub status: String,
}

impl Requirement {
    /// Whether a final `status` of the required job satisfies this requirement.
    pub fn met_by(&self, status: &str) -> bool {
        match self.status.as_str() {
            "ended" => true,
            // The gRPC job service's words (its workflow files say `setup: "COMPLETED"`).
            "COMPLETED" => status == "completed",
            "STOPPED" => status == "stopped",
            "FAILED" => matches!(
                status,
                "failed" | "timed_out" | "oom_killed" | "limit_exceeded"
            ),
            s => s == status,
        }
    }
}

/// One job of a workflow: its name, what it requires, and its body (everything else, as JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowJob {
    pub name: String,
    pub requires: Vec<Requirement>,
    pub body: serde_json::Value,
}

/// A parsed and checked workflow. Jobs keep the file's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub name: Option<String>,
    pub jobs: Vec<WorkflowJob>,
    /// Who to notify when it ends (`callback_url`) and of what (`webhooks`), as the file has
    /// them; a service that sends notifications checks them.
    pub callback_url: Option<String>,
    pub webhooks: Option<serde_json::Value>,
    /// The `retry` policy of every job that has none of its own, as the file has it.
    pub retry: Option<serde_json::Value>,
}

/// Everything wrong with a workflow, each at its path (`jobs.process.requires[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct WorkflowError {
    pub problems: Vec<(String, String)>,
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid workflow: ")?;
        for (i, (path, msg)) in self.problems.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{path}: {msg}")?;
        }
        Ok(())
    }
}

fn check_job_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err("job names are 1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.'".into())
    }
}

fn to_json(v: serde_norway::Value) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

impl Workflow {
    /// Parses a workflow file (YAML, or JSON, which is YAML too) and checks its structure: job
    /// names, requirements (known jobs, known statuses, no self-reference) and cycles.
    pub fn parse(text: &str) -> Result<Workflow, WorkflowError> {
        let mut problems = Vec::new();
        let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| WorkflowError {
            problems: vec![("(file)".into(), format!("not YAML or JSON: {e}"))],
        })?;
        let serde_norway::Value::Mapping(mut top) = doc else {
            return Err(WorkflowError {
                problems: vec![("(file)".into(), "expected a mapping with `jobs`".into())],
            });
        };
        let name = match top.remove("name") {
            None | Some(serde_norway::Value::Null) => None,
            Some(serde_norway::Value::String(s)) => Some(s),
            Some(_) => {
                problems.push(("name".into(), "expected a string".into()));
                None
            }
        };
        let callback_url = match top.remove("callback_url") {
            None | Some(serde_norway::Value::Null) => None,
            Some(serde_norway::Value::String(s)) => Some(s),
            Some(_) => {
                problems.push(("callback_url".into(), "expected a URL".into()));
                None
            }
        };
        let webhooks = match top.remove("webhooks").map(to_json) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                problems.push(("webhooks".into(), e));
                None
            }
        };
        let retry = match top.remove("retry").map(to_json) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                problems.push(("retry".into(), e));
                None
            }
        };
        let jobs_value = top.remove("jobs");
        for (k, _) in top.iter() {
            let k = k.as_str().unwrap_or("?");
            problems.push((
                k.to_owned(),
                "unknown field: a workflow has name, jobs, retry, callback_url and webhooks".into(),
            ));
        }
        let mut jobs = Vec::new();
        match jobs_value {
            Some(serde_norway::Value::Mapping(m)) if !m.is_empty() => {
                for (k, v) in m {
                    let Some(job_name) = k.as_str().map(str::to_owned) else {
                        problems.push(("jobs".into(), format!("job names are strings, got {k:?}")));
                        continue;
                    };
                    let path = format!("jobs.{job_name}");
                    if let Err(e) = check_job_name(&job_name) {
                        problems.push((path.clone(), e));
                    }
                    let serde_norway::Value::Mapping(mut body) = v else {
                        problems.push((path, "expected a mapping (a job spec)".into()));
                        continue;
                    };
                    let requires = match body.remove("requires") {
                        None | Some(serde_norway::Value::Null) => Vec::new(),
                        Some(serde_norway::Value::Sequence(items)) => items
                            .into_iter()
                            .enumerate()
                            .filter_map(|(i, item)| {
                                parse_requirement(item)
                                    .map_err(|e| {
                                        problems.push((format!("{path}.requires[{i}]"), e))
                                    })
                                    .ok()
                            })
                            .collect(),
                        Some(_) => {
                            problems.push((
                                format!("{path}.requires"),
                                "expected a list like [{other-job: completed}]".into(),
                            ));
                            Vec::new()
                        }
                    };
                    // The gRPC job service's form: `command: python3` plus `args: [setup.py]`.
                    if let Some(args) = body.remove("args") {
                        match (body.get("command"), args) {
                            (
                                Some(serde_norway::Value::String(c)),
                                serde_norway::Value::Sequence(a),
                            ) => {
                                let mut argv = vec![serde_norway::Value::String(c.clone())];
                                argv.extend(a);
                                body.insert(
                                    serde_norway::Value::String("command".into()),
                                    serde_norway::Value::Sequence(argv),
                                );
                            }
                            _ => problems.push((
                                format!("{path}.args"),
                                "args go with a command string: {command: python3, args: [x.py]}"
                                    .into(),
                            )),
                        }
                    }
                    match to_json(serde_norway::Value::Mapping(body)) {
                        Ok(body) => jobs.push(WorkflowJob {
                            name: job_name,
                            requires,
                            body,
                        }),
                        Err(e) => problems.push((path, e)),
                    }
                }
            }
            _ => problems.push((
                "jobs".into(),
                "expected a non-empty mapping of named jobs".into(),
            )),
        }
        let wf = Workflow {
            name,
            jobs,
            callback_url,
            webhooks,
            retry,
        };
        wf.check_requirements(&mut problems);
        if problems.is_empty() {
            Ok(wf)
        } else {
            Err(WorkflowError { problems })
        }
    }

    fn check_requirements(&self, problems: &mut Vec<(String, String)>) {
        let names: BTreeSet<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
        for j in &self.jobs {
            for (i, r) in j.requires.iter().enumerate() {
                let path = format!("jobs.{}.requires[{i}]", j.name);
                if r.job == j.name {
                    problems.push((path, "a job cannot require itself".into()));
                } else if !names.contains(r.job.as_str()) {
                    problems.push((path, format!("unknown job {:?}", r.job)));
                }
            }
        }
        if problems.is_empty()
            && let Err(cycle) = self.order()
        {
            problems.push((
                format!("jobs.{}.requires", cycle[0]),
                format!("a cycle: {}", cycle.join(" -> ")),
            ));
        }
    }

    /// Runs `check` on every job body; problems come back at `jobs.<name>.<path given>`.
    pub fn check_jobs(
        &self,
        mut check: impl FnMut(&WorkflowJob) -> Result<(), Vec<(String, String)>>,
    ) -> Result<(), WorkflowError> {
        let mut problems = Vec::new();
        for j in &self.jobs {
            if let Err(errs) = check(j) {
                for (field, msg) in errs {
                    let path = if field.is_empty() {
                        format!("jobs.{}", j.name)
                    } else {
                        format!("jobs.{}.{field}", j.name)
                    };
                    problems.push((path, msg));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(WorkflowError { problems })
        }
    }

    /// The jobs in an order where each comes after everything it requires (file order among
    /// equals), or the names along a cycle (first name repeated at the end).
    pub fn order(&self) -> Result<Vec<&WorkflowJob>, Vec<String>> {
        let index: BTreeMap<&str, usize> = self
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.as_str(), i))
            .collect();
        // 0: not visited, 1: on the current path, 2: done.
        let mut state = vec![0u8; self.jobs.len()];
        let mut out = Vec::with_capacity(self.jobs.len());
        let mut path: Vec<usize> = Vec::new();
        fn visit<'a>(
            wf: &'a Workflow,
            i: usize,
            index: &BTreeMap<&str, usize>,
            state: &mut [u8],
            path: &mut Vec<usize>,
            out: &mut Vec<&'a WorkflowJob>,
        ) -> Result<(), Vec<String>> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let start = path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut cycle: Vec<String> = path[start..]
                        .iter()
                        .map(|&p| wf.jobs[p].name.clone())
                        .collect();
                    cycle.push(wf.jobs[i].name.clone());
                    return Err(cycle);
                }
                _ => {}
            }
            state[i] = 1;
            path.push(i);
            for r in &wf.jobs[i].requires {
                if let Some(&d) = index.get(r.job.as_str()) {
                    visit(wf, d, index, state, path, out)?;
                }
            }
            path.pop();
            state[i] = 2;
            out.push(&wf.jobs[i]);
            Ok(())
        }
        for i in 0..self.jobs.len() {
            visit(self, i, &index, &mut state, &mut path, &mut out)?;
        }
        Ok(out)
    }
}

fn parse_requirement(item: serde_norway::Value) -> Result<Requirement, String> {
    let (job, status) = match item {
        serde_norway::Value::String(job) => (job, "completed".to_owned()),
        serde_norway::Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.into_iter().next().ok_or("empty requirement")?;
            let job = k
                .as_str()
                .ok_or("the required job's name must be a string")?;
            let status = match v {
                serde_norway::Value::Null => "completed".to_owned(),
                serde_norway::Value::String(s) => s,
                _ => return Err("the required status must be a string".into()),
            };
            (job.to_owned(), status)
        }
        _ => return Err("expected a job name or {job-name: status}".into()),
    };
    if !REQUIRABLE.contains(&status.as_str()) {
        return Err(format!(
            "unknown status {status:?} for {job:?}: expected one of {}",
            REQUIRABLE.join(", ")
        ));
    }
    Ok(Requirement { job, status })
}

#[cfg(test)]
mod seed_tests {
    use super::*;

    #[test]
    fn the_grpc_services_workflow_file_works_verbatim() {
        let wf = Workflow::parse(
            "# workflow.yaml\njobs:\n  setup-data:        # Job name: \"setup-data\"\n    \
             command: \"python3\"\n    args: [\"setup.py\"]\n    \n  process-data:      \
             # Job name: \"process-data\" \n    command: \"python3\"\n    args: [\"process.py\"]\n    \
             requires:\n      - setup-data: \"COMPLETED\"\n",
        )
        .unwrap();
        assert_eq!(
            wf.jobs[1].body["command"],
            serde_json::json!(["python3", "process.py"])
        );
        let r = &wf.jobs[1].requires[0];
        assert!(r.met_by("completed") && !r.met_by("failed"));
        let failed = Requirement {
            job: "x".into(),
            status: "FAILED".into(),
        };
        assert!(failed.met_by("oom_killed") && !failed.met_by("completed"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<(String, String)> {
        Workflow::parse(text).unwrap_err().problems
    }

    #[test]
    fn a_diamond_parses_and_orders_after_requirements() {
        let wf = Workflow::parse(
            "name: diamond\njobs:\n  report: {command: r, requires: [left, {right: completed}]}\n  \
             left: {command: l, requires: [{setup: ended}]}\n  right: {command: r, requires: [setup]}\n  \
             setup: {command: s, limits: {timeout: 5}}\n",
        )
        .unwrap();
        assert_eq!(wf.name.as_deref(), Some("diamond"));
        let names: Vec<&str> = wf.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            ["report", "left", "right", "setup"],
            "file order kept"
        );
        let order: Vec<&str> = wf
            .order()
            .unwrap()
            .iter()
            .map(|j| j.name.as_str())
            .collect();
        assert_eq!(order, ["setup", "left", "right", "report"]);
        let left = &wf.jobs[1];
        assert_eq!(
            left.requires,
            [Requirement {
                job: "setup".into(),
                status: "ended".into()
            }]
        );
        assert!(left.requires[0].met_by("failed"));
        assert!(!wf.jobs[2].requires[0].met_by("failed"));
        assert_eq!(
            wf.jobs[3].body,
            serde_json::json!({"command": "s", "limits": {"timeout": 5}})
        );
    }

    #[test]
    fn readiness_waits_starts_or_skips() {
        let req = |job: &str, status: &str| Requirement {
            job: job.into(),
            status: status.into(),
        };
        let reqs = [req("a", "completed"), req("b", "ended")];
        let st = |a: &'static str, b: &'static str| {
            move |n: &str| match n {
                "a" => Some(a),
                "b" => Some(b),
                _ => None,
            }
        };
        assert_eq!(
            readiness(&reqs, st("running", "waiting")),
            Readiness::Waiting
        );
        assert_eq!(
            readiness(&reqs, st("completed", "queued")),
            Readiness::Waiting
        );
        assert_eq!(
            readiness(&reqs, st("completed", "skipped")),
            Readiness::Ready
        );
        assert_eq!(
            readiness(&reqs, st("completed", "failed")),
            Readiness::Ready
        );
        assert_eq!(
            readiness(&reqs, st("failed", "running")),
            Readiness::Unmeetable("required a to be completed, but it ended failed".into()),
            "decided while b still runs"
        );
        assert_eq!(
            readiness(&[req("gone", "ended")], |_| None),
            Readiness::Unmeetable("required job gone no longer exists".into())
        );
        assert_eq!(readiness(&[], |_| None), Readiness::Ready);
    }

    #[test]
    fn cycles_are_refused_with_the_path_around_them() {
        let p = problems(
            "jobs:\n  a: {command: x, requires: [c]}\n  b: {command: x, requires: [a]}\n  \
             c: {command: x, requires: [b]}\n  d: {command: x}\n",
        );
        assert_eq!(
            p,
            [(
                "jobs.a.requires".to_owned(),
                "a cycle: a -> c -> b -> a".to_owned()
            )]
        );
        let p = problems("jobs:\n  a: {command: x, requires: [a]}\n");
        assert_eq!(
            p,
            [(
                "jobs.a.requires[0]".to_owned(),
                "a job cannot require itself".to_owned()
            )]
        );
    }

    #[test]
    fn every_problem_is_reported_at_its_path() {
        let p = problems(
            "name: 3\ncolour: red\njobs:\n  ok: {command: x}\n  bad name: {command: x}\n  \
             p: {command: x, requires: [nope, {ok: done}, 7]}\n  q: [1, 2]\n  r: {command: x, requires: ok}\n",
        );
        let paths: Vec<&str> = p.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(
            paths,
            [
                "name",
                "colour",
                "jobs.bad name",
                "jobs.p.requires[1]",
                "jobs.p.requires[2]",
                "jobs.q",
                "jobs.r.requires",
                "jobs.p.requires[0]",
            ],
            "{p:?}"
        );
        assert!(p[3].1.contains("unknown status \"done\""), "{p:?}");
        assert!(p[7].1.contains("unknown job \"nope\""), "{p:?}");
        for text in ["", "jobs: {}", "[1]", "jobs: [a]", ": :"] {
            assert!(Workflow::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn job_bodies_are_checked_by_the_caller_at_their_path() {
        let wf = Workflow::parse(
            "jobs:\n  a: {command: x}\n  b: {git_url: 'ftp://h/r', commit_hash: abc1234, command: y}\n",
        )
        .unwrap();
        let err = wf
            .check_jobs(|j| {
                let spec: crate::JobSpec = serde_json::from_value(j.body.clone())
                    .map_err(|e| vec![(String::new(), e.to_string())])?;
                spec.validate().map(drop).map_err(|e| {
                    e.field_errors()
                        .iter()
                        .map(|f| (f.field.clone(), f.message.clone()))
                        .collect()
                })
            })
            .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].0, "jobs.b.git_url");
        assert!(
            err.to_string()
                .starts_with("invalid workflow: jobs.b.git_url: "),
            "{err}"
        );
    }
}
