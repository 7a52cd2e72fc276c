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


QUICK = ["train", "--arch", "mlp", "--epochs", "1", "--device", "cpu"]


def test_the_queue_runs_at_most_the_cap_in_order_and_cancels_in_line(ws, monkeypatch):
    """More jobs than slots: at most `max_jobs` run at once, the rest wait in line (their place
    shown), start in the order they came, and one cancelled while waiting never runs."""
    monkeypatch.setenv("EXPLORER_MAX_JOBS", "1")
    ids = [jobs.submit(ws, [*QUICK, "--seed", str(i)], f"quick {i}") for i in range(3)]
    gone = jobs.submit(ws, [*QUICK, "--seed", "9"], "cancelled in line")
    waiting = {j["id"]: j for j in jobs.list_jobs(ws)}
    assert [waiting[i]["place"] for i in (*ids[1:], gone)] == [1, 2, 3]
    assert waiting[gone]["message"] == "queued: 3rd in line" and waiting[ids[0]]["place"] is None
    jobs.cancel(ws, gone)
    assert jobs.get(ws, gone)["state"] == "cancelled"
    most = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        rows = jobs.list_jobs(ws)
        most = max(most, sum(j["state"] in jobs.ACTIVE and j["dispatched"] is not None for j in rows))
        if not any(j["state"] in jobs.ACTIVE for j in rows):
            break
        time.sleep(0.05)
    done = [jobs.get(ws, i) for i in ids]
    assert [j["state"] for j in done] == ["succeeded"] * 3, [jobs.log_tail(j) for j in done]
    assert most == 1
    assert done[0]["finished"] <= done[1]["started"] and done[1]["finished"] <= done[2]["started"]
    never = jobs.get(ws, gone)
    assert never["state"] == "cancelled" and never["pid"] is None and never["started"] is None


def test_each_job_ends_by_starting_the_next_so_the_line_moves_with_no_page_open(ws, monkeypatch):
    """Nobody polls here: the first job's own process starts the second as it ends."""
    monkeypatch.setenv("EXPLORER_MAX_JOBS", "1")
    first = jobs.submit(ws, QUICK, "first")
    second = jobs.submit(ws, [*QUICK, "--seed", "1"], "second")
    deadline = time.monotonic() + 120
    while jobs.get(ws, second)["dispatched"] is None and time.monotonic() < deadline:
        time.sleep(0.2)  # jobs.get only reads: it never dispatches
    assert jobs.get(ws, first)["state"] == "succeeded"
    assert jobs.wait(ws, second, timeout=120)["state"] == "succeeded"


def test_after_a_restart_a_look_at_the_jobs_shows_the_truth_and_starts_the_line(ws, monkeypatch):
    """The app server (and every job) died: a job marked running whose process is gone, and jobs
    waiting that nobody started. The restarted server's first look fails the dead job and starts
    the line."""
    import json
    import sqlite3

    monkeypatch.setenv("EXPLORER_MAX_JOBS", "1")
    now = time.time()
    with sqlite3.connect(ws.path / "catalog.sqlite") as con:  # the state the crash left
        con.execute("INSERT INTO jobs (id, argv, title, state, message, pid, log_path, created, started, dispatched) "
                    "VALUES ('j-dead0000', ?, 'was running', 'running', 'epoch 3/500', 999999, ?, ?, ?, ?)",
                    (json.dumps(QUICK), str(ws.logs / "j-dead0000.log"), now - 10, now - 9, now - 10))
        con.execute("INSERT INTO jobs (id, argv, title, state, message, log_path, created) "
                    "VALUES ('j-wait0000', ?, 'was waiting', 'queued', 'queued', ?, ?)",
                    (json.dumps(QUICK), str(ws.logs / "j-wait0000.log"), now - 5))
    looked = {j["id"]: j for j in jobs.list_jobs(ws)}
    assert looked["j-dead0000"]["state"] == "failed" and "process died" in looked["j-dead0000"]["message"]
    assert looked["j-wait0000"]["dispatched"] is not None
    assert jobs.wait(ws, "j-wait0000", timeout=120)["state"] == "succeeded"


