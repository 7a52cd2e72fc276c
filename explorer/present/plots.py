"""Plotly figure builders: pure functions of arrays and records, so they are testable and the
pages stay thin."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = {"original": "#636efa", "unlearned": "#ef553b", "oracle": "#00cc96"}
CLASS_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"]


def warm_up() -> None:
    """Build and serialize one tiny figure of every trace type used here: plotly loads each
    type's validators on first use, which costs a first-time page visit up to a second."""
    import plotly.io as pio

    fig = go.Figure([go.Scatter(x=[0], y=[0]), go.Scattergl(x=[0], y=[0], customdata=[[0]]), go.Bar(x=[0], y=[0]),
                     go.Histogram(x=[0]), go.Heatmap(z=[[0]]), go.Box(y=[0])])
    pio.to_json(_style(make_subplots(rows=1, cols=2).add_trace(go.Scatter(x=[0], y=[0]), 1, 1)), validate=False)
    pio.to_json(_style(fig, legend=dict(orientation="h")), validate=False)


# Up to this many points a scatter is drawn as SVG: a WebGL trace costs the browser a GL context
# (tens to hundreds of milliseconds each, more on a machine without a GPU), SVG only its points.
SVG_POINTS = 5_000


def _scatter(n_points: int):
    """The scatter trace class for a figure of `n_points`: SVG when few, WebGL when many."""
    return go.Scatter if n_points <= SVG_POINTS else go.Scattergl


def _style(fig: go.Figure, **layout) -> go.Figure:
    """Layout every figure shares: readable hover labels, tight margins."""
    fig.update_layout(**{"hoverlabel": dict(bgcolor="white", font_color="#222"),
                         "margin": dict(t=30, b=40, l=50, r=10), **layout})
    return fig


# Plotly's default colours, which its template carried: a figure drawn without one keeps them.
COLORWAY = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880", "#ff97ff",
            "#fecb52"]


