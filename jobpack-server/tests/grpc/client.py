"""A gRPC client of jobpack's gRPC door that is not jobpack's code: Python grpcio with stubs
generated from the repository's proto/joblet.proto by grpcio-tools. Run by tests/grpc.rs with
ADDR, the certificates' directory and the generated stubs' directory; prints OK at the end."""
import sys
import threading
import time

import grpc

addr, certs, gen = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, gen)
import joblet_pb2 as pb  # noqa: E402
import joblet_pb2_grpc as rpc  # noqa: E402


def read(name):
    with open(f"{certs}/{name}", "rb") as f:
        return f.read()


def stub(who):
    if who is None:
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=read("ca.pem"),
            private_key=read(f"{who}.key"),
            certificate_chain=read(f"{who}.pem"),
        )
    ch = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "localhost")])
    return rpc.JobletServiceStub(ch)


def final(s, job_id):
    deadline = time.time() + 60
    while time.time() < deadline:
        j = s.GetJobStatus(pb.GetJobStatusReq(id=job_id)).job
        if j.status in ("COMPLETED", "FAILED", "STOPPED"):
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def code_of(call):
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("the call succeeded")


admin, viewer = stub("admin"), stub("viewer")

# RunJob, its live output to two clients at once, then COMPLETED with its exit code.
res = admin.RunJob(pb.RunJobReq(
    command="sh", args=["-c", "for i in 1 2 3 4; do echo line $i; sleep 0.3; done"],
    maxCPU=50, maxMemory=256))
job = res.job
assert job.status == "INITIALIZING", job
assert job.command == "sh" and job.maxCPU == 50 and job.maxMemory == 256, job
outputs = [b"", b""]


def follow(i, who):
    for chunk in who.GetJobLogs(pb.GetJobLogsReq(id=job.id)):
        outputs[i] += chunk.payload


threads = [threading.Thread(target=follow, args=(0, admin)), threading.Thread(target=follow, args=(1, viewer))]
for t in threads:
    t.start()
for t in threads:
    t.join(60)
want = b"line 1\nline 2\nline 3\nline 4\n"
assert outputs[0] == want and outputs[1] == want, outputs
done = final(admin, job.id)
assert done.status == "COMPLETED" and done.exitCode == 0 and done.startTime and done.endTime, done

# jobpack's fields: standard input and a retry policy; the log goes through both attempts.
retried = admin.RunJob(pb.RunJobReq(
    command="sh", args=["-c", "cat; test $JOBPACK_ATTEMPT -ge 2"], stdin="piped\n",
    retry=pb.RetryPolicy(maxAttempts=3, backoffSecs=0.1))).job
done = final(admin, retried.id)
assert done.status == "COMPLETED", done
log = b"".join(c.payload for c in admin.GetJobLogs(pb.GetJobLogsReq(id=retried.id)))
assert log == b"piped\npiped\n", log
# A callback to loopback is refused by the destination policy.
code, msg = code_of(lambda: admin.RunJob(pb.RunJobReq(command="true", callbackUrl="http://127.0.0.1:9/")))
assert code == grpc.StatusCode.PERMISSION_DENIED and "not allowed" in msg, (code, msg)

# StopJob of a job that traps SIGTERM: STOPPED after the grace, exit code -1.
trap = admin.RunJob(pb.RunJobReq(command="sh", args=["-c", "trap '' TERM; echo up; sleep 60"])).job
deadline = time.time() + 60
# Running, and past its `trap` (it has said "up"): else a loaded machine could deliver SIGTERM
# before the shell ignores it.
while b"up" not in b"".join(
    c.payload for c in admin.GetJobLogs(pb.GetJobLogsReq(id=trap.id, noFollow=True))
):
    assert time.time() < deadline
    time.sleep(0.05)
