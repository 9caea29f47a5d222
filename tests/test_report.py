"""report.html is self-contained (plots embedded, one inline script, no external references) and carries
the request, the recommendation with its GPUs and replicas, every candidate's verdict and the warnings;
it labels estimates as estimates with their error band; the plots are 2x PNGs."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest

from slaprof.steps.core.results import Provenance
from slaprof.steps.core.store import LocalStore
from slaprof.steps.dag.fit import fit_profiles
from slaprof.steps.fitting.evidence import Evidence, run_evidence
from slaprof.steps.fitting.plots import cost_curves, plot_figures, plot_style, png_size
from slaprof.steps.fitting.report import PLOT_NAMES, render_html, render_plots, write_report
from slaprof.steps.perf.error_band import HELD_OUT
from tests.conftest import ROOT
from tests.test_fit import make_plan_for, make_profile, make_request

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Refs(HTMLParser):
    """Collects every URL-bearing attribute and every tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []

        self.scripts: list[dict] = []
        self.cells: list[str] = []
        self._in_td = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "script":
            self.scripts.append(dict(attrs))
        if tag == "td":
            self._in_td = True
            self.cells.append("")
        for name, value in attrs:
            if name in ("src", "href", "data", "action", "srcset") and value is not None:
                self.urls.append((tag, name, value))

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_td = False

    def handle_data(self, data):
        if self._in_td:
            self.cells[-1] += data


@pytest.fixture(scope="module")
def result():
    profiles = [
        make_profile("tp1"),
        make_profile("tp2"),
        make_profile("tp4", status="failed", reason="engine <crashed> & exited"),
    ]
    request = make_request(ttft_ms=1.0, itl_ms=20.0, request_rate=3.0)
    return fit_profiles(request, make_plan_for(["tp1", "tp2", "tp4"]), profiles), request


def test_every_plot_is_a_png(result):
    fit, _ = result
    plots = render_plots(fit)
    assert set(plots) == set(PLOT_NAMES)
    for name, png in plots.items():
        assert png.startswith(PNG_MAGIC), name
        assert 20_000 < len(png) < 600_000, (name, len(png))  # drawn, and modest in size
        assert png_size(png)[0] >= 1300, name  # 2x: at least 650 CSS pixels wide on the page


def _report(tmp_path: Path, fit, request) -> tuple[str, _Refs]:
    write_report(LocalStore(tmp_path), fit, request)
    text = (tmp_path / "report.html").read_text()
    refs = _Refs()
    refs.feed(text)
    return text, refs


def test_report_is_self_contained_and_complete(result, tmp_path: Path):
    fit, request = result
    text, refs = _report(tmp_path, fit, request)
    assert "link" not in refs.tags and "iframe" not in refs.tags
    assert refs.scripts == [{}]  # one inline script (the copy button), nothing loaded
    images = [u for u in refs.urls if u[0] == "img"]
    assert len(images) == len(PLOT_NAMES)
    for _tag, _attr, url in refs.urls:
        assert url.startswith("data:image/png;base64,"), url[:60]
        png = base64.b64decode(url.split(",", 1)[1])
        assert png.startswith(PNG_MAGIC)
        width, height = png_size(png)
        assert f"width='{width // 2}' height='{height // 2}'" in text  # shown at half its pixels: sharp
    assert "http://" not in text and "https://" not in text and "url(" not in text
    for line in fit.selection.recommendation:
        assert line in text
    assert "Nearest achievable SLA" in text
    assert "engine &lt;crashed&gt; &amp; exited" in text  # reasons are escaped, not injected
    for v in fit.selection.verdicts:
        assert v.candidate_id in text
    for w in fit.selection.warnings:
        assert w.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in text
    assert request.model in text
    assert "<td>precision</td><td>as declared</td>" in text  # no --quantization / --kv-cache-dtype override
    for name in PLOT_NAMES:
        assert (tmp_path / "plots" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)


def test_recommendation_shows_gpus_replicas_dgd_and_a_copy_button(result, tmp_path: Path):
    fit, request = result
    sel = fit.selection
    text, _ = _report(tmp_path, fit, request)
    r = sel.replicas
    assert (
        r is not None
        and r.total_gpus == r.prefill * sel.prefill.candidate.num_gpus + r.decode * sel.decode.candidate.num_gpus
    )
    assert f"Total: <b>{r.total_gpus} GPUs</b> ({r.prefill} prefill and {r.decode} decode replicas" in text
    assert f"<code>{(tmp_path / 'dgd.yaml').resolve()}</code>" in text
    lines = "\n".join(sel.recommendation)
    assert f"<pre id='rec-lines'>{lines}</pre>" in text
    assert "<button type='button' class='copy' data-copy='rec-lines' hidden>Copy</button>" in text