def _plain(value):
    """numpy arrays (and those inside dicts and lists) as plain lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def steady(fig: go.Figure) -> go.Figure:
    """The figure as the app shows it, drawn once. Streamlit calls Plotly.react again right after
    the first draw; plotly redraws everything when the layout has a template (even an equal one)
    or a trace has typed arrays (what numpy arrays become), point by point in SVG. So: plain lists,
    a layout.datarevision that changes with the data, no template but its colours, fonts and grid
    written out (Streamlit's look), for st.plotly_chart(theme=None). Figures beyond SVG_POINTS
    points keep their arrays: plain lists of WebGL-sized data cost the server more than a redraw."""
    if sum(len(t.x) for t in fig.data if getattr(t, "x", None) is not None) > SVG_POINTS:
        return fig
    data = [_plain(t.to_plotly_json()) for t in fig.data]
    layout = _plain(fig.layout.to_plotly_json())
    layout.pop("template", None)
    layout.setdefault("datarevision", _revision(json.dumps(data, default=str).encode()))
    layout.setdefault("colorway", COLORWAY)
    layout["font"] = {"family": FONT, "color": "#31333f", **layout.get("font", {})}
    for name in [k for k in layout if k.startswith(("xaxis", "yaxis"))] or ["xaxis", "yaxis"]:
        layout[name] = {"gridcolor": "#e6e9ef", "zerolinecolor": "#d5dae5", "linecolor": "#d5dae5",
                        **layout.get(name, {})}
    out = go.Figure(data=data, layout=layout)
    out.layout.template = None
    return out


def _axis(n: int, letter: str) -> str:
    """Plotly's name for the n-th subplot's axis (1-based): x, x2, x3, …"""
    return letter if n == 1 else f"{letter}{n}"


def _reference_lines(fig: go.Figure, lines: Sequence[tuple[int, float, str, str]], vertical: bool = False,
                     dash: str = "dot") -> go.Figure:
    """Dotted lines across a subplot, each with a label at its left end: (subplot, value, colour,
    label). One layout update for them all: plotly's add_hline re-validates the whole layout per
    line, which cost the Compare page 0.7 s for eight of them."""
    shapes, notes = list(fig.layout.shapes or ()), list(fig.layout.annotations or ())
    for n, value, colour, label in lines:
        along, across = ("y", "x") if vertical else ("x", "y")
        shapes.append({"type": "line", f"{along}ref": f"{_axis(n, along)} domain", f"{along}0": 0, f"{along}1": 1,
                       f"{across}ref": _axis(n, across), f"{across}0": value, f"{across}1": value,
                       "line": {"color": colour, "dash": dash, "width": 2 if vertical else 1.5}})
        if label:
            notes.append({"text": label, "showarrow": False, "font": {"color": colour},
                          f"{along}ref": f"{_axis(n, along)} domain", along: 0, f"{along}anchor": "left",
                          f"{across}ref": _axis(n, across), across: value, f"{across}anchor": "bottom"})
    return fig.update_layout(shapes=shapes, annotations=notes)


def training_curves(log: Sequence[Mapping]) -> go.Figure:
    """Loss and accuracy per epoch, side by side."""
    epochs = [row["epoch"] for row in log]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "accuracy"))
    fig.add_trace(go.Scatter(x=epochs, y=[r["loss"] for r in log], name="loss", mode="lines+markers"), 1, 1)
    fig.add_trace(go.Scatter(x=epochs, y=[r["train_acc"] for r in log], name="train (running)", mode="lines+markers"), 1, 2)
    if log and "test_acc" in log[0]:
        fig.add_trace(go.Scatter(x=epochs, y=[r["test_acc"] for r in log], name="test", mode="lines+markers"), 1, 2)
    fig.update_xaxes(title_text="epoch")
    return _style(fig, height=340, legend=dict(orientation="h", y=-0.25))


def per_class_accuracy(acc: Sequence[float], classes: Sequence[str]) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(classes), y=list(acc), text=[f"{a:.2f}" for a in acc], textposition="outside"))
    return _style(fig, title=dict(text="test accuracy per class", font=dict(size=14), x=0.5, xanchor="center"),
                  yaxis=dict(range=[0, 1.1], title="accuracy"), xaxis=dict(title="class", type="category"),
                  height=340)


def histogram(values: np.ndarray, labels: np.ndarray | None = None, xlabel: str = "value",
              class_names: Sequence[str] | None = None, log_y: bool = False) -> go.Figure:
    """Distribution of one score, stacked by class when labels are given; a log count axis
    shows the tail when most samples sit at one value."""
    fig = go.Figure()
    if labels is None:
        fig.add_trace(go.Histogram(x=values, nbinsx=40, name=xlabel))
    else:
        for c in np.unique(labels):
            name = class_names[c] if class_names is not None else str(c)
            fig.add_trace(go.Histogram(x=values[labels == c], name=f"class {name}", nbinsx=40,
                                       marker_color=CLASS_COLOURS[c % len(CLASS_COLOURS)]))
    return _style(fig, barmode="stack", xaxis_title=xlabel, height=340,
                  yaxis=dict(title="samples", type="log" if log_y else "linear"))


MAP_GRID = 60_000  # sample_map's positions: integers 0 … MAP_GRID (uint16)
FONT = '"Source Sans", sans-serif'  # Streamlit's: the charts are drawn without its theme (steady, sample_map)

# Pale for unmemorized, dark red for memorized: the samples that matter stand out on white.
MEMORIZATION_SCALE = [[0.0, "#9fb3c8"], [0.4, "#6baed6"], [0.7, "#f28e2b"], [1.0, "#9b1d20"]]


def _wire(values: np.ndarray, plain: bool):
    """A map's array as the figure sends it: a plain list (`plain`), else the numpy array, which
    plotly writes as a typed binary array (base64)."""
    return values.tolist() if plain else values


def _revision(*parts) -> str:
    """A short digest of a figure's arrays (or bytes), for layout.datarevision: it changes with the data."""
    digest = hashlib.blake2b(digest_size=8)
    for a in parts:
        digest.update(a if isinstance(a, bytes) else np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _right_margin(names: Sequence[str]) -> int:
    """Pixels right of the map for a legend of `names` (a colour bar without): fixed, so the first
    draw is the only one (a margin that grows to fit them makes plotly draw every point again)."""
    return 60 + 7 * max(len(n) for n in names) if names else 100  # a row: symbol, ~7 px a character


def sample_map(xy: np.ndarray, ids: np.ndarray, labels: np.ndarray, colour: np.ndarray, colour_name: str,
               categories: Sequence[str] | None = None, size: float = 6, opacity: float = 0.8,
               highlight: np.ndarray | None = None, axes: tuple[str, str] = ("map 1", "map 2")) -> go.Figure:
    """A scatter of the samples (WebGL beyond SVG_POINTS); every point carries its sample id in
    custom_data, so a selection maps back to samples whatever the trace layout.

    With `categories`, `colour` holds integer codes into them and each category is its own
    trace (the legend hides and shows them). Otherwise `colour` is a score, oriented so higher =
    more memorized: drawn highest last on a scale that darkens with it, so memorized samples
    are not buried; samples without a value are a grey trace underneath."""
    # What a lasso costs grows with what each point carries: the browser copies every array value
    # of every selected point into the selection, turns each key to snake_case one by one, and
    # sends it to the server, which parses it (50,000 points: megabytes). So each point holds one
    # id (custom_data) and its label as text, its position on a 0 … 60,000 grid, the same scale
    # on both axes (the axes show no numbers; a grid step is far under a pixel): "x":31234, not
    # "x":3.4323723316192627, and its colour to 3 decimals.
    #
    # Up to SVG_POINTS the arrays go as plain lists with a layout.datarevision. Plotly.react,
    # which Streamlit calls right after the first draw (to re-apply its theme) and after every
    # lasso (the selection's relayout), compares data arrays with Array.isArray, false for typed
    # arrays: a typed-array map is drawn again each time, point by point in SVG. With plain lists
    # and an unchanged datarevision it is not. Beyond SVG_POINTS, typed binary arrays (uint16
    # positions, float32 colours, int32 ids) keep a 60,000-point map near 1 MB on the wire, and
    # its plain lists would cost the server over a second to build.
    xy = np.asarray(xy, np.float64)
    if len(xy):
        lo = xy.min(0)
        extent = float((xy.max(0) - lo).max()) or 1.0
        xy = np.rint((xy - lo) * (MAP_GRID / extent)).astype(np.uint16)
    colour, meta = np.asarray(colour), np.asarray(ids).astype(np.int32)
    text = np.asarray(labels).astype(str)
    plain = len(xy) <= SVG_POINTS
    hover = "id %{customdata}<br>label %{text}"
    marker = dict(size=size, opacity=opacity)
    trace = _scatter(len(xy))

    def points(rows: np.ndarray, **kw):
        return trace(x=_wire(xy[rows, 0], plain), y=_wire(xy[rows, 1], plain), mode="markers",
                     customdata=_wire(meta[rows], plain), text=_wire(text[rows], plain), **kw)

    fig = go.Figure()
    if categories is not None:
        for code in np.unique(colour):
            fig.add_trace(points(np.flatnonzero(colour == code), name=str(categories[code]),
                                 marker=dict(**marker, color=CLASS_COLOURS[code % len(CLASS_COLOURS)]),
                                 hovertemplate=f"{hover}<br>{colour_name} {categories[code]}<extra></extra>"))
    else:
        finite = np.isfinite(colour)
        if not finite.all():
            fig.add_trace(points(np.flatnonzero(~finite), name="no value", marker=dict(**marker, color="#bbbbbb"),
                                 hovertemplate=f"{hover}<br>{colour_name}: none<extra></extra>"))
        order = np.flatnonzero(finite)[np.argsort(colour[finite], kind="stable")]
        values = np.round(colour[order], 3).astype(np.float32)
        fig.add_trace(points(
            order, name=colour_name, showlegend=False,  # its colour bar names it
            marker=dict(**marker, color=_wire(values, plain), colorscale=MEMORIZATION_SCALE, showscale=True,
                        colorbar=dict(title=dict(text=colour_name, side="right"), thickness=14)),
            hovertemplate=f"{hover}<br>{colour_name} %{{marker.color:.3f}}<extra></extra>"))
    outlined = highlight is not None and len(highlight) > 0
    if outlined:
        fig.add_trace(trace(x=_wire(xy[highlight, 0], plain), y=_wire(xy[highlight, 1], plain), mode="markers",
                            name="forget set", hoverinfo="skip",
                            marker=dict(color="rgba(0,0,0,0)", size=size + 5, line=dict(color="black", width=1.5))))
    axis = dict(showticklabels=False, automargin=False, showgrid=False, zeroline=False, showline=True, mirror=True,
                linecolor="rgba(128,128,128,0.35)")
    fig = _style(fig, height=600, dragmode="lasso", font=dict(family=FONT, size=12, color="#808495"),
                 paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
                 margin=dict(t=30, b=40, l=50, autoexpand=False,
                             r=_right_margin([] if categories is None else [colour_name, *map(str, categories),
                                                                            *(["forget set"] if outlined else [])])),
                 datarevision=_revision(xy, colour, meta, text, np.asarray([] if highlight is None else highlight)),
                 xaxis=dict(title=axes[0], **axis), yaxis=dict(title=axes[1], **axis),
                 # Categories: a legend on the right. A score has its colour bar there, so the forget
                 # set's legend entry sits above the map.
                 legend=dict(title=colour_name, itemsizing="constant", bgcolor="rgba(0,0,0,0)") if categories is not None
                 else dict(orientation="h", x=0, xanchor="left", y=1, yanchor="bottom", bgcolor="rgba(0,0,0,0)"),
                 showlegend=categories is not None or outlined)
    # No template: Plotly.react takes any template, even an equal one, as a change that redraws
    # everything. The figure carries its own look instead; show it with theme=None, since
    # Streamlit's theme is applied as a template.
    fig.layout.template = None
    return fig


def selected_ids(selection: Mapping | None) -> list[int]:
    """Sample ids of the points in a Streamlit plotly selection event. The browser sends
    custom_data as a dict {"0": id, …} or a list; points of helper traces carry none."""
    points = (selection or {}).get("points", []) if isinstance(selection, Mapping) else []
    ids = set()
    for point in points:
        data = point.get("customdata", point.get("custom_data"))
        if isinstance(data, Mapping):
            data = data.get("0", data.get(0))
        elif isinstance(data, Sequence) and not isinstance(data, str):
            data = data[0] if data else None
        if data is not None:
            ids.add(int(float(data)))
    return sorted(ids)


def before_after(original: Mapping, unlearned: Mapping, oracle: Mapping | None = None) -> go.Figure:
    """Grouped bars of accuracy on retain / forget / test (and MIA efficacy) per model."""
    keys = ["acc_retain", "acc_forget", "acc_test", "mia_efficacy"]
    names = ["retain acc", "forget acc", "test acc", "MIA efficacy"]
    fig = go.Figure()
    for label, values in (("original", original), ("unlearned", unlearned), ("oracle", oracle)):
        if values is None:
            continue
        ys = [values.get(k) for k in keys]
        fig.add_trace(go.Bar(name=label, x=names, y=ys, marker_color=PALETTE[label],
                             text=[f"{y:.3f}" if y is not None else "" for y in ys], textposition="outside"))
    return _style(fig, barmode="group", yaxis=dict(range=[0, 1.12], title="fraction"), height=380)


def convergence(rows: Sequence[Mapping]) -> go.Figure:
    """The exact estimate settling as models are added."""
    x = [r["models"] for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=x, y=[r["mean_stderr"] for r in rows], name="mean std. error", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=x, y=[r["mean_abs_change"] for r in rows], name="mean |change| since last point",
                             mode="lines+markers"), secondary_y=True)
    fig.update_xaxes(title_text="models trained")
    fig.update_yaxes(title_text="std. error", secondary_y=False, rangemode="tozero", tickformat=".3f")
    fig.update_yaxes(title_text="|change|", secondary_y=True, rangemode="tozero", tickformat=".3f", showgrid=False)
    return _style(fig, height=320, margin=dict(t=30, b=40, l=50, r=60), legend=dict(orientation="h", y=1.15))


def score_vs_score(x: np.ndarray, y: np.ndarray, ids: np.ndarray, labels: np.ndarray, x_name: str, y_name: str,
                   flipped: np.ndarray | None = None) -> go.Figure:
    """One point per sample (WebGL beyond SVG_POINTS); hover shows id, label and both values."""
    keep = np.isfinite(x) & np.isfinite(y)
    groups = [("samples", keep, "#636efa", 5)] if flipped is None or not flipped.any() else [
        ("clean label", keep & ~flipped, "#9a9a9a", 5), ("flipped label", keep & flipped, "#d62728", 8)]
    fig, trace = go.Figure(), _scatter(int(keep.sum()))
    for name, mask, colour, size in groups:
        fig.add_trace(trace(
            x=x[mask], y=y[mask], mode="markers", name=name, marker=dict(size=size, opacity=0.7, color=colour),
            customdata=np.c_[ids[mask], labels[mask]],
            hovertemplate=f"id %{{customdata[0]}}<br>label %{{customdata[1]}}<br>{x_name} %{{x:.3f}}<br>"
                          f"{y_name} %{{y:.3f}}<extra></extra>",
        ))
    return _style(fig, xaxis_title=x_name, yaxis_title=y_name, height=420, legend=dict(orientation="h", y=1.08))


def correlation_heatmap(names: Sequence[str], matrix: np.ndarray) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=matrix, x=list(names), y=list(names), zmin=-1, zmax=1, colorscale="RdBu",
                               text=[[f"{v:.2f}" for v in row] for row in matrix], texttemplate="%{text}"))
    return _style(fig, height=120 + 40 * len(names), yaxis=dict(autorange="reversed"))