def test_a_job_runs_on_its_share_of_the_cores(ws, monkeypatch):
    monkeypatch.setenv("EXPLORER_MAX_JOBS", "2")
    job = jobs.wait(ws, jobs.submit(ws, QUICK, "half the cores"), timeout=120)
    assert job["state"] == "succeeded"
    assert f"[job] {max(1, (os.cpu_count() or 1) // 2)} torch threads" in jobs.log_tail(job, 200)
    monkeypatch.setenv("EXPLORER_MAX_JOBS", "1")
    jobs.set_max_jobs(ws, 4)  # kept in the workspace; the environment still wins
    assert jobs.max_jobs(ws) == 1
    monkeypatch.delenv("EXPLORER_MAX_JOBS")
    assert jobs.max_jobs(ws) == 4
    jobs.set_max_jobs(ws, None)
    assert jobs.max_jobs(ws) == jobs.default_max_jobs() >= 1


def test_a_script_queues_a_command_with_submit(tmp_path):
    """`submit -- COMMAND …` queues it as the app would; --wait returns when it ends; anything but a
    job command is refused in one line."""
    import json

    from conftest import run_cli

    from explorer.store.workspace import Workspace

    where = ("--workspace", str(tmp_path / "ws"))  # the queue's, before the --
    done = run_cli("submit", *where, "--wait", "--json", "--", *QUICK)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout.strip().splitlines()[-1])
    assert job["state"] == "succeeded" and job["argv"] == QUICK
    assert Workspace(tmp_path / "ws").get(job["result_id"], "model")["epochs"] == 1
    bad = run_cli("submit", *where, "--", "list", "models")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: give the command to queue after --")


def _imported(stderr: str) -> set[str]:
    """The modules a `python -X importtime` process imported, from its report on stderr."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_the_queue_commands_start_without_torch_and_answer_as_the_full_cli_does(tmp_path):
    """`submit`, `jobs` and `cancel` are served without the CLI's heavy imports (a class or a script
    queueing many jobs would load PyTorch, a gigabyte, in every submitting process), with the same
    options, help and output as the full CLI, whose --help still lists them."""
    import json
    import subprocess
    import sys

    from conftest import ROOT
    from typer.testing import CliRunner

    from explorer import cli, queue_cli
    from explorer.store.workspace import Workspace

    heavy = {"torch", "torchvision", "numpy", "streamlit", "explorer.cli"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXPLORER_MAX_JOBS": "1"}
    where = ["--workspace", str(tmp_path / "ws")]

    def light(*args: str, importtime: bool = True) -> subprocess.CompletedProcess:
        flags = ["-X", "importtime"] if importtime else []
        return subprocess.run([sys.executable, *flags, "-m", "explorer", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=120)

    queued = light("submit", *where, "--json", "--title", "quick", "--", *QUICK)
    assert queued.returncode == 0, queued.stderr[-2000:]
    assert "explorer.queue_cli" in _imported(queued.stderr) and not heavy & _imported(queued.stderr)
    job = json.loads(queued.stdout.strip().splitlines()[-1])
    assert job["kind"] == "job" and job["argv"] == QUICK and job["title"] == "quick" and job["state"] in jobs.ACTIVE

    listed = light("jobs", *where, "--json")
    assert listed.returncode == 0 and not heavy & _imported(listed.stderr), listed.stderr[-2000:]
    assert [j["id"] for j in json.loads(listed.stdout.strip().splitlines()[-1])] == [job["id"]]
    done = jobs.wait(Workspace(tmp_path / "ws"), job["id"], timeout=120)
    assert done["state"] == "succeeded", jobs.log_tail(done)
    table = light("jobs", *where, importtime=False).stdout.splitlines()
    assert table[0].split() == ["id", "title", "state", "progress", "message"]
    assert table[1].split()[:4] == [job["id"], "quick", "succeeded", "1.000"]
    stopped = light("cancel", job["id"], *where, "--json")
    assert stopped.returncode == 0 and not heavy & _imported(stopped.stderr)
    assert json.loads(stopped.stdout.strip().splitlines()[-1])["state"] == "succeeded"  # it had ended: left alone

    for bad, says in ((["jobs", "--max-jobs", "-3"], "--max-jobs must be 0"), (["jobs", "--bogus"], "No such option"),
                      (["cancel"], "Missing argument"), (["submit", "--", "list", "models"], "give the command")):
        refused = light(*bad, *where, importtime=False)
        assert refused.returncode == 2 and refused.stderr.startswith(f"error: {says}"), (bad, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr

    runner = CliRunner()
    full, served = typer_commands(cli.app), typer_commands(queue_cli.app)
    for name in queue_cli.COMMANDS:
        assert [p.opts for p in served[name].params] == [p.opts for p in full[name].params]
        shown = runner.invoke(queue_cli.app, [name, "--help"])
        assert shown.exit_code == 0 and shown.output == runner.invoke(cli.app, [name, "--help"]).output
    assert {"--max-jobs", "--workspace", "--json"} <= {o for p in full["jobs"].params for o in p.opts}
    assert {"--title", "--wait", "--workspace", "--json"} <= {o for p in full["submit"].params for o in p.opts}


def typer_commands(app) -> dict:
    """A Typer app's commands by name, as click sees them."""
    import typer

    return typer.main.get_command(app).commands


