import os
import signal
import time

from explorer.store import jobs


def _wait_running(ws, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get(ws, job_id)
        if job["state"] == "running" and job["progress"] > 0:
            return job
        assert job["state"] in jobs.ACTIVE, job
        time.sleep(0.1)
    raise AssertionError("job never started making progress")


def test_job_reports_progress_and_result(ws):
    job_id = jobs.submit(ws, ["train", "--arch", "mlp", "--epochs", "3", "--device", "cpu"], "train mlp")
    job = jobs.wait(ws, job_id, timeout=120)
    assert job["state"] == "succeeded", jobs.log_tail(job)
    assert job["progress"] == 1.0 and job["finished"] >= job["started"]
    assert ws.get(job["result_id"], "model")["epochs"] == 3
    assert "epoch 3/3" in jobs.log_tail(job)


def test_cancel_stops_cleanly_and_writes_nothing(ws):
    job_id = jobs.submit(ws, ["train", "--arch", "cnn", "--epochs", "500", "--device", "cpu"], "long train")
    _wait_running(ws, job_id)
    jobs.cancel(ws, job_id)
    job = jobs.wait(ws, job_id, timeout=60)
    assert job["state"] == "cancelled" and job["result_id"] is None
    assert ws.find("model") == [] and not ws.artifact("model", "x", "y").parent.exists()


def test_killed_job_is_shown_as_failed_with_its_log_tail(ws):
    job_id = jobs.submit(ws, ["train", "--arch", "cnn", "--epochs", "500", "--device", "cpu"], "doomed train")
    job = _wait_running(ws, job_id)
    os.kill(job["pid"], signal.SIGKILL)
    job = jobs.wait(ws, job_id, timeout=30)
    assert job["state"] == "failed"
    assert job["message"].startswith("process died: ") and "epoch" in job["message"]


def test_bad_input_job_fails_with_the_reason(ws):
    job = jobs.wait(ws, jobs.submit(ws, ["train", "--arch", "transformer"], "bad train"), timeout=60)
    assert job["state"] == "failed" and "unknown architecture" in job["message"]
    assert ws.find("model") == []


def test_job_that_cannot_start_is_failed_not_left_queued(ws, monkeypatch):
    import subprocess

    def no_exec(*args, **kwargs):
        raise OSError("exec format error")

    monkeypatch.setattr(subprocess, "Popen", no_exec)
    job = jobs.get(ws, jobs.submit(ws, ["train"], "unstartable"))
    assert job["state"] == "failed" and "could not start" in job["message"]


def test_two_jobs_publishing_at_the_same_moment_both_land(ws):
    argv = ["train", "--arch", "mlp", "--epochs", "2", "--device", "cpu"]
    first, second = jobs.submit(ws, argv, "first"), jobs.submit(ws, [*argv, "--seed", "1"], "second")
    done = [jobs.wait(ws, job_id, timeout=120) for job_id in (first, second)]
    assert [j["state"] for j in done] == ["succeeded", "succeeded"], [jobs.log_tail(j) for j in done]
    models = ws.find("model")
    assert sorted(m["id"] for m in models) == sorted(j["result_id"] for j in done)
    assert len({m["dataset_id"] for m in models}) == 1 and len(ws.find("dataset")) == 1  # one record, not two


def test_a_job_says_it_started_before_its_slow_imports(ws):
    """The app's progress bar moves as soon as the job's process runs, not after PyTorch loads."""
    job_id = jobs.submit(ws, ["train", "--arch", "mlp", "--epochs", "1", "--device", "cpu"], "quick train")
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = jobs.get(ws, job_id)
        if not seen or seen[-1] != (job["state"], job["message"]):
            seen.append((job["state"], job["message"]))
        if job["state"] not in jobs.ACTIVE:
            break
        time.sleep(0.02)
    assert seen[0] == ("queued", "starting")
    assert ("queued", "started: loading PyTorch") in seen, seen
    assert seen.index(("queued", "started: loading PyTorch")) < [s for s, _ in seen].index("running")
    assert seen[-1][0] == "succeeded"


def test_the_page_that_launches_a_job_can_wait_for_its_first_line(ws):
    job_id = jobs.submit(ws, ["train", "--arch", "mlp", "--epochs", "1", "--device", "cpu"], "quick train")
    job = jobs.wait_first_line(ws, job_id, timeout=30)
    assert job["message"] != "starting"  # "started: loading PyTorch", or further
    jobs.wait(ws, job_id, timeout=120)


def test_announcing_imports_nothing_heavy_and_ignores_plain_commands(ws):
    import subprocess
    import sys

    from conftest import ROOT

    code = "import sys; from explorer.store import jobs; jobs.announce(['train']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    jobs.announce(["train", "--workspace", str(ws.path), "--job", "j-missing"])  # no such row: nothing raised


def test_the_servers_warm_up_waits_until_no_job_runs(ws):
    """The app's background imports would take the cores from a job (views/ui.py says why)."""
    from views import ui

    job_id = jobs.submit(ws, ["demo", "--models", "1"], "refused demo")  # runs a few seconds, then fails
    start = time.monotonic()
    ui.wait_while_jobs_run(ws, poll_seconds=0.1)
    assert jobs.get(ws, job_id)["state"] not in jobs.ACTIVE and time.monotonic() - start > 0.2


def test_a_running_job_is_polled_every_second_only_near_its_end_or_before_its_first_progress():
    """Each poll costs the browser CPU the job could use; "done" must show at once."""
    from views import ui

    def every(elapsed, progress):
        return ui.poll_seconds({"created": 1000.0, "progress": progress}, 1000.0 + elapsed)

    assert every(2, 0.0) == 1.0  # no progress yet: it may be a 3-second job
    assert every(20, 0.0) == every(4, 0.1) == ui.SLOW_POLL_SECONDS  # no progress for long, or far from its end
    assert every(30, 0.9) == 1.0  # ~3 s left
    assert every(300, 0.9) == ui.SLOW_POLL_SECONDS  # ~33 s left
    # Its pace since an earlier poll counts too: the demo's last stages are quicker than its first.
    job = {"created": 1000.0, "progress": 0.68}
    assert ui.poll_seconds(job, 1029.0) == ui.SLOW_POLL_SECONDS  # 29 s for 68%: ~14 s left at that pace
    assert ui.poll_seconds(job, 1029.0, before=(1024.0, 0.45)) == 1.0  # 23% in the last 5 s: ~7 s left