def test_without_a_request_rate_the_rate_matched_engines_are_totalled(tmp_path: Path):
    request = make_request(ttft_ms=500.0, itl_ms=30.0)
    fit = fit_profiles(request, make_plan_for(["tp1", "tp2"]), [make_profile("tp1"), make_profile("tp2")])
    sel = fit.selection
    text = render_html(fit, request, {}, dgd="/runs/x/dgd.yaml")
    r = sel.replicas
    assert r is not None
    total = r.prefill * sel.prefill.candidate.num_gpus + r.decode * sel.decode.candidate.num_gpus
    assert total == r.total_gpus <= sel.gpu_budget
    assert f"Total: <b>{total} GPUs</b> ({r.prefill} prefill and {r.decode} decode replicas, rate-matched" in text


def _online(profile):
    return profile.model_copy(update={"provenance": Provenance(method="online", backend="vllm")})


def test_offline_numbers_are_estimates_with_their_error_band(result, tmp_path: Path):
    fit, request = result
    text, refs = _report(tmp_path, fit, request)
    band = HELD_OUT["builtin"]
    assert not [c for c in refs.cells if "measured" in c], "an offline report calls nothing measured"
    sources = [c for c in refs.cells if c.startswith("estimated")]
    assert len(sources) >= len(fit.prefill_options) + len(fit.decode_options)
    ttft_band, itl_band = f"±{band.ttft_mape_pct:.0f}%", f"±{band.itl_mape_pct:.0f}%"
    for o in fit.prefill_options:
        assert f"{o.ttft_ms:.2f} {ttft_band}" in refs.cells
    for o in fit.decode_options:
        assert f"{o.itl_ms:.2f} {itl_band}" in refs.cells
    assert "Offline estimates: nothing was measured" in text and f"{band.rows:,} measured deployments" in text
    ev = run_evidence(fit, request)
    with plot_style():
        figures = plot_figures(fit, ev)
    titles = [ax.get_title() for fig in figures.values() for ax in fig.axes] + [
        fig._suptitle.get_text() for fig in figures.values() if fig._suptitle is not None
    ]
    assert any(f"estimated, TTFT {ttft_band}" in t for t in titles)
    assert any(f"estimated, ITL {itl_band}" in t for t in titles)
    legends = [
        t.get_text()
        for fig in figures.values()
        for ax in fig.axes
        if ax.get_legend()
        for t in ax.get_legend().get_texts()
    ]
    assert "estimated points" in legends and not any("measured" in t for t in legends + titles)


def test_dry_run_and_measured_runs_say_so(tmp_path: Path):
    request = make_request(ttft_ms=500.0, itl_ms=30.0)
    dry = request.model_copy(update={"sweep": request.sweep.model_copy(update={"dry_run": True})})
    profiles = [make_profile("tp1"), make_profile("tp2")]
    fit = fit_profiles(dry, make_plan_for(["tp1", "tp2"]), profiles)
    assert "Dry run: offline estimates, nothing was measured" in render_html(fit, dry, {})
    measured = fit_profiles(request, make_plan_for(["tp1", "tp2"]), [_online(p) for p in profiles])
    assert run_evidence(measured, request) == Evidence("measured")
    text = render_html(measured, request, {})
    refs = _Refs()
    refs.feed(text)
    assert "Measured on GPUs" in text and "class='band'" not in text and "Error band" not in text
    assert not [c for c in refs.cells if c.startswith("estimated")]


def test_plots_use_a_log_concurrency_axis_and_name_the_engines(result):
    fit, _ = result
    labels = {p.id: p.candidate.label for p in fit.profiles}
    with plot_style():
        figures = plot_figures(fit, Evidence("measured"))
    decode_axes = figures["decode_performance"].axes
    assert len(decode_axes) == 2 and all(ax.get_xscale() == "log" for ax in decode_axes)
    assert "concurrency" in decode_axes[0].get_xlabel()
    assert figures["interpolation"].axes[1].get_xscale() == "log"
    cost_ax = figures["cost_sla"].axes[0]
    legend_texts = [t.get_text() for leg in [cost_ax.get_legend(), *cost_ax.artists] for t in leg.get_texts()]
    curves = cost_curves(fit)
    for curve in curves:
        assert any(t.startswith(f"prefill {labels[curve.prefill_id]} (TTFT") for t in legend_texts)
    for decode_id in {d for c in curves for d in c.decode_ids}:
        assert f"decode {labels[decode_id]}" in legend_texts