# The app server as far as jobs go: it starts them as a page does (`ui.launch`: submit, then wait for
# the first line), then serves on, until it is killed.
SERVER = """
import json, sys, time
from explorer.store import jobs
from explorer.store.workspace import Workspace
ws = Workspace(sys.argv[1])
ids = []
for argv, title in json.loads(sys.argv[2]):
    ids.append(jobs.submit(ws, argv, title))
    jobs.wait_first_line(ws, ids[-1])
print(json.dumps(ids), flush=True)
time.sleep(3600)
"""


def test_the_server_killed_while_jobs_run_and_wait_restarts_to_the_truth_and_the_line(ws, monkeypatch):
    """A real crash, not a staged one: an app server starts three jobs with room for one, so one
    runs and two wait; the server is killed with SIGKILL, and so, a moment later, is the running
    job (the OOM killer). Nothing could record either death. A fresh look meanwhile shows what is
    true (the job still runs until it is killed; the others wait, in order); the restarted app's Jobs
    page shows the dead job failed with its last line, and the two waiting ones then run one at a
    time, in the order they came, and succeed."""
    import json
    import subprocess
    import sys

    from conftest import ROOT, run_cli
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EXPLORER_MAX_JOBS", "1")
    monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
    started = [(["train", "--arch", "cnn", "--epochs", "500", "--device", "cpu"], "long"),
               ([*QUICK, "--seed", "1"], "second"), ([*QUICK, "--seed", "2"], "third")]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ws.path), json.dumps(started)], cwd=ROOT, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE)
    try:
        long, second, third = json.loads(server.stdout.readline())
        running = _wait_running(ws, long)
        deadline = time.monotonic() + 60
        while "epoch" not in jobs.log_tail(running, 1) and time.monotonic() < deadline:
            time.sleep(0.1)  # its progress is in the table a moment before its log says it
        server.kill()
        server.wait(timeout=30)

        seen = run_cli("jobs", "--json", workspace=ws.path)  # a look from a fresh process: the truth so far
        assert seen.returncode == 0, seen.stderr
        rows = {j["id"]: j for j in json.loads(seen.stdout.strip().splitlines()[-1])}
        assert rows[long]["state"] == "running" and rows[long]["pid"] == running["pid"]
        assert [rows[i]["message"] for i in (second, third)] == ["queued: 1st in line", "queued: 2nd in line"]

        os.kill(running["pid"], signal.SIGKILL)  # nobody is left to notice: it stays "running" in the table
        assert jobs.get(ws, long)["state"] == "running" and jobs.get(ws, second)["dispatched"] is None

        page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)  # the restarted server
        page.switch_page("views/jobs.py").run()
        assert not page.exception
        shown = page.dataframe[0].value.set_index("id")
        assert shown.loc[long, "state"] == "failed" and shown.loc[long, "message"].startswith("process died: ")
        assert "epoch" in shown.loc[long, "message"]  # the last line of its log
        assert jobs.get(ws, second)["dispatched"] is not None  # the look started the line
        # ... and the third waits its turn (unless the second had already ended as the table was drawn)
        assert shown.loc[third, "message"] == "queued: 1st in line" or jobs.get(ws, second)["state"] not in jobs.ACTIVE

        most, deadline = 0, time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = jobs.list_jobs(ws)  # as the page polls
            most = max(most, sum(j["state"] in jobs.ACTIVE and j["dispatched"] is not None for j in rows))
            if not any(j["state"] in jobs.ACTIVE for j in rows):
                break
            time.sleep(0.1)
        dead, done = jobs.get(ws, long), [jobs.get(ws, i) for i in (second, third)]
        assert [j["state"] for j in done] == ["succeeded", "succeeded"], [jobs.log_tail(j) for j in done]
        assert most == 1
        assert dead["finished"] <= done[0]["started"] and done[0]["finished"] <= done[1]["started"]
        assert sorted(m["id"] for m in ws.find("model")) == sorted(j["result_id"] for j in done)  # the killed one: none
    finally:
        server.kill()
        server.stdout.close()
        for job in jobs.list_jobs(ws, active_only=True):
            jobs.cancel(ws, job["id"])
