"""The HTML report of DAG step `fit`: report.html, one self-contained page.

Input: a FitResult (selection, options at the operating point, interpolators, profiles), the
ProfileRequest and the plots (`slaprof.steps.fitting.plots`). The page says what every number is (measured,
simulated or estimated: `slaprof.steps.fitting.evidence`) and shows the estimator's error band beside every
modelled TTFT and ITL. It is one file: plots embedded as base64 PNGs, inline CSS, and one small
inline script for the copy button, which only appears where scripts run (the Argo UI's artifact
preview shows the page without it). The page is a list of sections (`SECTIONS`), each a function
of one ReportContext, so a new view is one more function.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slaprof.steps.fitting.evidence import MEASURED, Evidence, evidence_of, run_evidence
from slaprof.steps.fitting.plots import PLOT_NAMES, png_size, render_plots

if TYPE_CHECKING:
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.results import DeploymentChoice, Selection
    from slaprof.steps.core.store import ArtifactStore
    from slaprof.steps.fitting.fit_result import FitResult

__all__ = ["PLOT_NAMES", "SECTIONS", "ReportContext", "render_html", "write_report"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;padding:0 1.5em;color:#222;
max-width:1120px;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1.02em;margin:1.2em 0 .3em}
.sub{color:#555;margin:0 0 1em}
.badge{display:inline-block;border-radius:1em;padding:.1em .8em;font-size:.85em;font-weight:600;vertical-align:middle}
.badge.estimated,.badge.simulated,.badge.mixed{background:#fff1c2;color:#6b4a00;border:1px solid #e0b040}
.badge.measured{background:#dff3df;color:#1a5b1a;border:1px solid #8c8}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.total td{font-weight:600;background:#f7f7f7}
.rec{background:#f2f8f2;border:2px solid #7b7;border-radius:6px;padding:.6em 1.2em 1em;margin:1em 0}
.rec h2{border:0;margin:.2em 0 .5em}
.lines{display:flex;gap:.6em;align-items:flex-start}
.lines pre{flex:1;margin:0;background:#fff;border:1px solid #9c9;padding:.6em;font-size:.95em;overflow-x:auto}
button.copy{font:inherit;font-size:.85em;padding:.35em .9em;border:1px solid #6a6;border-radius:4px;background:#fff;
cursor:pointer}
button.copy:hover{background:#e6f3e6}
.band{color:#7a5200;font-size:.85em}
.note{font-size:.88em;color:#444;margin:.4em 0}
code{background:#f4f4f4;padding:0 .25em;border-radius:3px}
.warn{background:#fff4e0;border:1px solid #e0b060;padding:.4em .8em;margin:.3em 0}
.chosen{font-weight:bold;color:#1a6b1a}.lost{color:#555}.failed,.infeasible{color:#a01010}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88em;color:#444}
"""

# Shows the copy buttons and copies a <pre>'s text; where scripts do not run the buttons stay hidden.
_SCRIPT = """
document.querySelectorAll('button.copy').forEach(function (b) {
  b.hidden = false;
  b.addEventListener('click', function () {
    var el = document.getElementById(b.dataset.copy), text = el.innerText;
    function done() { b.textContent = 'Copied'; setTimeout(function () { b.textContent = 'Copy'; }, 1500); }
    function fallback() {
      var r = document.createRange(); r.selectNodeContents(el);
      var s = window.getSelection(); s.removeAllRanges(); s.addRange(r);
      try { document.execCommand('copy'); done(); } catch (e) {}
    }
    if (navigator.clipboard) { navigator.clipboard.writeText(text).then(done, fallback); } else { fallback(); }
  });
});
"""