def cost_chart(seconds: Mapping[str, float], reference: str = "exact") -> go.Figure:
    """Compute seconds per score set on a log axis, each bar labelled with how many times
    cheaper than the reference it is."""
    names = list(seconds)
    values = [max(seconds[n], 1e-6) for n in names]
    ref = seconds.get(reference)
    text = [f"{v:.3g} s" + (f" · {ref / v:,.0f}× cheaper" if ref and n != reference and v > 0 else "")
            for n, v in zip(names, values)]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", text=text, textposition="auto",
                           marker_color=["#ef553b" if n == reference else "#636efa" for n in names]))
    return _style(fig, xaxis=dict(type="log", title="seconds (log scale)"), height=90 + 36 * len(names),
                  yaxis=dict(autorange="reversed"), margin=dict(t=20, b=40, l=10, r=10))


def per_class_box(values: np.ndarray, labels: np.ndarray, class_names: Sequence[str], name: str) -> go.Figure:
    fig = go.Figure()
    for c in np.unique(labels):
        fig.add_trace(go.Box(y=values[labels == c], name=str(class_names[c]), boxpoints="outliers",
                             marker_color=CLASS_COLOURS[c % len(CLASS_COLOURS)]))
    return _style(fig, yaxis_title=name, xaxis_title="class", showlegend=False, height=340)


