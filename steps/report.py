"""Plots and the HTML report of DAG step `fit`.

Input: a FitResult (selection, options at the operating point, interpolators, profiles) and the
ProfileRequest. Output: plots/prefill_performance.png (TTFT vs throughput/GPU per candidate,
TTFT target), plots/decode_performance.png (ITL vs throughput/GPU per candidate over concurrency,
ITL target), plots/cost_sla.png ($ per 1000 requests vs tokens/s/user along the Pareto fronts),
plots/interpolation.png (the chosen engines' fitted prefill curve and decode surface with the
measured points) and one self-contained report.html (plots embedded as base64, inline CSS, no scripts or external assets,
so it reads the same in a browser and in the Argo UI's artifact preview).

matplotlib is imported here only (Agg canvas, no pyplot); figures are few and small and PNGs are
compressed lightly, because the whole offline `slaprof profile` has a 3 s budget.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from steps.fit import FitResult
    from steps.request import ProfileRequest
    from steps.results import CandidateProfile
    from steps.store import ArtifactStore

GPU_COST_PER_HOUR = 3.0  # $ per GPU-hour, as in Dynamo's cost plot
DPI = 80
SIZE = (6.4, 4.2)
PLOT_NAMES = ("prefill_performance", "decode_performance", "cost_sla", "interpolation")


def _figure(size: tuple[float, float] = SIZE) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.92)  # fixed: tight_layout costs 30 ms a plot
    return fig


def _style(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.title.set_fontsize(9)


def _target_line(ax: Any, x: float, label: str) -> None:
    ax.axvline(x, color="red", linestyle="--", label=label)


def _finish(fig: Any, ax: Any, **labels: str) -> bytes:
    """Axis labels and title, the shared style, a legend, and the PNG bytes."""
    ax.set(**labels)
    _style(ax)
    ax.legend(fontsize=7)
    return _png(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})  # zlib level 6 costs 3x the time
    return buf.getvalue()


def _labels(result: FitResult) -> dict[str, str]:
    return {p.id: p.candidate.label for p in result.profiles}


def prefill_performance(result: FitResult) -> bytes | None:
    sel = result.selection
    if not result.prefill_options:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for o in result.prefill_options:
        chosen = sel.prefill is not None and o.candidate.id == sel.prefill.candidate.id
        ax.scatter(
            [o.ttft_ms],
            [o.thpt_per_gpu],
            s=70 if chosen else 40,
            marker="*" if chosen else "o",
            label=f"{o.candidate.label} ({o.candidate.num_gpus} GPU{'s' if o.candidate.num_gpus > 1 else ''})",
        )
    _target_line(ax, sel.ttft_ms, f"target TTFT {sel.ttft_ms:g} ms")
    return _finish(
        fig, ax, xlabel="TTFT (ms)", ylabel="prefill throughput (tokens/s/GPU)", title=f"Prefill at ISL {sel.isl}"
    )


def decode_performance(result: FitResult) -> bytes | None:
    sel = result.selection
    if not result.decode_options:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    by: dict[str, list[Any]] = {}
    for o in result.decode_options:
        by.setdefault(o.candidate.id, []).append(o)
    for opts in by.values():
        opts.sort(key=lambda o: o.concurrency)
        ax.plot(
            [o.itl_ms for o in opts], [o.thpt_per_gpu for o in opts], marker="o", ms=3, label=opts[0].candidate.label
        )
    if sel.decode is not None:
        ax.scatter(
            [sel.decode.itl_ms],
            [sel.decode.thpt_per_gpu],
            s=120,
            marker="*",
            color="black",
            zorder=5,
            label=f"chosen {sel.decode.candidate.label}",
        )
    _target_line(ax, sel.itl_ms, f"target ITL {sel.itl_ms:g} ms")
    return _finish(
        fig,
        ax,
        xlabel="ITL (ms)",
        ylabel="decode throughput (tokens/s/GPU)",
        title=f"Decode at context {sel.isl + sel.osl // 2} over concurrency",
    )


def cost_curves(result: FitResult) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per prefill Pareto point: (label, tokens/s/user, $ per 1000 requests) along the decode front."""
    sel = result.selection
    dec = sorted(sel.decode_pareto, key=lambda p: p.latency_ms)
    out = []
    if not dec:
        return out
    for p in sel.prefill_pareto:
        if p.thpt_per_gpu <= 0:
            continue
        x = np.array([1000.0 / d.latency_ms for d in dec])
        prefill_cost = sel.isl * 1000 / p.thpt_per_gpu * GPU_COST_PER_HOUR / 3600
        y = np.array([prefill_cost + sel.osl * 1000 / d.thpt_per_gpu * GPU_COST_PER_HOUR / 3600 for d in dec])
        out.append((f"prefill TTFT {p.latency_ms:.1f} ms", x, y))
    return out


