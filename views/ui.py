"""Streamlit building blocks shared by the pages: the workspace, cached data, pickers, job
progress and image galleries. Everything slow is cached or runs as a job.

What imports torch (artifacts, the pipeline, devices, …) is imported inside the functions that
need it, so Home, the first page a fresh server shows, opens without waiting for torch."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from explorer.store import jobs
from explorer.store.workspace import Workspace, default_path

if TYPE_CHECKING:
    from explorer.evaluation import embeddings


@st.cache_resource(show_spinner=False)
def _workspace(path: str) -> Workspace:
    return Workspace(path)


def workspace() -> Workspace:
    return _workspace(str(default_path().resolve()))


# What the pages import or first use lazily (scipy.stats alone takes over a second here).
_WARM = ("pandas", "scipy.stats", "sklearn.metrics", "sklearn.linear_model", "sklearn.model_selection",
         "sklearn.decomposition", "sklearn.svm", "PIL.PngImagePlugin", "plotly.io")


def wait_while_jobs_run(ws: Workspace, poll_seconds: float = 1.0) -> None:
    """Return once no job of the workspace is running. The warm-up's niceness cannot keep it out of
    a job's way: a job runs in its own session, and Linux (autogroup) shares the cores fairly
    between sessions, whatever a thread's priority; in the app the warm-up had slowed the demo's
    first stages 2×."""
    while True:
        if not jobs.list_jobs(ws, active_only=True):  # refreshed: a job whose process died counts no longer
            return
        time.sleep(poll_seconds)


def _import_everything(ws: Workspace) -> None:
    import contextlib
    import importlib
    import os
    import pkgutil
    import threading

    import explorer

    with contextlib.suppress(AttributeError, OSError):  # Linux: nice this thread only, so that the
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # pages' scripts go first

    wait_while_jobs_run(ws)
    with contextlib.suppress(Exception):  # torch first: the sidebar shows the device as soon as it is known
        _DEVICE.append(_describe_device())
    names = [m.name for m in pkgutil.walk_packages(explorer.__path__, "explorer.") if m.name != "explorer.__main__"]
    for name in [*_WARM, *names]:  # the slow ones first (scipy.stats, for Memorization); pages import ours anyway
        wait_while_jobs_run(ws)
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a page that needs it reports the problem itself
            pass
    from explorer.present import plots

    wait_while_jobs_run(ws)
    plots.warm_up()


@st.cache_resource(show_spinner=False)
def warm_up() -> None:
    """Once per server, in the background: import what the pages need and build one figure of
    each kind, so a user's first visit to a page does not wait for imports; paused while a job
    runs, which needs the cores more."""
    import threading

    threading.Thread(target=_import_everything, args=(workspace(),), name="warm-up", daemon=True).start()


def _describe_device() -> str:
    from explorer.runtime import devices  # imports torch

    return devices.describe(devices.resolve("auto"))


_DEVICE: list[str] = []  # the device's description, once torch is imported (by the warm-up thread or a page)


def device_name(resolve: bool = False) -> str | None:
    """The device jobs run on; None while torch is still being imported in the background, unless
    `resolve` (then this imports it)."""
    if not _DEVICE and resolve:
        _DEVICE.append(_describe_device())
    return _DEVICE[0] if _DEVICE else None


def dataset(ws: Workspace, model_rec: dict):
    from explorer.store import artifacts

    return artifacts.dataset_of(ws, model_rec)  # lru-cached in explorer.data


@st.cache_data(show_spinner=False, max_entries=16)
def dynamics_proxies(ws_path: str, model_id: str) -> dict[str, np.ndarray]:
    from explorer.memorization import proxies
    from explorer.store import artifacts

    ws = _workspace(ws_path)
    return proxies.from_dynamics(artifacts.load_dynamics(ws, ws.get(model_id, "model")))


@st.cache_resource(show_spinner=False, max_entries=64)
def score_set(ws_path: str, score_id: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A stored score set's values and extra arrays. Records never change, so they are cached by
    id and shared, not copied on every rerun (the exact estimator's matrices are K × n)."""
    from explorer.store import artifacts

    loaded = artifacts.load_scores(_workspace(ws_path), score_id)
    return loaded.values, loaded.arrays


def available_scores(ws: Workspace, rec: dict) -> dict[str, np.ndarray]:
    """Raw values of every score this model has: the newest stored score set of each name,
    and, for a model trained here, the learning-event proxies straight from its dynamics."""
    from explorer.memorization import scores
    from explorer.store import artifacts

    ws_path = str(ws.path.resolve())
    stored = artifacts.latest_scores(ws, rec["id"])
    found = {name: score_set(ws_path, srec["id"])[0] for name, srec in stored.items()}
    if rec.get("has_dynamics"):
        for name, values in dynamics_proxies(ws_path, rec["id"]).items():
            found.setdefault(name, values)
    return {name: found[name] for name in scores.SCORES if name in found}