def auroc_bars(aurocs: Mapping[str, float]) -> go.Figure:
    names = list(aurocs)
    fig = go.Figure(go.Bar(x=names, y=[aurocs[n] for n in names], text=[f"{aurocs[n]:.3f}" for n in names],
                           textposition="outside"))
    _reference_lines(fig, [(1, 0.5, "#444", "chance (0.5)")])
    return _style(fig, yaxis=dict(range=[0, 1.08], title="AUROC for finding flipped labels"), height=340)


def sweep_front(points: Sequence[Mapping], front: Sequence[Mapping]) -> go.Figure:
    """Every setting a sweep tried, ToW against seconds (log), one colour per method, with the
    front of settings that no other beats on both."""
    fig = go.Figure()
    methods = list(dict.fromkeys(p["method"] for p in points))
    for i, name in enumerate(methods):
        mine = [p for p in points if p["method"] == name]
        fig.add_trace(go.Scatter(
            x=[p["seconds"] for p in mine], y=[p["tow"] for p in mine], mode="markers", name=name,
            marker=dict(size=9, color=CLASS_COLOURS[i % len(CLASS_COLOURS)], opacity=0.8),
            text=[", ".join(f"{k} {v:g}" for k, v in p["params"].items() if isinstance(v, (int, float))
                            and k not in ("momentum", "weight_decay", "batch_size", "seed")) for p in mine],
            hovertemplate="%{text}<br>ToW %{y:.3f} · %{x:.2f} s<extra>" + name + "</extra>"))
    fig.add_trace(go.Scatter(x=[p["seconds"] for p in front], y=[p["tow"] for p in front], mode="lines",
                             name="front", line=dict(color="#444", dash="dot"), hoverinfo="skip"))
    return _style(fig, height=380, xaxis=dict(type="log", title="seconds (log scale)"),
                  yaxis=dict(title="ToW against the oracle (1 = indistinguishable)"))