assert admin.GetJobStatus(pb.GetJobStatusReq(id=trap.id)).job.status == "RUNNING"
t0 = time.time()
stopped = admin.StopJob(pb.StopJobReq(id=trap.id))
assert stopped.status == "STOPPED" and stopped.exitCode == -1 and stopped.endTime, stopped
assert time.time() - t0 >= 0.4, "SIGKILL came before the grace"
code, msg = code_of(lambda: admin.StopJob(pb.StopJobReq(id=trap.id)))
assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, msg)
assert msg == f"job is not running: {trap.id} (current status: STOPPED)", msg

# A viewer reads everything and changes nothing, with the seed's messages.
assert viewer.GetJobStatus(pb.GetJobStatusReq(id=job.id)).job.status == "COMPLETED"
ids = [j.id for j in viewer.ListJobs(pb.EmptyRequest()).jobs]
assert job.id in ids and trap.id in ids, ids
code, msg = code_of(lambda: viewer.RunJob(pb.RunJobReq(command="true")))
assert code == grpc.StatusCode.PERMISSION_DENIED, code
assert msg == "role viewer is not allowed to perform operation run_job", msg
code, msg = code_of(lambda: viewer.StopJob(pb.StopJobReq(id=trap.id)))
assert (code, msg) == (grpc.StatusCode.PERMISSION_DENIED, "role viewer is not allowed to perform operation stop_job"), msg

# Unknown ids, bad requests, no certificate.
code, msg = code_of(lambda: admin.GetJobStatus(pb.GetJobStatusReq(id="f47ac10b-58cc-4372-a567-0e02b2c3d479")))
assert (code, msg) == (grpc.StatusCode.NOT_FOUND, "job not found: f47ac10b-58cc-4372-a567-0e02b2c3d479"), msg
code, _ = code_of(lambda: admin.RunJob(pb.RunJobReq(command="")))
assert code == grpc.StatusCode.INVALID_ARGUMENT, code
code, msg = code_of(lambda: admin.RunJob(pb.RunJobReq(command="true", maxMemory=2**31 - 1)))
assert code == grpc.StatusCode.INVALID_ARGUMENT and "maxMemory" in msg, msg
code, _ = code_of(lambda: stub(None).ListJobs(pb.EmptyRequest(), timeout=10))
assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED), code
# The seed's workflow file verbatim through JobService.RunWorkflow: names and dependencies.
jobs_stub = rpc.JobServiceStub(grpc.secure_channel(addr, grpc.ssl_channel_credentials(
    root_certificates=read("ca.pem"), private_key=read("admin.key"), certificate_chain=read("admin.pem")),
    options=[("grpc.ssl_target_name_override", "localhost")]))
yaml = b"""# workflow.yaml
jobs:
  setup-data:        # Job name: "setup-data"
    command: "python3"
    args: ["setup.py"]

  process-data:      # Job name: "process-data"
    command: "python3"
    args: ["process.py"]
    requires:
      - setup-data: "COMPLETED"
"""
wf = jobs_stub.RunWorkflow(pb.RunWorkflowRequest(workflow="workflow.yaml", yamlContent=yaml))
assert wf.workflowId, wf
deadline = time.time() + 60
while True:
    st = jobs_stub.GetWorkflowStatus(pb.GetWorkflowStatusRequest(workflowId=wf.workflowId))
    if st.workflow.status not in ("QUEUED", "RUNNING"):
        break
    assert time.time() < deadline, st
    time.sleep(0.1)
by_name = {j.jobName: j for j in st.jobs}
assert set(by_name) == {"setup-data", "process-data"}, st
assert list(by_name["process-data"].dependencies) == ["setup-data"], st
# No setup.py here: setup-data fails, so process-data is never started ("0").
assert by_name["setup-data"].status == "FAILED" and by_name["setup-data"].jobId != "0", st
assert by_name["process-data"].jobId == "0", st
assert st.workflow.totalJobs == 2, st
assert wf.workflowId in [w.id for w in jobs_stub.ListWorkflows(pb.ListWorkflowsRequest()).workflows]
assert len(jobs_stub.GetWorkflowJobs(pb.GetWorkflowJobsRequest(workflowId=wf.workflowId)).jobs) == 2
print("OK")