@st.cache_resource(show_spinner=False, max_entries=8)
def _partial_exact_runs(ws_path: str, model_id: str, signature: tuple) -> list[dict]:
    from explorer.pipeline import memorize

    return memorize.in_progress(_workspace(ws_path), model_id)


@st.cache_resource(show_spinner=False)
def ray_installed() -> bool:
    """Whether the optional Ray backend can be offered (found without importing Ray)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def partial_exact_runs(ws: Workspace, model_id: str) -> list[dict]:
    """`memorize.in_progress`, re-read only when a chunk has landed."""
    from explorer.store import artifacts

    signature = tuple((f.name, artifacts.chunk_count(f)) for f in artifacts.exact_folders(ws, model_id))
    return _partial_exact_runs(str(ws.path.resolve()), model_id, signature) if signature else []


@st.cache_resource(show_spinner=False, max_entries=8)
def stored_map(ws_path: str, map_id: str) -> embeddings.SampleMap:
    """A stored sample map (coordinates, features, predictions); records never change."""
    from explorer.store import artifacts

    ws = _workspace(ws_path)
    return artifacts.load_map(ws, ws.get(map_id, "embedding"))


def model_label(rec: dict) -> str:
    acc = f" · test acc {rec['test_acc']:.3f}" if rec.get("test_acc") is not None else ""
    return f"{rec['name']} · {rec['id']}{acc}"


def regime_warning(rec: dict) -> None:
    """Says so, where memorization scores are shown, when the model does not fit its training set,
    and what they mean when it trained with augmentation."""
    from explorer.memorization import regime

    if line := regime.warning(rec):
        st.warning(line, icon="⚠️")
    if line := regime.augmentation_note(rec):
        st.caption(line)


def pick_model(ws: Workspace, key: str, dynamics_only: bool = False, include_oracles: bool = False) -> dict | None:
    """A model selectbox; returns None (after saying why) when there is nothing to pick."""
    recs = [r for r in ws.find("model") if include_oracles or r.get("source") != "oracle"]
    if dynamics_only:
        recs = [r for r in recs if r.get("has_dynamics")]
    if not recs:
        st.info("No trained model yet. Train one on the **Models** page (digits trains in seconds)."
                if dynamics_only else "No model yet. Train or import one on the **Models** page.")
        return None
    recs = sorted(recs[::-1], key=lambda r: r.get("source") == "oracle")  # newest first, oracles last
    default = st.session_state.get("model_id")
    index = next((i for i, r in enumerate(recs) if r["id"] == default), 0)
    rec = st.selectbox("Model", recs, index=index, format_func=model_label, key=key)
    st.session_state["model_id"] = rec["id"]
    return rec


def launch(ws: Workspace, argv: list[str], title: str, state_key: str) -> str:
    """Start a CLI command as a background job and remember it for this page; returns once the
    job's process has said it started (about half a second), so the page shows that at once."""
    job_id = jobs.submit(ws, argv, title)
    st.session_state[state_key] = job_id
    jobs.wait_first_line(ws, job_id)
    return job_id


SLOW_POLL_SECONDS = 5.0
ENDING_SECONDS = 1.5 * SLOW_POLL_SECONDS  # a job whose progress says it ends sooner is polled every second
UNKNOWN_SECONDS = 8.0  # a job that has reported no progress yet is polled every second for this long


def poll_seconds(job: dict, now: float, before: tuple[float, float] | None = None) -> float:
    """Seconds between two polls of a running job. Each poll costs the browser CPU (0.03-0.08 s in
    a headless Chromium on 2 cores) taken from the job, so it is polled every 5 s, and every second
    when it should end within ~7 s, so "done" shows at once, not up to 5 s late (2 s of the demo's
    35 s on average). Its end is guessed from its progress so far and, as a job's stages differ in
    pace (the demo's last ones are quick), from its pace since the poll `before` (time, progress).
    Until it reports progress its length is unknown (it may take 3 s), so for its first 8 s it is
    polled every second too. Its first line needs no poll: `launch` waits for it."""
    elapsed, done = now - job["created"], job["progress"]
    if done <= 0:
        return 1.0 if elapsed < UNKNOWN_SECONDS else SLOW_POLL_SECONDS
    left = [elapsed * (1 - done) / done]
    if before is not None and done > before[1] and now > before[0]:
        left.append((1 - done) * (now - before[0]) / (done - before[1]))
    return 1.0 if min(left) < ENDING_SECONDS else SLOW_POLL_SECONDS