def metric_bars(rows: Sequence[Mapping], metric: str, label: str, original: float | None = None,
                oracle: float | None = None) -> go.Figure:
    """One bar per run for a metric, with the original's and the oracle's values as lines."""
    fig = go.Figure(go.Bar(x=[f"{r['method']} · {r['run'][2:6]}" for r in rows], y=[r.get(metric) for r in rows],
                           marker_color=PALETTE["unlearned"],
                           text=[f"{r[metric]:.3f}" if r.get(metric) is not None else "—" for r in rows],
                           textposition="outside"))
    _reference_lines(fig, [(1, value, PALETTE[name], f"{name} {value:.3f}")
                           for name, value in (("original", original), ("oracle", oracle)) if value is not None])
    return _style(fig, title=dict(text=label, font=dict(size=14), x=0.5, xanchor="center"), height=320,
                  yaxis=dict(rangemode="tozero"), xaxis=dict(tickangle=-40), margin=dict(t=40, b=90, l=50, r=10))


def metric_panels(rows: Sequence[Mapping], metrics: Mapping[str, str], original: Mapping | None = None,
                  oracle: Mapping | None = None, cols: int = 2) -> go.Figure:
    """metric_bars for several metrics ({key: label}) as the panels of one figure, so a page
    draws one chart instead of one per metric."""
    keys = list(metrics)
    n_rows = -(-len(keys) // cols)
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=[metrics[k] for k in keys], vertical_spacing=0.28,
                        horizontal_spacing=0.08)
    fig.update_annotations(font_size=14)  # the panel titles (the reference lines' labels come after)
    names = [f"{r['method']} · {r['run'][2:6]}" for r in rows]
    lines = []
    for i, key in enumerate(keys):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(go.Bar(x=names, y=[r.get(key) for r in rows], marker_color=PALETTE["unlearned"], name=metrics[key],
                             text=[f"{r[key]:.3f}" if r.get(key) is not None else "—" for r in rows],
                             textposition="outside", showlegend=False), row, col)
        lines += [(i + 1, values[key], PALETTE[who], f"{who} {values[key]:.3f}")
                  for who, values in (("original", original), ("oracle", oracle))
                  if values and values.get(key) is not None]
    _reference_lines(fig, lines)
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(tickangle=-40)
    return _style(fig, height=330 * n_rows, margin=dict(t=40, b=90, l=50, r=10))


def tow_vs_seconds(rows: Sequence[Mapping]) -> go.Figure:
    """The trade-off at a glance: closeness to the oracle against time, one colour per method."""
    fig = go.Figure()
    measured = [r for r in rows if r.get("tow") is not None and r.get("seconds")]
    for i, method in enumerate(dict.fromkeys(r["method"] for r in measured)):
        mine = [r for r in measured if r["method"] == method]
        fig.add_trace(go.Scatter(x=[r["seconds"] for r in mine], y=[r["tow"] for r in mine], mode="markers", name=method,
                                 marker=dict(size=11, color=CLASS_COLOURS[i % len(CLASS_COLOURS)]),
                                 text=[r["run"] for r in mine],
                                 hovertemplate="%{text}<br>ToW %{y:.3f} · %{x:.2f} s<extra>" + method + "</extra>"))
    return _style(fig, height=340, xaxis=dict(type="log", title="seconds (log scale)"),
                  yaxis=dict(title="ToW (1 = the oracle)", range=[0, 1.05]))