def cost_sla(result: FitResult) -> bytes | None:
    curves = cost_curves(result)
    if not curves:
        return None
    sel = result.selection
    fig = _figure()
    ax = fig.add_subplot()
    for label, x, y in curves:
        ax.plot(x, y, marker="o", ms=3, label=label)
    _target_line(ax, 1000.0 / sel.itl_ms, f"ITL target ({1000.0 / sel.itl_ms:.1f} tokens/s/user)")
    return _finish(
        fig,
        ax,
        xlabel="tokens/s/user",
        ylabel="$ per 1000 requests",
        title=f"Cost Per 1000 i{sel.isl}o{sel.osl} requests (GPU/hour = ${GPU_COST_PER_HOUR:g}) Under Different SLA",
    )


def _prefill_curve(ax: Any, result: FitResult) -> bool:
    sel = result.selection
    if sel.prefill is None or sel.prefill.candidate.id not in result.prefill_interpolators:
        return False
    interp = result.prefill_interpolators[sel.prefill.candidate.id]
    lo, hi = interp.isl_range
    grid = np.linspace(lo, hi, 200)
    ax.plot(grid, interp.ttft_ms(grid), label="fitted TTFT")
    ax.scatter(interp.isl, interp.ttft, color="black", s=15, zorder=5, label="measured")
    ax.axhline(sel.ttft_ms, color="red", linestyle="--", label=f"target TTFT {sel.ttft_ms:g} ms")
    ax.axvline(sel.isl, color="gray", linestyle=":", label=f"request ISL {sel.isl}")
    ax.set(xlabel="ISL (tokens)", ylabel="TTFT (ms)", title=f"Prefill {sel.prefill.candidate.label}: TTFT over ISL")
    ax.legend(fontsize=7)
    return True


def _decode_surface(ax: Any, result: FitResult) -> bool:
    sel = result.selection
    if sel.decode is None or sel.decode.candidate.id not in result.decode_interpolators:
        return False
    interp = result.decode_interpolators[sel.decode.candidate.id]
    contexts = np.unique(interp.context)
    for color, ctx in zip(_colors(len(contexts)), contexts):
        row = interp.context == ctx
        batch = np.linspace(interp.attn_dp, max(interp.concurrency[row].max(), interp.attn_dp), 60)
        ax.plot(batch, interp.itl_ms(batch, ctx), color=color, linewidth=1, label=f"context {ctx:.0f}")
        ax.scatter(interp.concurrency[row], interp.itl[row], color=color, s=12)
    ax.axhline(sel.itl_ms, color="red", linestyle="--", label=f"target ITL {sel.itl_ms:g} ms")
    ax.set(
        xlabel="concurrency",
        ylabel="ITL (ms)",
        title=f"Decode {sel.decode.candidate.label}: fitted ITL (lines), measured (dots)",
    )
    ax.legend(fontsize=6, ncol=2)
    return True


def interpolation(result: FitResult) -> bytes | None:
    """The chosen engines' fitted prefill curve and decode surface with the measured points."""
    fig = _figure((12.0, 4.2))
    fig.subplots_adjust(left=0.06, right=0.98, wspace=0.2)
    drawn = [draw(fig.add_subplot(1, 2, i + 1), result) for i, draw in enumerate((_prefill_curve, _decode_surface))]
    if not any(drawn):
        return None
    for ax, ok in zip(fig.axes, drawn):
        if ok:
            _style(ax)
        else:
            ax.set_axis_off()
    return _png(fig)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(1, n - 1)) for i in range(n)]