def job_status(ws: Workspace, state_key: str) -> None:
    """Live progress of the job this page launched last; reruns the page once when it ends."""
    job_id = st.session_state.get(state_key)
    if not job_id:
        return
    st.session_state.setdefault("_polled_on", {}).setdefault(st.session_state.get("_page"), set()).add(state_key)
    # The pace its polls chose, and (time, progress) at an earlier poll, for the job's recent pace.
    pace = st.session_state.setdefault(f"_pace-{job_id}", {"every": None, "before": None, "ending": False})
    if pace["every"] is None:
        pace["every"] = poll_seconds(jobs.get(ws, job_id), time.time())
    every = pace["every"]

    @st.fragment(run_every=every)
    def _poll():
        jobs.refresh(ws)
        job, now = jobs.get(ws, job_id), time.time()
        if job["state"] in jobs.ACTIVE:
            # Once it is ending it stays polled every second: its estimate would flap with each poll.
            wanted = 1.0 if pace["ending"] else poll_seconds(job, now, pace["before"])
            pace["ending"] = wanted == 1.0 and job["progress"] > 0
            if pace["before"] is None or now - pace["before"][0] >= SLOW_POLL_SECONDS - 0.5:  # a pace over ~5 s
                pace["before"] = (now, job["progress"])
            if wanted != every:
                pace["every"] = wanted
                st.rerun(scope="app")  # the fragment is defined again, polling at the new pace
            st.progress(job["progress"], text=f"{job['title']}: {job['message']}")
            if st.button("Cancel", key=f"cancel-{job_id}"):
                jobs.cancel(ws, job_id)
            return
        st.session_state.pop(state_key, None)
        st.session_state.pop(f"_pace-{job_id}", None)
        st.session_state["last_job"] = job
        st.rerun(scope="app")

    _poll()


def polled_by_page(page: str) -> set[str]:
    """Ids of the jobs the page `page` shows with job_status (which polls them itself)."""
    keys = st.session_state.get("_polled_on", {}).get(page, ())
    return {st.session_state[k] for k in keys if st.session_state.get(k)}


def lazy_tabs(views: dict, key: str, default: str | None = None, *args) -> None:
    """`views` {label: draw} as tabs, only the open one drawn (`draw(*args)`): the others are a click
    (a rerun) away, and a page's first visit draws one tab's charts, not all of them."""
    for (label, draw), tab in zip(views.items(), st.tabs(list(views), default=default, key=key, on_change="rerun")):
        if tab.open is not False:
            with tab:
                draw(*args)


def chart(where, fig, **kwargs) -> None:
    """A Plotly figure on the page (`where`: st or a column), drawn once (plots.steady)."""
    from explorer.present import plots

    where.plotly_chart(plots.steady(fig), theme=None, config={"displaylogo": False}, **kwargs)


def last_job_message() -> None:
    """Say once how the last finished job ended."""
    job = st.session_state.pop("last_job", None)
    if not job:
        return
    if job["state"] == "succeeded":
        st.success(f"{job['title']}: {job['message']}")
    elif job["state"] == "cancelled":
        st.warning(f"{job['title']}: cancelled before it finished; nothing half-done was saved")
    else:
        st.error(f"{job['title']} failed: {job['message']}")


def caption_for(i: int, ds, value: float | None = None) -> str:
    """A short image caption: id · label (·←true label when noise flipped it) · score."""
    text = f"#{i} · {ds.classes[int(ds.y_train[i])]}"
    if int(ds.y_train[i]) != int(ds.y_train_clean[i]):
        text += f"←{ds.classes[int(ds.y_train_clean[i])]}"
    return text if value is None or not np.isfinite(value) else f"{text} · {value:.2f}"