def before_after_samples(before: np.ndarray, after: np.ndarray, colour: np.ndarray | None, ids: np.ndarray,
                         colour_name: str, quantity: str = "true-label confidence") -> go.Figure:
    """Each sample's value under the original (x) and the unlearned model (y); points below the
    diagonal were pushed down. Coloured by memorization when there is a score."""
    marker = dict(size=7, opacity=0.8)
    if colour is not None:
        marker.update(color=colour, colorscale=MEMORIZATION_SCALE, showscale=True,
                      colorbar=dict(title=dict(text=colour_name, side="right"), thickness=12))
    fig = go.Figure(_scatter(len(before))(
        x=before, y=after, mode="markers", marker=marker, customdata=ids,
        hovertemplate="id %{customdata}<br>before %{x:.3f}<br>after %{y:.3f}<extra></extra>"))
    lo, hi = float(np.nanmin([before.min(), after.min(), 0])), float(np.nanmax([before.max(), after.max(), 1]))
    fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(color="#999", dash="dot"))
    return _style(fig, height=360, xaxis_title=f"{quantity}, original", yaxis_title=f"{quantity}, unlearned")


def before_after_panels(panels: Sequence[Mapping], colour_name: str = "",
                        quantity: str = "true-label confidence") -> go.Figure:
    """before_after_samples for several groups side by side, in one figure (one chart for the
    page to draw) on one colour scale. Each panel: title, before, after, colour (or None), ids."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p["title"] for p in panels],
                        horizontal_spacing=0.08)
    coloured = [np.asarray(p["colour"], float) for p in panels if p.get("colour") is not None]
    finite = np.concatenate([c[np.isfinite(c)] for c in coloured]) if coloured else np.array([])
    for col, p in enumerate(panels, 1):
        before, after = np.asarray(p["before"]), np.asarray(p["after"])
        marker = dict(size=7, opacity=0.8)
        if p.get("colour") is not None and len(finite):
            marker.update(color=p["colour"], colorscale=MEMORIZATION_SCALE, cmin=float(finite.min()),
                          cmax=float(finite.max()), showscale=col == 1,
                          colorbar=dict(title=dict(text=colour_name, side="right"), thickness=12))
        fig.add_trace(_scatter(sum(len(q["before"]) for q in panels))(
            x=before, y=after, mode="markers", marker=marker, customdata=p["ids"], showlegend=False,
            hovertemplate="id %{customdata}<br>before %{x:.3f}<br>after %{y:.3f}<extra></extra>"), 1, col)
        values = np.r_[before, after, 0, 1]
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(color="#999", dash="dot"), row=1, col=col)
    fig.update_xaxes(title_text=f"{quantity}, original")
    fig.update_yaxes(title_text=f"{quantity}, unlearned", col=1)
    return _style(fig, height=380, margin=dict(t=40, b=40, l=50, r=10))


def loss_distributions(groups: Mapping[str, Mapping[str, np.ndarray]], threshold: float | None = None) -> go.Figure:
    """Loss histograms of forget, retain and test samples, one panel per model: an attacker
    separates members by loss, so forgetting shows as the forget curve joining the test curve."""
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=list(groups), shared_yaxes=True)
    colours = {"forget": "#ef553b", "retain": "#636efa", "test": "#00cc96"}
    for col, (who, parts) in enumerate(groups.items(), 1):
        for part, values in parts.items():
            fig.add_trace(go.Histogram(x=np.log10(np.clip(values, 1e-6, None)), name=part, legendgroup=part,
                                       showlegend=col == 1, histnorm="probability", nbinsx=40, opacity=0.55,
                                       marker_color=colours[part]), 1, col)
    if threshold is not None:
        _reference_lines(fig, [(col, float(np.log10(max(threshold, 1e-6))), "#333", "") for col in range(1, len(groups) + 1)],
                         vertical=True, dash="dash")
    fig.update_xaxes(title_text="log₁₀ loss")
    return _style(fig, barmode="overlay", height=320, yaxis_title="share of samples",
                  legend=dict(orientation="h", y=1.18))


def class_accuracy_bars(acc: Mapping[str, np.ndarray], classes: Sequence[str]) -> go.Figure:
    """Test accuracy per class under each model."""
    fig = go.Figure([go.Bar(name=who, x=[str(c) for c in classes], y=values,
                            marker_color=PALETTE.get(who, CLASS_COLOURS[i % len(CLASS_COLOURS)]))
                     for i, (who, values) in enumerate(acc.items())])
    return _style(fig, barmode="group", height=300, xaxis=dict(title="class", type="category"),
                  yaxis=dict(title="test accuracy", range=[0, 1.05]), legend=dict(orientation="h", y=1.15))


def prediction_matrix(matrix: np.ndarray, classes: Sequence[str], title: str) -> go.Figure:
    """Counts of (true class, predicted class); off-diagonal cells are the mistakes."""
    names = [str(c) for c in classes]
    fig = go.Figure(go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", showscale=False,
                               text=matrix, texttemplate="%{text}", hovertemplate="true %{y} → predicted %{x}: %{z}"
                               "<extra></extra>"))
    return _style(fig, title=dict(text=title, font=dict(size=14), x=0.5, xanchor="center"), height=360,
                  xaxis=dict(title="predicted", type="category"),
                  yaxis=dict(title="true", type="category", autorange="reversed"), margin=dict(t=40, b=40, l=50, r=10))


def twin_maps(before: np.ndarray, after: np.ndarray, labels: np.ndarray, forget: np.ndarray,
              class_names: Sequence[str], titles: tuple[str, str] = ("original", "unlearned")) -> go.Figure:
    """The same samples placed by the original's and by the unlearned model's features (one
    shared projection), forget set outlined: did its samples move to where the oracle would put
    them?"""
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    trace = _scatter(2 * (len(before) + len(forget)))
    for col, xy in ((1, before), (2, after)):
        for c in np.unique(labels):
            mask = labels == c
            fig.add_trace(trace(x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=str(class_names[c]),
                                       legendgroup=str(c), showlegend=col == 1,
                                       marker=dict(size=4, opacity=0.6, color=CLASS_COLOURS[c % len(CLASS_COLOURS)])),
                          1, col)
        fig.add_trace(trace(x=xy[forget, 0], y=xy[forget, 1], mode="markers", name="forget set",
                                   legendgroup="forget", showlegend=col == 1,
                                   marker=dict(size=9, color="rgba(0,0,0,0)", line=dict(color="black", width=1.3))),
                      1, col)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return _style(fig, height=420, legend=dict(title="class"))


def cka_lines(cka: Mapping[str, Mapping]) -> go.Figure:
    """Linear CKA per layer of the unlearned model against each reference (the `cka_*` entries
    of a run's analysis): 1 = that layer's representation is unchanged (or, against the oracle,
    the oracle's)."""
    fig = go.Figure()
    for name, values in cka.items():
        if not name.startswith("cka_"):
            continue
        who = name.removeprefix("cka_")
        fig.add_trace(go.Scatter(x=list(values), y=list(values.values()), mode="lines+markers", name=f"vs {who}",
                                 line=dict(color=PALETTE.get(who))))
    return _style(fig, height=300, xaxis=dict(title="layer", type="category"), yaxis=dict(title="linear CKA", range=[0, 1.05]),
                  legend=dict(orientation="h", y=1.15))


def error_vs_verification(rows: Sequence[Mapping]) -> go.Figure:
    """Thudi et al.'s unlearning error (a bound computed from training alone) against the
    verification error (the measured distance to the oracle's weights), one point per run."""
    measured = [r for r in rows if r.get("unlearning_error") is not None and r.get("verification_error") is not None]
    fig = go.Figure()
    for i, method in enumerate(dict.fromkeys(r["method"] for r in measured)):
        mine = [r for r in measured if r["method"] == method]
        fig.add_trace(go.Scatter(x=[r["unlearning_error"] for r in mine], y=[r["verification_error"] for r in mine],
                                 mode="markers", name=method, text=[r["run"] for r in mine],
                                 marker=dict(size=10, color=CLASS_COLOURS[i % len(CLASS_COLOURS)]),
                                 hovertemplate="%{text}<br>unlearning error %{x:.3g}<br>verification error %{y:.3g}"
                                               "<extra>" + method + "</extra>"))
    return _style(fig, height=340, xaxis=dict(type="log", title="unlearning error (from training, log scale)"),
                  yaxis=dict(title="verification error ‖θ − θ_oracle‖₂"))


def residual_curve_figure(report: dict):
    """The residual memory Δ_k of each retrained block, where the run stopped, and the stop
    threshold (τ·Δ_d, or the fitted power law); blocks after the stop are shaded as stitched.
    A pure function of a deepobliviate run's `details`."""
    d, t, B = report["first_block"], report["stop_block"], report["blocks"]
    res = list(report.get("residual") or [])
    fig = go.Figure()
    if d is None:  # no stored block held a forgotten point: nothing was retrained
        return fig.update_layout(title=dict(text="No block held a forgotten point: nothing was retrained",
                                            font=dict(size=14)), height=200)
    if res:
        xs = list(range(d, d + len(res)))
        fig.add_trace(go.Scatter(x=xs, y=res, mode="lines+markers", name="Δ_k residual memory",
                                 hovertemplate="block %{x}<br>Δ = %{y:.4g}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[t], y=[res[t - d]], mode="markers", name=f"stop: block {t}",
                                 marker=dict(symbol="star", size=16, color="#ef553b")))
        if report.get("rule") == "ratio" and report.get("threshold"):
            fig.add_hline(y=report["threshold"] * res[0], line_dash="dash", line_color="#888",
                          annotation_text=f"τ·Δ_{d} (τ = {report['threshold']:g})", annotation_position="top right")
        fit = report.get("fit")
        if report.get("rule") == "powerlaw" and fit:
            grid = np.linspace(1, len(res), 100)
            fig.add_trace(go.Scatter(x=grid + d - 1, y=(fit["a"] * grid ** (-fit["h"]) + fit["b"]) * fit.get("scale", 1),
                                     mode="lines", line=dict(dash="dot"), name=f"a·x^(−h) + b, h = {fit['h']:.2f}"))
    if t < B:
        fig.add_vrect(x0=t + 0.5, x1=B + 0.5, fillcolor="#00cc96", opacity=0.12, line_width=0,
                      annotation_text="stitched: M_B − M_t", annotation_position="top left")
    fig.update_layout(title=dict(text=f"Residual memory per retrained block (blocks {d}–{t} of {B})", font=dict(size=14)),
                      xaxis=dict(title=f"block (1 … {d - 1} untouched)" if d > 1 else "block",
                                 range=[d - 0.5, B + 0.5], dtick=1 if B - d < 30 else None),
                      yaxis=dict(title="Δ_k (L1)", type="log" if res and min(res) > 0 else "linear"),
                      hoverlabel=dict(bgcolor="white", font_color="#222"), margin=dict(t=40, b=40, l=60, r=10),
                      height=340, legend=dict(orientation="h", y=-0.25))
    return fig


def forgetting_quality(rows: Sequence[Mapping]) -> go.Figure:
    """F per evaluation on the simultaneous bound with its 95% interval, F on the competition's
    point estimate, and the mean ToW of the method's runs beside them (all on 0–1, higher = closer
    to retraining)."""
    names = [f"{r['method']} · N={r['N']}" for r in rows]
    f = [r["F"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=f, name="F (95% bound)", marker_color=PALETTE["unlearned"],
                         error_y=dict(type="data", symmetric=False,
                                      array=[None if v is None else r["F high"] - v for r, v in zip(rows, f)],
                                      arrayminus=[None if v is None else v - r["F low"] for r, v in zip(rows, f)]),
                         hovertemplate="%{x}<br>F %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Bar(x=names, y=[r.get("F (point)") for r in rows], name="F (competition's point estimate)",
                         marker_color="#ffa15a", hovertemplate="%{x}<br>F (point) %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Bar(x=names, y=[r.get("ToW (runs)") for r in rows], name="ToW (mean of its runs)",
                         marker_color=PALETTE["oracle"], hovertemplate="%{x}<br>ToW %{y:.3f}<extra></extra>"))
    return _style(fig, barmode="group", height=340, yaxis=dict(range=[0, 1.05], title="1 = as retrained"),
                  legend=dict(orientation="h", y=1.12))


def forgetting_by_group(rows: Sequence[Mapping]) -> go.Figure:
    """F on the bound, F on the point estimate and mean KLoM per memorization group (low, mid,
    high), one bar per evaluation: a method that forgets the memorized samples as well as the
    others keeps its bars level across the groups."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("F (95% bound)", "F (point estimate)",
                                                        "mean KLoM (0 = as retrained)"))
    for i, ev in enumerate(dict.fromkeys(r["evaluation"] for r in rows)):
        mine = [r for r in rows if r["evaluation"] == ev]
        name = f"{mine[0]['method']} · N={mine[0]['N']}"
        for col, key in enumerate(("F", "F (point)", "KLoM"), start=1):
            fig.add_trace(go.Bar(x=[f"{r['group']} ({r['size']})" for r in mine], y=[r[key] for r in mine], name=name,
                                 legendgroup=ev, showlegend=col == 1, marker_color=CLASS_COLOURS[i % len(CLASS_COLOURS)],
                                 hovertemplate=f"{name}<br>%{{x}}<br>{key} %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    fig.update_xaxes(title_text="memorization group (samples)")
    return _style(fig, barmode="group", height=360, legend=dict(orientation="h", y=-0.3))


def epsilon_vs_memorization(points: Sequence[Mapping], memorization_name: str) -> go.Figure:
    """Per-sample ε (how well an attacker tells the unlearned models from retrained ones on the
    sample) against the sample's memorization, one colour per method: the RUM paper's point is
    that memorized samples are the hard ones to forget."""
    fig = go.Figure()
    for i, method in enumerate(dict.fromkeys(p["method"] for p in points)):
        mine = [p for p in points if p["method"] == method and p["memorization"] is not None]
        fig.add_trace(_scatter(len(mine))(x=[p["memorization"] for p in mine], y=[p["epsilon"] for p in mine],
                                          mode="markers", name=method, text=[p["sample_id"] for p in mine],
                                          marker=dict(size=7, opacity=0.7, color=CLASS_COLOURS[i % len(CLASS_COLOURS)]),
                                          hovertemplate="sample %{text}<br>ε %{y:.2f} · memorization %{x:.3f}<extra>"
                                                        + method + "</extra>"))
    return _style(fig, height=360, xaxis=dict(title=memorization_name), yaxis=dict(title="ε (simultaneous 95% lower bound)", rangemode="tozero"))