def test_select_report_prints_the_reports_path(tmp_path: Path, capsys):
    from slaprof.steps.cli.main import main
    from tests.test_fit import _write_run

    run_dir, out = tmp_path / "run", tmp_path / "itl30"
    _write_run(LocalStore(run_dir))
    assert main(["select", "--profiles", str(run_dir), "--itl", "30", "--out", str(out), "--report"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"Report: {out / 'report.html'}" and (out / "report.html").is_file()


def test_cost_curve_follows_dynamo_formula(result):
    fit, _ = result
    sel = fit.selection
    curve = cost_curves(fit)[0]
    p, d = sel.prefill_pareto[0], sorted(sel.decode_pareto, key=lambda q: q.latency_ms)[0]
    assert curve.tokens_per_user[0] == pytest.approx(1000.0 / d.latency_ms)
    assert curve.dollars[0] == pytest.approx(
        sel.isl * 1000 / p.thpt_per_gpu * 3 / 3600 + sel.osl * 1000 / d.thpt_per_gpu * 3 / 3600
    )
    assert curve.prefill_id == p.candidate_id and curve.decode_ids[0] == d.candidate_id


def test_error_band_is_the_readmes_held_out_accuracy():
    """The band the report shows is what README "Accuracy" documents from bench/accuracy.py."""
    import re

    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| held out ("))
    cells = [c.strip().strip("*").replace("−", "-").rstrip("%").replace(",", "") for c in row.split("|")[1:-1]]
    band = HELD_OUT["builtin"]
    assert int(cells[1]) == band.rows
    assert (float(cells[2]), float(cells[3]), float(cells[5])) == (
        band.ttft_mape_pct,
        band.ttft_median_pct,
        band.itl_mape_pct,
    )
    aic = re.search(r"TTFT MAPE ([\d.]+)% \(median −([\d.]+)%\), TPOT MAPE\s+([\d.]+)%", readme)
    assert aic is not None
    assert (float(aic[1]), -float(aic[2]), float(aic[3])) == (
        HELD_OUT["aic"].ttft_mape_pct,
        HELD_OUT["aic"].ttft_median_pct,
        HELD_OUT["aic"].itl_mape_pct,
    )


def test_report_without_results_still_renders():
    profiles = [make_profile("tp1", status="failed", reason="no GPUs")]
    request = make_request()
    fit = fit_profiles(request, make_plan_for(["tp1"]), profiles)
    assert render_plots(fit) == {}
    text = render_html(fit, request, {})
    assert "No recommendation" in text and "no GPUs" in text and "<img" not in text


def test_report_puts_the_two_serving_modes_side_by_side(tmp_path: Path):
    from tests.test_fit import make_agg_profile

    request = make_request(ttft_ms=150.0, itl_ms=20.0)
    plan = make_plan_for(["tp1", "tp2", "agg-tp2"])
    disagg_only = fit_profiles(request, plan, [make_profile("tp1"), make_profile("tp2")])
    best_disagg = disagg_only.selection.deployment
    profiles = [make_profile("tp1"), make_profile("tp2"), make_agg_profile("agg-tp2", 1.5 * best_disagg.thpt_per_gpu)]
    fit = fit_profiles(request, plan, profiles)
    sel = fit.selection
    assert sel.deployment.mode == "agg" and sel.alternative.mode == "disagg"
    text = render_html(fit, request, {})
    section = text.split("Aggregated vs disaggregated (within 8 GPUs)")[1].split("<h2>")[0]
    for d in (sel.deployment, sel.alternative):
        assert d.shape in section and f"{d.thpt_per_gpu:.1f}" in section and f"{d.itl_ms:.2f}" in section
    ratio = sel.alternative.thpt_per_gpu / sel.deployment.thpt_per_gpu
    assert ratio < 1 / 1.5 + 1e-9  # the aggregated engine runs beyond its best measured point (interpolated)
    assert "recommended" in section and f"{ratio:.2f}x the tokens/s per GPU of the aggregated choice" in section
    png = render_plots(fit).get("serving_modes")
    assert png is not None and png.startswith(PNG_MAGIC)
    # one mode only: the section says why the other is missing
    text = render_html(disagg_only, request, {})
    assert "Other mode: no aggregated candidate was profiled or produced results" in text