def upscale(image: np.ndarray, size: int = 64) -> np.ndarray:
    """Nearest-neighbour enlargement so 8×8 digits stay crisp."""
    factor = max(1, size // image.shape[0])
    return image.repeat(factor, 0).repeat(factor, 1)


@st.cache_resource(show_spinner=False, max_entries=8)
def _encoded(spec, width: int) -> dict[tuple[str, int], str]:
    """PNG data URIs of one dataset's thumbnails at one width, filled as images are shown: each is
    encoded once per server, and the browser gets it inline instead of fetching it."""
    return {}


def thumbnail_uris(ds, ids, split: str = "train", width: int = 88) -> list[str]:
    import base64
    import io

    from PIL import Image

    cache, images = _encoded(ds.spec, width), ds.thumbs_train if split == "train" else ds.thumbs_test
    out = []
    for i in ids:
        uri = cache.get((split, int(i)))
        if uri is None:
            buf = io.BytesIO()
            Image.fromarray(upscale(images[int(i)], width)).save(buf, format="PNG")
            uri = cache[(split, int(i))] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        out.append(uri)
    return out


def gallery(ds, ids, captions: list[str], split: str = "train", width: int = 88) -> None:
    """The dataset's images `ids` in a wrapping row, each with its caption."""
    if len(ids) == 0:
        st.caption("No images.")
        return
    st.image(thumbnail_uris(ds, ids, split, width), caption=captions, width=width)


def sidebar(ws: Workspace, page: str, light: bool = False) -> None:
    """The workspace, the device, and the jobs running now. It polls (every 5 s) only while a job
    runs that the page `page` does not poll itself: each poll costs the browser CPU the job could
    use, and sends the server the state of every widget on the page, a lasso on a large map
    included (megabytes). On a `light` page (Home, which does not need torch) the device is shown
    once the warm-up has imported torch, polling until then while no job runs; other pages import
    torch anyway, so the device is found right away."""
    st.session_state["_page"] = page  # read by job_status, which the page's script calls later
    with st.sidebar:
        st.caption(f"Workspace: `{ws.path.resolve()}`")
        on_page = polled_by_page(page)  # shown, live, on the page itself
        active = jobs.list_jobs(ws, active_only=True)
        others = [j for j in active if j["id"] not in on_page]
        # The warm-up that finds the device waits while a job runs: no use polling for it then.
        detecting = device_name(resolve=not light) is None and not active

        @st.fragment(run_every=SLOW_POLL_SECONDS if others or detecting else None)
        def _running():
            st.caption(f"Device: **{device_name() or 'detecting…'}**")
            running = [j for j in jobs.list_jobs(ws, active_only=True) if j["id"] not in on_page]
            if running:
                st.markdown("**Running jobs**")
            for job in running:
                st.progress(job["progress"], text=f"{job['title']} · {job['message']}")

        _running()


@st.cache_resource(show_spinner=False, max_entries=8)
def load_model(ws_path: str, model_id: str):
    """A stored model in eval mode; records never change, so it is loaded once."""
    from explorer.store import artifacts

    ws = _workspace(ws_path)
    return artifacts.load_model(ws, ws.get(model_id, "model")).eval()


def recipe_inputs(columns, recipe_cls: type | None = None) -> dict:
    """One input per recipe field the form offers (training.KNOBS), spread over `columns`; each
    left empty (or a switch left off) keeps the default recipe's value for the chosen model."""
    from explorer import training

    values = {}
    offered = [f for f in dataclasses.fields(recipe_cls or training.Recipe) if f.metadata["knob"].form]
    for f, col in zip(offered, itertools.cycle(columns)):
        knob = f.metadata["knob"]
        note = f"Empty: {training.recipe.default_text(f)}."
        if training.recipe.kind(f) == "bool":
            values[f.name] = col.checkbox(knob.label, help=knob.help) or None
            continue
        kind = int if training.recipe.kind(f) == "int" else float  # Streamlit wants every bound of the field's own type
        low = knob.low if knob.low is not None else (1e-6 if knob.positive else None)
        high = None if knob.high is None else knob.high - (1 if kind is int else 0.01)
        values[f.name] = col.number_input(knob.label, None if low is None else kind(low),
                                          None if high is None else kind(high), None,
                                          None if kind is int else 0.01, placeholder="default",
                                          format=None if kind is int else "%g", help=f"{knob.help} {note}")
    return values


def _figures() -> dict:
    """What the benches last measured (docs/figures.json, written by bench/_figures.py); {} before any."""
    import json
    from pathlib import Path

    try:
        return json.loads((Path(__file__).resolve().parent.parent / "docs" / "figures.json").read_text())
    except (OSError, ValueError):
        return {}


def measured_throughput() -> dict:
    """{device: {arch: {engine: sample-passes per second}}} as `python -m bench scale` and `bench gpu`
    last measured them (docs/figures.json); empty before any measurement."""
    out: dict = {}
    for bench, measured in sorted(_figures().items()):
        for device, archs in (measured.get("sample_passes_per_s") or {}).items():
            for arch, rates in archs.items():
                out.setdefault(device, {}).setdefault(arch, {}).update(rates)
    return out


def measured_demo() -> str:
    """The demo's times as the benches last measured them (docs/figures.json), for Home's
    sentence: " (41 s measured from the app on 2 cores, …)", or nothing before any measurement."""
    figures = _figures()
    journey, demo = figures.get("journey", {}), figures.get("demo", {})
    app, cli = journey.get("demo_app_seconds"), journey.get("demo_cli_seconds") or demo.get("cli_seconds")
    again = journey.get("demo_again_seconds") or demo.get("again_seconds")
    extra = journey.get("first_install_extra_seconds")
    if not (app or cli):
        return ""
    where = journey if app else demo
    parts = [f"{app:.0f} s from the app" if app else f"{cli:.0f} s from the command line",
             f"up to {extra:.0f} s more on a fresh install, while UMAP compiles" if extra else None,
             f"{again:.0f} s again" if again else None]
    return (f" ({'; '.join(p for p in parts if p)}: measured on {where.get('machine', 'this machine')}, "
            f"{where.get('measured', '')})")
