"""report.html is self-contained (plots embedded, no scripts, no external references) and carries
the request, the recommendation, every candidate's verdict and the warnings; the plots are PNGs."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest

from steps.fit import fit_profiles
from steps.report import PLOT_NAMES, cost_curves, render_html, render_plots, write_report
from steps.store import LocalStore
from tests.test_fit import make_plan_for, make_profile, make_request

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Refs(HTMLParser):
    """Collects every URL-bearing attribute and every tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "data", "action", "srcset") and value is not None:
                self.urls.append((tag, name, value))


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
        assert 5_000 < len(png) < 200_000, (name, len(png))  # drawn, and modest in size


def test_report_is_self_contained_and_complete(result, tmp_path: Path):
    fit, request = result
    store = LocalStore(tmp_path)
    write_report(store, fit, request)
    text = (tmp_path / "report.html").read_text()
    refs = _Refs()
    refs.feed(text)
    assert "script" not in refs.tags and "link" not in refs.tags and "iframe" not in refs.tags
    images = [u for u in refs.urls if u[0] == "img"]
    assert len(images) == len(PLOT_NAMES)
    for _tag, _attr, url in refs.urls:
        assert url.startswith("data:image/png;base64,"), url[:60]
        assert base64.b64decode(url.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "http://" not in text and "https://" not in text and "url(" not in text
    for line in fit.selection.recommendation:
        assert line in text
    assert "Nearest achievable SLA" in text
    assert "engine &lt;crashed&gt; &amp; exited" in text  # reasons are escaped, not injected
    for v in fit.selection.verdicts:
        assert v.candidate_id in text
    for w in fit.selection.warnings:
        assert w.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in text
    assert "Replicas for the request rate" in text and request.model in text
    for name in PLOT_NAMES:
        assert (tmp_path / "plots" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)


def test_cost_curve_follows_dynamo_formula(result):
    fit, _ = result
    sel = fit.selection
    label, x, y = cost_curves(fit)[0]
    p, d = sel.prefill_pareto[0], sorted(sel.decode_pareto, key=lambda q: q.latency_ms)[0]
    assert x[0] == pytest.approx(1000.0 / d.latency_ms)
    assert y[0] == pytest.approx(
        sel.isl * 1000 / p.thpt_per_gpu * 3 / 3600 + sel.osl * 1000 / d.thpt_per_gpu * 3 / 3600
    )
    assert f"{p.latency_ms:.1f}" in label


def test_report_without_results_still_renders():
    profiles = [make_profile("tp1", status="failed", reason="no GPUs")]
    request = make_request()
    fit = fit_profiles(request, make_plan_for(["tp1"]), profiles)
    assert render_plots(fit) == {}
    text = render_html(fit, request, {})
    assert "No recommendation" in text and "no GPUs" in text and "<img" not in text


def test_report_puts_the_two_serving_modes_side_by_side(tmp_path: Path):
    from steps.report import serving_modes
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
    png = serving_modes(fit)
    assert png is not None and png.startswith(PNG_MAGIC)
    # one mode only: the section says why the other is missing
    text = render_html(disagg_only, request, {})
    assert "Other mode: no aggregated candidate was profiled or produced results" in text