def _e(x: object) -> str:
    return html.escape(str(x))


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _table(
    headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None, row_class: list[str] | None = None
) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="n"' if i in numeric else ""
            cells.append(f"<td{cls}>{cell if isinstance(cell, _Raw) else _e(cell)}</td>")
        tr_cls = f' class="{row_class[r]}"' if row_class and row_class[r] else ""
        body.append(f"<tr{tr_cls}>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _latency_cell(ev: Evidence, value_ms: float, kind: str, prefix: str = "") -> _Raw:
    """A TTFT/ITL cell: the value, and beside it the error band when the value is modelled."""
    pct = ev.pct(kind)
    text = f"{_e(prefix)}{value_ms:.2f}"
    if pct is None or ev.band is None:
        return _Raw(text)
    return _Raw(f"{text} <span class='band' title='{_e(ev.band.describe())}'>±{pct:.0f}%</span>")


def _source(ev: Evidence, interpolated: bool) -> str:
    return f"{ev.word}, interpolated" if interpolated else ev.word


@dataclass
class ReportContext:
    """What every section of the report reads."""

    result: FitResult
    request: ProfileRequest
    plots: dict[str, bytes]
    dgd: str | None = None  # where the DGD is (or will be) written
    evidence: Evidence = MEASURED
    by_candidate: dict[str, Evidence] = field(default_factory=dict)

    @property
    def sel(self) -> Selection:
        return self.result.selection

    def of(self, candidate_id: str) -> Evidence:
        return self.by_candidate.get(candidate_id, self.evidence)


_BADGES = {
    "estimated": "Offline estimates: nothing was measured",
    "simulated": "Simulated engines: timed by the performance model, not measured on GPUs",
    "measured": "Measured on GPUs",
    "mixed": "Mixed: some candidates measured, others modelled",
}


def _badge(ctx: ReportContext) -> str:
    ev = ctx.evidence
    text = _BADGES[ev.word]
    if ctx.request.sweep.dry_run:
        text = "Dry run: offline estimates, nothing was measured"
    return f"<span class='badge {ev.word}' id='evidence'>{_e(text)}</span>"


def _header(ctx: ReportContext) -> str:
    sel = ctx.sel
    return (
        f"<h1>slaprof report: {_e(sel.model)} on {_e(sel.gpu)} ({_e(sel.backend)})</h1>"
        f"<p class='sub'>{_badge(ctx)} ISL {sel.isl}, OSL {sel.osl}, targets TTFT {sel.ttft_ms:g} ms and "
        f"ITL {sel.itl_ms:g} ms</p>"
    )


def _deployment_table(ctx: ReportContext) -> str:
    """Each role's engine, replicas and GPUs, the latency it reaches and whether it meets the target."""
    sel = ctx.sel
    if sel.deployment is not None and sel.deployment.mode == "agg":
        return _agg_table(ctx, sel.deployment)
    roles: list[tuple[str, Any, str, float, float]] = []
    if sel.prefill is not None:
        roles.append(("prefill", sel.prefill, "ttft", sel.prefill.ttft_ms, sel.ttft_ms))
    if sel.decode is not None:
        roles.append(("decode", sel.decode, "itl", sel.decode.itl_ms, sel.itl_ms))
    rows: list[list[Any]] = []
    total = 0
    for role, choice, kind, value, target in roles:
        replicas = getattr(sel.replicas, role) if sel.replicas else 1
        gpus = choice.candidate.num_gpus * replicas
        total += gpus
        ev = ctx.of(choice.candidate.id)
        rows.append(
            [
                role,
                choice.candidate.label,
                choice.candidate.num_gpus,
                replicas,
                gpus,
                _latency_cell(ev, value, kind, prefix=f"{kind.upper()} "),
                f"{choice.thpt_per_gpu:.2f}",
                "yes" if choice.meets_sla else f"no (target {target:g} ms)",
                _source(ev, choice.interpolated),
            ]
        )
    rows.append(["total", "", "", "", total, "", "", "", ""])
    headers = ["role", "engine", "GPUs per engine", "replicas", "GPUs", "latency (ms)", "tokens/s/GPU", "meets target"]
    return _table(
        [*headers, "source"], rows, {2, 3, 4, 5, 6}, row_class=[""] * (len(rows) - 1) + ["total"]
    ) + _replica_note(ctx, total)


def _agg_table(ctx: ReportContext, chosen: DeploymentChoice) -> str:
    """The aggregated deployment: one engine kind serving both phases, its replicas and GPUs."""
    group = chosen.group("agg")
    assert group is not None
    ev = ctx.of(group.candidate.id)
    row = [
        "aggregated",
        group.candidate.label,
        group.candidate.num_gpus,
        group.replicas,
        chosen.gpus,
        _Raw(
            f"{_latency_cell(ev, chosen.ttft_ms, 'ttft', 'TTFT ')}, {_latency_cell(ev, chosen.itl_ms, 'itl', 'ITL ')}"
        ),
        f"{chosen.thpt_per_gpu:.2f}",
        "yes" if chosen.meets_sla else f"no (targets {ctx.sel.ttft_ms:g} / {ctx.sel.itl_ms:g} ms)",
        _source(ev, group.interpolated),
    ]
    headers = ["role", "engine", "GPUs per engine", "replicas", "GPUs", "latency (ms)", "tokens/s/GPU", "meets target"]
    note = (
        f"<p class='note' id='total-gpus'>Total: <b>{chosen.gpus} GPUs</b> ({group.replicas} aggregated replicas at "
        f"concurrency {group.concurrency} each, {chosen.request_rate:.2f} requests/s).</p>"
    )
    return _table([*headers, "source"], [row], {2, 3, 4, 5, 6}) + note


def _replica_note(ctx: ReportContext, total: int) -> str:
    r = ctx.sel.replicas
    if r is not None and ctx.request.sla.request_rate:
        return (
            f"<p class='note' id='total-gpus'>Total: <b>{total} GPUs</b> "
            f"({r.prefill} prefill and {r.decode} decode replicas for {r.request_rate:g} requests/s).</p>"
        )
    if r is not None:
        return (
            f"<p class='note' id='total-gpus'>Total: <b>{total} GPUs</b> ({r.prefill} prefill and {r.decode} decode "
            f"replicas, rate-matched within {ctx.sel.gpu_budget or total} GPUs: {r.request_rate:g} requests/s).</p>"
        )
    return (
        f"<p class='note' id='total-gpus'>Total: <b>{total} GPUs</b> (one replica per role; pass "
        "<code>--request-rate</code> to size the replicas for a load).</p>"
    )


def _dgd_note(ctx: ReportContext) -> str:
    if not ctx.dgd:
        return ""
    return (
        f"<p class='note' id='dgd'>DynamoGraphDeployment: <code>{_e(ctx.dgd)}</code> (written by the render step "
        "of <code>slaprof profile</code> and of the workflow; for a <code>fit</code> or <code>select</code> output, "
        "<code>slaprof render --selection DIR --out FILE</code> writes it).</p>"
    )


def _band_paragraph(ctx: ReportContext) -> str:
    bands = {ev.band for ev in [ctx.evidence, *ctx.by_candidate.values()] if ev.band is not None}
    if not bands:
        return ""
    text = " ".join(f"{b.describe()}." for b in sorted(bands, key=lambda b: b.estimator))
    return f"<p class='note' id='error-band'><b>Error band (±)</b>: {_e(text)}</p>"


def _recommendation(ctx: ReportContext) -> str:
    sel = ctx.sel
    parts = ["<div class='rec' id='recommendation'><h2>Recommendation</h2>"]
    if sel.recommendation:
        parts.append(
            "<div class='lines'>"
            f"<pre id='rec-lines'>{_e(chr(10).join(sel.recommendation))}</pre>"
            "<button type='button' class='copy' data-copy='rec-lines' hidden>Copy</button></div>"
        )
        parts.append(_deployment_table(ctx))
        parts.append(_dgd_note(ctx))
    else:
        parts.append("<p class='warn'>No recommendation: no candidate produced usable results.</p>")
    if sel.nearest_sla:
        parts.append(
            f"<p class='warn'>The SLA cannot be met. Nearest achievable SLA: TTFT "
            f"{sel.nearest_sla.get('ttft_ms', 0):.2f} ms, ITL {sel.nearest_sla.get('itl_ms', 0):.2f} ms; "
            f"{sel.nearest_sla_use()} it instead of the requested SLA.</p>"
        )
    parts.append(_band_paragraph(ctx))
    parts.append("</div>")
    return "".join(parts)


def _serving_modes(ctx: ReportContext) -> str:
    """The recommended deployment and the best of the other serving mode side by side, and why the
    other lost."""
    from slaprof.steps.fitting.deployments import MODE_NAMES

    sel = ctx.sel
    chosen = sel.deployment
    if chosen is None:
        return ""
    rows = [
        [
            MODE_NAMES[d.mode],
            d.shape,
            d.gpus,
            f"{d.thpt_per_gpu:.1f}",
            f"{d.request_rate:.2f}",
            _latency_cell(ctx.evidence, d.ttft_ms, "ttft"),
            _latency_cell(ctx.evidence, d.itl_ms, "itl"),
            "yes" if d.meets_sla else "no",
            "recommended" if d is chosen else d.verdict,
        ]
        for d in (chosen, sel.alternative)
        if d is not None
    ]
    headers = ["mode", "deployment", "GPUs", "tokens/s/GPU", "requests/s", "TTFT (ms)", "ITL (ms)", "meets SLA"]
    note = f"<p>{_e(sel.comparison)}</p>" if sel.alternative is None and sel.comparison else ""
    return (
        f"<h2 id='serving-modes'>Aggregated vs disaggregated (within {sel.gpu_budget} GPUs)</h2>"
        + _table([*headers, "verdict"], rows, {2, 3, 4, 5, 6})
        + note
    )


def _warnings(ctx: ReportContext) -> str:
    if not ctx.sel.warnings:
        return ""
    return "<h2>Warnings</h2>" + "".join(f"<div class='warn'>{_e(w)}</div>" for w in ctx.sel.warnings)


def _request(ctx: ReportContext) -> str:
    request, sla = ctx.request, ctx.request.sla
    rows = [
        ["model", request.model],
        ["backend", request.backend],
        ["method", request.method + (" (dry run)" if request.sweep.dry_run else "")],
        ["GPU", request.hardware.gpu],
        ["ISL / OSL", f"{sla.isl} / {sla.osl}"],
        ["TTFT target", f"{sla.ttft_ms:g} ms"],
        ["ITL target", f"{sla.itl_ms:g} ms"],
        ["request rate", f"{sla.request_rate:g} req/s" if sla.request_rate else "not given"],
        ["granularity (prefill / decode)", f"{request.sweep.prefill_granularity} / {request.sweep.decode_granularity}"],
        # what the engines ran and the DGD's workers are told, beyond the checkpoint's own declaration
        ["precision", ctx.sel.precision.describe()],
        ["engine context", f"{ctx.sel.max_context:,} tokens" if ctx.sel.max_context else "the model's"],
    ]
    if request.method == "offline":
        rows.append(["estimator", request.sweep.estimator])
    return "<h2>Request</h2>" + _table(["setting", "value"], rows)


def _candidates(ctx: ReportContext) -> str:
    sel, result = ctx.sel, ctx.result
    verdict_rows = [
        [v.candidate_id, v.phase, _Raw(f"<span class='{_e(v.status)}'>{_e(v.status)}</span>"), v.reason]
        for v in sel.verdicts
    ]
    parts = ["<h2>Candidates</h2>", _table(["candidate", "phase", "verdict", "why"], verdict_rows)]
    prof_rows = []
    for p in result.profiles:
        prov = p.provenance
        how = ctx.of(p.id).word + f" ({prov.method}" + (f", {prov.estimator}" if prov.estimator else "") + ")"
        prof_rows.append(
            [p.id, p.candidate.label, p.candidate.num_gpus, p.status, f"{p.max_kv_tokens:,}", len(p.prefill)]
            + [len(p.decode), how]
        )
    if prof_rows:
        headers = ["id", "mapping", "GPUs", "status", "max KV tokens", "prefill points", "decode points", "results"]
        parts.append(_table(headers, prof_rows, {2, 4, 5, 6}))
    return "".join(parts)


def _point_notes(ctx: ReportContext) -> str:
    """Points that could not be measured, and simulated points flagged against their driving model."""
    from slaprof.steps.measure.simcheck import TOLERANCE, flagged, label

    rows: list[list[Any]] = []
    for p in ctx.result.profiles:
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


def _interval_checks(ctx: ReportContext) -> str:
    """Where each measurement fell against the offline estimate's 80% interval (a per-run calibration check)."""
    checks = ctx.result.interval_checks
    if not checks:
        return ""
    inside = sum(c.inside for c in checks)
    rows = [
        [
            c.candidate_id,
            c.point,
            f"{c.measured_ms:.2f}",
            f"{c.estimate_ms:.2f}",
            f"{c.lo_ms:.2f}-{c.hi_ms:.2f}",
            c.where,
        ]
        for c in checks
    ]
    return (
        "<h3 id='interval-checks'>Measurements against their predicted intervals</h3>"
        f"<p class='note'>{inside} of {len(checks)} measured points fell inside the 80% prediction interval of "
        "the offline estimate for the same point (about 80% is what calibrated intervals give); the "
        "measurements, not the estimates, drove the selection.</p>"
        + _table(["candidate", "point", "measured ms", "estimate ms", "80% interval ms", "where"], rows, {2, 3})
    )


def _operating_points(ctx: ReportContext) -> str:
    """Every candidate at the request's ISL (prefill) and context (decode)."""
    sel, result = ctx.sel, ctx.result
    parts = []
    rows: list[list[Any]]
    if result.prefill_options:
        rows = [
            [
                o.candidate.label,
                _latency_cell(ctx.of(o.candidate.id), o.ttft_ms, "ttft"),
                f"{o.thpt_per_gpu:.2f}",
                "yes" if o.ttft_ms <= sel.ttft_ms else "no",
                _source(ctx.of(o.candidate.id), o.interpolated),
            ]
            for o in result.prefill_options
        ]
        parts.append(f"<h3>Prefill at ISL {sel.isl}</h3>")
        parts.append(
            _table(["candidate", "TTFT (ms)", "throughput (tokens/s/GPU)", "meets TTFT", "source"], rows, {1, 2})
        )
    if result.decode_options:
        rows = [
            [
                o.candidate.label,
                o.concurrency,
                f"{o.kv_usage:.3f}",
                _latency_cell(ctx.of(o.candidate.id), o.itl_ms, "itl"),
                f"{o.thpt_per_gpu:.2f}",
                "yes" if o.itl_ms <= sel.itl_ms else "no",
                _source(ctx.of(o.candidate.id), o.interpolated),
            ]
            for o in result.decode_options
        ]
        headers = ["candidate", "concurrency", "KV usage", "ITL (ms)", "throughput (tokens/s/GPU)", "meets ITL"]
        parts.append(f"<h3>Decode at context {sel.isl + sel.osl // 2}</h3>")
        parts.append(_table([*headers, "source"], rows, {1, 2, 3, 4}))
    return "".join(parts)


def _pareto(ctx: ReportContext) -> str:
    sel = ctx.sel
    parts = []
    for title, front, kind in (
        ("Prefill Pareto front (TTFT vs throughput/GPU)", sel.prefill_pareto, "ttft"),
        ("Decode Pareto front (ITL vs throughput/GPU)", sel.decode_pareto, "itl"),
    ):
        if front:
            rows = [
                [
                    p.candidate_id,
                    _latency_cell(ctx.of(p.candidate_id), p.latency_ms, kind),
                    f"{p.thpt_per_gpu:.2f}",
                    p.concurrency,
                ]
                for p in front
            ]
            headers = ["candidate", f"{kind.upper()} (ms)", "throughput (tokens/s/GPU)", "concurrency"]
            parts.append(f"<h3>{_e(title)}</h3>" + _table(headers, rows, {1, 2, 3}))
    return "".join(parts)


_CAPTIONS = {
    "serving_modes": "Every deployment evaluated within the GPU budget, both serving modes: throughput per GPU of the "
    "whole deployment against ITL; stars mark the recommendation and the other mode's best.",
    "prefill_performance": "Each prefill candidate at the request's ISL; the star is the chosen engine.",
    "decode_performance": "Each decode candidate over concurrency per engine (log axis); the star is the chosen "
    "operating point.",
    "cost_sla": "Cost of serving along the Pareto fronts: one line per prefill engine, one marker shape per decode "
    "engine.",
    "interpolation": "The chosen engines' fitted curves (what the planner data holds) and the points they were fitted "
    "to.",
}


def _plots(ctx: ReportContext) -> str:
    if not ctx.plots:
        return ""
    parts = ["<h2>Plots</h2>"]
    for name, png in ctx.plots.items():
        width, height = png_size(png)
        data = base64.b64encode(png).decode()
        parts.append(
            f"<figure id='plot-{_e(name)}'><img alt='{_e(name)}' width='{width // 2}' height='{height // 2}' "
            f"src='data:image/png;base64,{data}'><figcaption>{_e(_CAPTIONS.get(name, ''))}</figcaption></figure>"
        )
    return "".join(parts)


Section = Callable[[ReportContext], str]
# The page, top to bottom; a new section is a function of the context added here.
SECTIONS: list[Section] = [
    _header,
    _recommendation,
    _serving_modes,
    _warnings,
    _request,
    _candidates,
    _point_notes,
    _interval_checks,
    _operating_points,
    _pareto,
    _plots,
]


def report_context(
    result: FitResult, request: ProfileRequest, plots: dict[str, bytes], dgd: str | None = None
) -> ReportContext:
    by_candidate = {p.id: evidence_of(p) for p in result.profiles}
    return ReportContext(result, request, plots, dgd, run_evidence(result, request), by_candidate)


def render_html(result: FitResult, request: ProfileRequest, plots: dict[str, bytes], dgd: str | None = None) -> str:
    ctx = report_context(result, request, plots, dgd)
    body = "\n".join(part for section in SECTIONS if (part := section(ctx)))
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>slaprof: {_e(ctx.sel.model)}</title><style>{_CSS}</style></head><body>\n{body}\n"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def _display_path(uri: str) -> str:
    """An absolute path for a local file (the report is read from anywhere), URIs unchanged."""
    return uri if "://" in uri else str(Path(uri).resolve())


def write_report(store: ArtifactStore, result: FitResult, request: ProfileRequest) -> str:
    """Write plots/*.png and report.html; returns the report's URI."""
    from slaprof.steps.core.store import Layout

    plots = render_plots(result, run_evidence(result, request))
    for name, png in plots.items():
        store.put_bytes(f"{Layout.PLOTS}{name}.png", png, "image/png")
    html_text = render_html(result, request, plots, _display_path(store.uri(Layout.DGD)))
    store.put_bytes(Layout.REPORT, html_text.encode(), "text/html")
    return store.uri(Layout.REPORT)