def render_plots(result: FitResult) -> dict[str, bytes]:
    """name -> PNG bytes for every plot the data allows."""
    makers = (prefill_performance, decode_performance, cost_sla, interpolation)
    out = {}
    for name, make in zip(PLOT_NAMES, makers):
        png = make(result)
        if png is not None:
            out[name] = png
    return out


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre.rec{background:#eef6ee;border:1px solid #9c9;padding:.6em;font-size:.95em}
.warn{background:#fff4e0;border:1px solid #e0b060;padding:.4em .8em;margin:.3em 0}
.chosen{font-weight:bold;color:#1a6b1a}.lost{color:#555}.failed,.infeasible{color:#a01010}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="n"' if i in numeric else ""
            cells.append(f"<td{cls}>{cell if isinstance(cell, _Raw) else _e(cell)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def render_html(result: FitResult, request: ProfileRequest, plots: dict[str, bytes]) -> str:
    sel = result.selection
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>slaprof: {_e(sel.model)}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>slaprof report: {_e(sel.model)} on {_e(sel.gpu)} ({_e(sel.backend)})</h1>",
    ]
    parts.append("<h2>Recommendation</h2>")
    if sel.recommendation:
        parts.append(f"<pre class='rec'>{_e(chr(10).join(sel.recommendation))}</pre>")
    else:
        parts.append("<p class='warn'>No recommendation: no candidate produced usable measurements.</p>")
    if sel.nearest_sla:
        parts.append(
            f"<p class='warn'>The SLA cannot be met. Nearest achievable SLA: TTFT "
            f"{sel.nearest_sla.get('ttft_ms', 0):.2f} ms, ITL {sel.nearest_sla.get('itl_ms', 0):.2f} ms.</p>"
        )
    if sel.replicas:
        r = sel.replicas
        parts.append(
            "<h3>Replicas for the request rate</h3>"
            + _table(
                ["request rate (req/s)", "prefill engines", "decode engines", "total GPUs"],
                [[f"{r.request_rate:g}", r.prefill, r.decode, r.total_gpus]],
                {0, 1, 2, 3},
            )
        )
    if sel.warnings:
        parts.append("<h2>Warnings</h2>" + "".join(f"<div class='warn'>{_e(w)}</div>" for w in sel.warnings))

    parts.append("<h2>Request</h2>")
    sla = request.sla
    rows = [
        ["model", request.model],
        ["backend", request.backend],
        ["method", request.method],
        ["GPU", request.hardware.gpu],
        ["ISL / OSL", f"{sla.isl} / {sla.osl}"],
        ["TTFT target", f"{sla.ttft_ms:g} ms"],
        ["ITL target", f"{sla.itl_ms:g} ms"],
        ["request rate", f"{sla.request_rate:g} req/s" if sla.request_rate else "not given"],
        ["granularity (prefill / decode)", f"{request.sweep.prefill_granularity} / {request.sweep.decode_granularity}"],
    ]
    if request.method == "offline":
        rows.append(["estimator", request.sweep.estimator])
    parts.append(_table(["setting", "value"], rows))

    parts.append("<h2>Candidates</h2>")
    verdict_rows = [
        [v.candidate_id, v.phase, _Raw(f"<span class='{_e(v.status)}'>{_e(v.status)}</span>"), v.reason]
        for v in sel.verdicts
    ]
    parts.append(_table(["candidate", "phase", "verdict", "why"], verdict_rows))
    prof_rows = []
    for p in result.profiles:
        prov = p.provenance
        prof_rows.append(
            [
                p.id,
                p.candidate.label,
                p.candidate.num_gpus,
                p.status,
                f"{p.max_kv_tokens:,}",
                len(p.prefill),
                len(p.decode),
                prov.method + (f" ({prov.estimator})" if prov.estimator else ""),
            ]
        )
    if prof_rows:
        parts.append(
            _table(
                ["id", "mapping", "GPUs", "status", "max KV tokens", "prefill points", "decode points", "method"],
                prof_rows,
                {2, 4, 5, 6},
            )
        )

    parts.append(_point_notes(result.profiles))

    if result.prefill_options:
        parts.append(f"<h3>Prefill at ISL {sel.isl}</h3>")
        parts.append(
            _table(
                ["candidate", "TTFT (ms)", "throughput (tokens/s/GPU)", "meets TTFT", "source"],
                [
                    [
                        o.candidate.label,
                        f"{o.ttft_ms:.2f}",
                        f"{o.thpt_per_gpu:.2f}",
                        "yes" if o.ttft_ms <= sel.ttft_ms else "no",
                        "interpolated" if o.interpolated else "measured",
                    ]
                    for o in result.prefill_options
                ],
                {1, 2},
            )
        )
    if result.decode_options:
        parts.append(f"<h3>Decode at context {sel.isl + sel.osl // 2}</h3>")
        parts.append(
            _table(
                [
                    "candidate",
                    "concurrency",
                    "KV usage",
                    "ITL (ms)",
                    "throughput (tokens/s/GPU)",
                    "meets ITL",
                    "source",
                ],
                [
                    [
                        o.candidate.label,
                        o.concurrency,
                        f"{o.kv_usage:.3f}",
                        f"{o.itl_ms:.2f}",
                        f"{o.thpt_per_gpu:.2f}",
                        "yes" if o.itl_ms <= sel.itl_ms else "no",
                        "interpolated" if o.interpolated else "measured",
                    ]
                    for o in result.decode_options
                ],
                {1, 2, 3, 4},
            )
        )
    for title, front in (
        ("Prefill Pareto front (TTFT vs throughput/GPU)", sel.prefill_pareto),
        ("Decode Pareto front (ITL vs throughput/GPU)", sel.decode_pareto),
    ):
        if front:
            parts.append(
                f"<h3>{_e(title)}</h3>"
                + _table(
                    ["candidate", "latency (ms)", "throughput (tokens/s/GPU)", "concurrency"],
                    [[p.candidate_id, f"{p.latency_ms:.2f}", f"{p.thpt_per_gpu:.2f}", p.concurrency] for p in front],
                    {1, 2, 3},
                )
            )

    if plots:
        parts.append("<h2>Plots</h2>")
        for name, png in plots.items():
            data = base64.b64encode(png).decode()
            parts.append(f"<div><img alt='{_e(name)}' src='data:image/png;base64,{data}'></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _point_notes(profiles: list[CandidateProfile]) -> str:
    """Points that could not be measured, and simulated points flagged against their driving model."""
    from steps.simcheck import TOLERANCE, flagged, label

    rows: list[list[Any]] = []
    for p in profiles:
        rows += [[p.id, _Raw("<span class='failed'>flagged</span>"), label(c)] for c in flagged(p)]
        rows += [
            [
                p.id,
                _Raw("<span class='failed'>failed</span>"),
                f"{f.phase} ISL {f.isl}"
                + (f" x {f.concurrency}" if f.concurrency is not None else "")
                + f": {f.reason}",
            ]
            for f in p.failed_points
        ]
    if not rows:
        return ""
    return (
        "<h3>Points to look at</h3><p class='warn'>flagged: a simulated point more than "
        f"{TOLERANCE:.0%} off the model that drives the simulated engine (the machine was too busy for its "
        "time scale); failed: not measured, the candidate's other points stand.</p>"
        + _table(["candidate", "point", "what"], rows)
    )


def write_report(store: ArtifactStore, result: FitResult, request: ProfileRequest) -> str:
    """Write plots/*.png and report.html; returns the report's URI."""
    from steps.store import Layout

    plots = render_plots(result)
    for name, png in plots.items():
        store.put_bytes(f"{Layout.PLOTS}{name}.png", png, "image/png")
    store.put_bytes(Layout.REPORT, render_html(result, request, plots).encode(), "text/html")
    return store.uri(Layout.REPORT)
