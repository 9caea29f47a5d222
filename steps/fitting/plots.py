"""The plots of DAG step `fit` (the report embeds them; `plots/*.png` in the run).

prefill_performance: TTFT vs throughput/GPU per candidate at the request's ISL, TTFT target.
decode_performance: ITL and throughput/GPU per candidate over concurrency (log axis), ITL target.
cost_sla: $ per 1000 requests vs tokens/s/user along the Pareto fronts, one line per prefill
engine, one marker shape per decode engine. interpolation: the chosen engines' fitted prefill
curve and decode surface with the points they were fitted to. Titles and legends say whether the
points are measured, simulated or estimated (with the estimator's error band); estimated TTFTs
and ITLs carry their 80% prediction interval (error bars, shaded bands).

PNGs hold twice the pixels they are shown at in the report, so they stay sharp on high-density
screens. matplotlib is imported here only (Agg canvas, no pyplot); figures are few and PNGs are
compressed lightly, because the whole offline `slaprof profile` has a 3 s budget.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from slaprof.steps.fitting.evidence import MEASURED, Evidence

if TYPE_CHECKING:
    from slaprof.steps.fitting.fit_result import FitResult

GPU_COST_PER_HOUR = 3.0  # $ per GPU-hour, as in Dynamo's cost plot
PX_PER_INCH = 80  # CSS pixels per figure inch in the report
DPI = 2 * PX_PER_INCH  # PNGs hold twice the pixels they are shown at
SIZE = (8.5, 5.0)
WIDE = (13.0, 4.8)
PLOT_NAMES = ("prefill_performance", "decode_performance", "cost_sla", "interpolation", "serving_modes")
_RC: dict[Any, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9.5,
    "legend.title_fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
}
_MARKERS = "osD^vP*Xh<>"


@contextmanager
def plot_style() -> Iterator[None]:
    """The plots' font sizes, without touching matplotlib's global settings."""
    from matplotlib import rc_context

    with rc_context(_RC):
        yield


def _figure(size: tuple[float, float] = SIZE) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.91)  # fixed: tight_layout costs 30 ms a plot
    return fig


def _style(ax: Any, log_x: bool = False) -> None:
    from matplotlib.ticker import LogLocator, MaxNLocator, ScalarFormatter

    ax.grid(alpha=0.3)
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_locator(MaxNLocator(6))


def _target_line(ax: Any, value: float, label: str, horizontal: bool = False) -> None:
    line = ax.axhline if horizontal else ax.axvline
    line(value, color="red", linestyle="--", label=label)


def _finish(fig: Any, ax: Any, log_x: bool = False, **labels: str) -> Any:
    """Axis labels and title, the shared style and a legend."""
    ax.set(**labels)
    _style(ax, log_x)
    ax.legend()
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})  # zlib level 6 costs 3x the time
    return buf.getvalue()


def _labels(result: FitResult) -> dict[str, str]:
    return {p.id: p.candidate.label for p in result.profiles}


def prefill_performance(result: FitResult, ev: Evidence) -> Any:
    sel = result.selection
    if not result.prefill_options:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    bars = ""
    for o in result.prefill_options:
        chosen = sel.prefill is not None and o.candidate.id == sel.prefill.candidate.id
        band = result.band(o.candidate.id, "ttft", o.candidate.attn_dp, o.ttft_ms)
        if band is not None:  # the estimate's 80% interval
            bars = "; bars: 80% interval"
            # a segment, not error bars: an interval need not contain its estimate
            ax.plot(list(band), [o.thpt_per_gpu] * 2, color="grey", alpha=0.6, marker="|", ms=8)
        ax.scatter(
            [o.ttft_ms],
            [o.thpt_per_gpu],
            s=140 if chosen else 60,
            marker="*" if chosen else "o",
            label=f"{o.candidate.label} ({o.candidate.num_gpus} GPU{'s' if o.candidate.num_gpus > 1 else ''})"
            + (", chosen" if chosen else ""),
        )
    _target_line(ax, sel.ttft_ms, f"target TTFT {sel.ttft_ms:g} ms")
    return _finish(
        fig,
        ax,
        xlabel="TTFT (ms)",
        ylabel="prefill throughput (tokens/s/GPU)",
        title=f"Prefill engines at ISL {sel.isl} ({ev.note('ttft')}{bars})",
    )


def decode_performance(result: FitResult, ev: Evidence) -> Any:
    """ITL and throughput/GPU of every decode candidate over concurrency (log axis)."""
    sel = result.selection
    if not result.decode_options:
        return None
    fig = _figure(WIDE)
    fig.subplots_adjust(left=0.06, right=0.98, wspace=0.18)
    itl_ax, thpt_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    by: dict[str, list[Any]] = {}
    banded = False
    for o in result.decode_options:
        by.setdefault(o.candidate.id, []).append(o)
    for opts in by.values():
        opts.sort(key=lambda o: o.concurrency)
        conc = [o.concurrency for o in opts]
        label = f"{opts[0].candidate.label} ({opts[0].candidate.num_gpus} GPU{'s' if opts[0].candidate.num_gpus > 1 else ''})"
        (line,) = itl_ax.plot(conc, [o.itl_ms for o in opts], marker="o", ms=3, label=label)
        bands = [result.band(o.candidate.id, "itl", o.concurrency, o.itl_ms) for o in opts]
        if all(b is not None for b in bands):  # the estimates' 80% interval
            lo, hi = zip(*(b for b in bands if b is not None))
            itl_ax.fill_between(conc, lo, hi, color=line.get_color(), alpha=0.12, linewidth=0)
            banded = True
        thpt_ax.plot(conc, [o.thpt_per_gpu for o in opts], marker="o", ms=3, label=label)
    if sel.decode is not None:
        star = {"s": 180, "marker": "*", "color": "black", "zorder": 5, "label": f"chosen {sel.decode.candidate.label}"}
        itl_ax.scatter([sel.decode.concurrency], [sel.decode.itl_ms], **star)
        thpt_ax.scatter([sel.decode.concurrency], [sel.decode.thpt_per_gpu], **star)
    _target_line(itl_ax, sel.itl_ms, f"target ITL {sel.itl_ms:g} ms", horizontal=True)
    where = f"context {sel.isl + sel.osl // 2}"
    shaded = ", shaded: 80% interval" if banded else ""
    itl_ax.set(xlabel="concurrency per engine (log)", ylabel="ITL (ms)", title=f"Decode ITL at {where}{shaded}")
    thpt_ax.set(
        xlabel="concurrency per engine (log)",
        ylabel="decode throughput (tokens/s/GPU)",
        title=f"Decode throughput at {where}",
    )
    for ax in (itl_ax, thpt_ax):
        _style(ax, log_x=True)
        ax.legend()
    fig.suptitle(f"Decode engines over concurrency ({ev.note('itl')})", fontsize=12)
    fig.subplots_adjust(top=0.86)
    return fig


@dataclass(frozen=True)
class CostCurve:
    """One prefill engine (a point of the prefill Pareto front) paired with each decode front point."""

    prefill_id: str
    ttft_ms: float
    tokens_per_user: np.ndarray  # 1000 / ITL of each decode point
    dollars: np.ndarray  # $ per 1000 requests
    decode_ids: list[str] = field(default_factory=list)


def cost_curves(result: FitResult) -> list[CostCurve]:
    """Per prefill Pareto point: tokens/s/user and $ per 1000 requests along the decode front."""
    sel = result.selection
    dec = sorted(sel.decode_pareto, key=lambda p: p.latency_ms)
    out: list[CostCurve] = []
    if not dec:
        return out
    for p in sel.prefill_pareto:
        if p.thpt_per_gpu <= 0:
            continue
        x = np.array([1000.0 / d.latency_ms for d in dec])
        prefill_cost = sel.isl * 1000 / p.thpt_per_gpu * GPU_COST_PER_HOUR / 3600
        y = np.array([prefill_cost + sel.osl * 1000 / d.thpt_per_gpu * GPU_COST_PER_HOUR / 3600 for d in dec])
        out.append(CostCurve(p.candidate_id, p.latency_ms, x, y, [d.candidate_id for d in dec]))
    return out


def cost_sla(result: FitResult, ev: Evidence) -> Any:
    """$ per 1000 requests vs tokens/s/user: a line per prefill engine, a marker shape per decode engine."""
    from matplotlib.lines import Line2D

    curves = cost_curves(result)
    if not curves:
        return None
    sel, labels = result.selection, _labels(result)
    fig = _figure()
    ax = fig.add_subplot()
    decode_ids = list(dict.fromkeys(d for c in curves for d in c.decode_ids))
    marker = {d: _MARKERS[i % len(_MARKERS)] for i, d in enumerate(decode_ids)}
    for curve in curves:
        (line,) = ax.plot(
            curve.tokens_per_user,
            curve.dollars,
            linewidth=1.2,
            label=f"prefill {labels.get(curve.prefill_id, curve.prefill_id)} (TTFT {curve.ttft_ms:.1f} ms)",
        )
        for d in decode_ids:
            idx = [i for i, x in enumerate(curve.decode_ids) if x == d]
            ax.scatter(curve.tokens_per_user[idx], curve.dollars[idx], marker=marker[d], s=30, color=line.get_color())
    _target_line(ax, 1000.0 / sel.itl_ms, f"ITL target ({1000.0 / sel.itl_ms:.1f} tokens/s/user)")
    ax.set(
        xlabel="tokens/s/user (1000 / ITL)",
        ylabel="$ per 1000 requests",
        title=f"Cost per 1000 i{sel.isl}o{sel.osl} requests at ${GPU_COST_PER_HOUR:g}/GPU-hour ({ev.word})",
    )
    _style(ax)
    first = ax.legend(loc="upper left", title="prefill engine (line)")
    ax.add_artist(first)
    handles = [
        Line2D([], [], marker=marker[d], linestyle="", color="gray", label=f"decode {labels.get(d, d)}")
        for d in decode_ids
    ]
    ax.legend(handles=handles, loc="lower right", title="decode engine (marker)")
    return fig


def _prefill_curve(ax: Any, result: FitResult, ev: Evidence) -> bool:
    sel = result.selection
    if sel.prefill is None or sel.prefill.candidate.id not in result.prefill_interpolators:
        return False
    interp = result.prefill_interpolators[sel.prefill.candidate.id]
    lo, hi = interp.isl_range
    grid = np.linspace(lo, hi, 200)
    ax.plot(grid, interp.ttft_ms(grid), label="fitted TTFT")
    ax.scatter(interp.isl, interp.ttft, color="black", s=15, zorder=5, label=f"{ev.word} points")
    ax.axhline(sel.ttft_ms, color="red", linestyle="--", label=f"target TTFT {sel.ttft_ms:g} ms")
    ax.axvline(sel.isl, color="gray", linestyle=":", label=f"request ISL {sel.isl}")
    ax.set(xlabel="ISL (tokens)", ylabel="TTFT (ms)", title=f"Prefill {sel.prefill.candidate.label}: TTFT over ISL")
    ax.legend()
    _style(ax)
    return True


def _decode_surface(ax: Any, result: FitResult, ev: Evidence) -> bool:
    sel = result.selection
    if sel.decode is None or sel.decode.candidate.id not in result.decode_interpolators:
        return False
    interp = result.decode_interpolators[sel.decode.candidate.id]
    contexts = np.unique(interp.context)
    for color, ctx in zip(_colors(len(contexts)), contexts):
        row = interp.context == ctx
        top = max(interp.concurrency[row].max(), interp.attn_dp)
        batch = np.geomspace(interp.attn_dp, top, 60) if top > interp.attn_dp else np.array([float(top)])
        ax.plot(batch, interp.itl_ms(batch, ctx), color=color, linewidth=1, label=f"context {ctx:.0f}")
        ax.scatter(interp.concurrency[row], interp.itl[row], color=color, s=12)
    ax.axhline(sel.itl_ms, color="red", linestyle="--", label=f"target ITL {sel.itl_ms:g} ms")
    ax.set(
        xlabel="concurrency per engine (log)",
        ylabel="ITL (ms)",
        title=f"Decode {sel.decode.candidate.label}: fitted ITL (lines), {ev.word} (dots)",
    )
    ax.legend(ncol=2)
    _style(ax, log_x=True)
    return True


def interpolation(result: FitResult, ev: Evidence) -> Any:
    """The chosen engines' fitted prefill curve and decode surface with their points."""
    fig = _figure(WIDE)
    fig.subplots_adjust(left=0.06, right=0.98, wspace=0.2)
    drawn = [draw(fig.add_subplot(1, 2, i + 1), result, ev) for i, draw in enumerate((_prefill_curve, _decode_surface))]
    if not any(drawn):
        return None
    for ax, ok in zip(fig.axes, drawn):
        if not ok:
            ax.set_axis_off()
    return fig


ITL_VIEW = 2.5  # the serving-modes plot shows ITL up to this multiple of the target
MODE_STYLE = {"agg": ("aggregated", "tab:blue", "o"), "disagg": ("disaggregated", "tab:orange", "s")}


def serving_modes(result: FitResult, ev: Evidence) -> Any:
    """Whole-deployment output tokens/s per GPU against ITL, both serving modes: every evaluated
    deployment (filled when it meets the TTFT target, hollow when not), the ITL target, and the
    recommended deployment and the other mode's best marked."""
    sel = result.selection
    found = {mode: ds for mode, ds in result.deployments.items() if ds}
    if not found:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for mode, ds in found.items():
        name, color, marker = MODE_STYLE[mode]
        ok = [d for d in ds if d.ttft_ms <= sel.ttft_ms]
        late = [d for d in ds if d.ttft_ms > sel.ttft_ms]
        if ok:
            ax.scatter(
                [d.itl_ms for d in ok],
                [d.thpt_per_gpu for d in ok],
                s=20,
                color=color,
                marker=marker,
                label=f"{name}, TTFT within {sel.ttft_ms:g} ms",
            )
        if late:
            ax.scatter(
                [d.itl_ms for d in late],
                [d.thpt_per_gpu for d in late],
                s=20,
                facecolors="none",
                edgecolors=color,
                marker=marker,
                alpha=0.6,
                label=f"{name}, TTFT over target",
            )
    for d, label in ((sel.deployment, "recommended"), (sel.alternative, "best of the other mode")):
        if d is not None:
            ax.scatter(
                [d.itl_ms],
                [d.thpt_per_gpu],
                s=200,
                marker="*",
                color="black" if label == "recommended" else "gray",
                zorder=5,
                label=f"{label}: {d.shape} ({d.gpus} GPUs)",
            )
    _target_line(ax, sel.itl_ms, f"target ITL {sel.itl_ms:g} ms")
    # the region around the ITL target: far slower deployments only squeeze it
    near = [d for ds in found.values() for d in ds if d.itl_ms <= ITL_VIEW * sel.itl_ms]
    ax.set_xlim(0, ITL_VIEW * sel.itl_ms)
    ax.set_ylim(0, 1.08 * max((d.thpt_per_gpu for d in near), default=1.0))
    return _finish(
        fig,
        ax,
        xlabel="ITL (ms)",
        ylabel="deployment output throughput (tokens/s/GPU)",
        title=f"Aggregated vs disaggregated within {sel.gpu_budget} GPUs, ISL {sel.isl} / OSL {sel.osl} "
        f"({ev.note('itl')})",
    )


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(1, n - 1)) for i in range(n)]


PlotMaker = Callable[["FitResult", Evidence], Any]  # a matplotlib Figure, or None when the data has no such plot
_MAKERS: dict[str, PlotMaker] = {
    "prefill_performance": prefill_performance,
    "decode_performance": decode_performance,
    "cost_sla": cost_sla,
    "interpolation": interpolation,
    "serving_modes": serving_modes,
}


def plot_figures(result: FitResult, ev: Evidence = MEASURED) -> dict[str, Any]:
    """name -> matplotlib Figure for every plot the data allows (call under `plot_style()`)."""
    figures = {name: _MAKERS[name](result, ev) for name in PLOT_NAMES}
    return {name: fig for name, fig in figures.items() if fig is not None}


def render_plots(result: FitResult, ev: Evidence = MEASURED) -> dict[str, bytes]:
    """name -> PNG bytes for every plot the data allows."""
    with plot_style():
        return {name: _png(fig) for name, fig in plot_figures(result, ev).items()}


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    width, height = struct.unpack(">II", png[16:24])
    return width, height
