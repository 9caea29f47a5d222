"""Planner data files: exactly Dynamo SLA planner's keys, shapes and units, and the planner's own
lookup (interp1d cubic over ISL; griddata cubic on a 100x100 grid, NaNs filled by nearest) gives
finite predictions from them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import griddata, interp1d

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.store import Layout, LocalStore, write_model
from slaprof.steps.dag.fit import run_step
from slaprof.steps.fitting.interpolate import DynamoDecodeInterpolator, DynamoPrefillInterpolator
from slaprof.steps.fitting.planner_data import DecodePlannerData, PrefillPlannerData
from tests.test_fit import make_plan_for, make_profile, make_request

IDS = ("tp1", "tp2")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    store = LocalStore(root)
    write_model(store, Layout.REQUEST, make_request())
    write_model(store, Layout.PLAN, make_plan_for(list(IDS)))
    for cid in IDS:
        write_model(store, Layout.profile(cid), make_profile(cid))
    run_step(store, report=False)
    return root


def _profile_of(run_dir: Path, phase: str):
    sel = json.loads((run_dir / Layout.SELECTION).read_text())
    return make_profile(sel[phase]["candidate"]["kind"] + str(sel[phase]["candidate"]["size"]))


def test_prefill_npz_keys_shapes_units(run_dir: Path):
    with np.load(run_dir / "prefill" / "raw_data.npz") as npz:
        assert sorted(npz.files) == ["prefill_isl", "prefill_thpt_per_gpu", "prefill_ttft"]
        isl, ttft, thpt = npz["prefill_isl"], npz["prefill_ttft"], npz["prefill_thpt_per_gpu"]
    prof = _profile_of(run_dir, "prefill")
    n = len(prof.prefill)
    assert isl.shape == ttft.shape == thpt.shape == (n,)
    assert np.all(np.diff(isl) > 0)
    np.testing.assert_allclose(ttft, [p.ttft_ms for p in prof.prefill])  # milliseconds, as measured
    np.testing.assert_allclose(thpt, [p.thpt_per_gpu for p in prof.prefill])  # tokens/s/GPU
    np.testing.assert_allclose(thpt, isl / (ttft / 1e3) / prof.candidate.num_gpus)


def test_decode_npz_keys_shapes_units(run_dir: Path):
    with np.load(run_dir / "decode" / "raw_data.npz") as npz:
        assert sorted(npz.files) == ["max_kv_tokens", "x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu"]
        x, y, z, t, kv = (
            npz[k] for k in ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens")
        )
    prof = _profile_of(run_dir, "decode")
    n = len(prof.decode)
    assert x.shape == y.shape == z.shape == t.shape == (n,)
    assert kv.shape == (1,) and np.issubdtype(kv.dtype, np.integer) and int(kv[0]) == prof.max_kv_tokens
    assert np.all((x > 0) & (x <= 1))
    conc = np.round(x * kv[0] / y)
    np.testing.assert_allclose(x, conc * y / kv[0], rtol=1e-9)  # kv_usage = concurrency * context / max_kv
    np.testing.assert_allclose(sorted(z), sorted(p.itl_ms for p in prof.decode))  # milliseconds
    np.testing.assert_allclose(t, conc / (z / 1e3) / prof.candidate.num_gpus, rtol=1e-9)


def test_json_has_the_same_content(run_dir: Path):
    pre = json.loads((run_dir / "prefill_raw_data.json").read_text())
    dec = json.loads((run_dir / "decode_raw_data.json").read_text())
    with np.load(run_dir / "prefill" / "raw_data.npz") as npz:
        for k in npz.files:
            np.testing.assert_allclose(pre[k], npz[k])
    with np.load(run_dir / "decode" / "raw_data.npz") as npz:
        for k in ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu"):
            np.testing.assert_allclose(dec[k], npz[k])
        assert dec["max_kv_tokens"] == int(npz["max_kv_tokens"][0])  # the planner's JSON loader does int(...)
    assert set(pre) == {"prefill_isl", "prefill_ttft", "prefill_thpt_per_gpu"}
    assert set(dec) == {"x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens"}


def test_dynamo_planner_lookup_gives_finite_predictions(run_dir: Path):
    """The planner's method written out with scipy, exactly as described, fed the files."""
    with np.load(run_dir / "prefill" / "raw_data.npz") as raw:
        isl, ttft, thpt = raw["prefill_isl"], raw["prefill_ttft"], raw["prefill_thpt_per_gpu"]
    ttft_of = interp1d(isl, ttft, kind="cubic")
    thpt_of = interp1d(isl, thpt, kind="cubic")
    for q in (50, 100, 3000, 12345, 10**6):
        clamped = max(isl.min(), min(q, isl.max()))
        assert np.isfinite(ttft_of(clamped)) and ttft_of(clamped) > 0 and np.isfinite(thpt_of(clamped))

    with np.load(run_dir / "decode" / "raw_data.npz") as raw:
        x, y, z, t, max_kv = (
            raw["x_kv_usage"],
            raw["y_context_length"],
            raw["z_itl"],
            raw["z_thpt_per_gpu"],
            raw["max_kv_tokens"][0],
        )
    xi, yi = np.linspace(0, 1, 100), np.linspace(0, y.max(), 100)
    grid = np.meshgrid(xi, yi)
    itl = griddata((x, y), z, tuple(grid), method="cubic")
    nan = np.isnan(itl)
    itl[nan] = griddata((x, y), z, tuple(grid), method="nearest")[nan]
    thpt = griddata((x, y), t, tuple(grid), method="cubic")
    nan = np.isnan(thpt)
    thpt[nan] = griddata((x, y), t, tuple(grid), method="nearest")[nan]
    assert np.isfinite(itl).all() and np.isfinite(thpt).all()
    # the planner's find_best_throughput_per_gpu at context isl + osl/2
    iy = int(np.clip(np.round(3250 / (yi[1] - yi[0])), 0, 99))
    hits = [ix for ix in range(99, -1, -1) if itl[iy, ix] <= 20.0]
    assert hits and 0 < xi[hits[0]] <= 1 and thpt[iy, hits[0]] > 0

    # our baseline implementation of the same lookup agrees and is finite everywhere
    base = DynamoDecodeInterpolator(DecodePlannerData.from_npz((run_dir / Layout.DECODE_NPZ).read_bytes()))
    np.testing.assert_allclose(base.itl_grid, itl)
    thpt_best, itl_best, kv_best = base.find_best_throughput_per_gpu(20.0, 3250)
    assert np.isfinite([thpt_best, itl_best, kv_best]).all() and itl_best <= 20.0
    pre = DynamoPrefillInterpolator(PrefillPlannerData.from_json((run_dir / Layout.PREFILL_JSON).read_text()))
    assert np.isfinite(pre.ttft_ms([100, 3000, 40000])).all()
    assert float(pre.ttft_ms(3000)) == pytest.approx(float(ttft_of(3000)))
    assert max_kv > 0


def test_round_trips_and_bad_files():
    prof = make_profile("tp2")
    pre, dec = PrefillPlannerData.from_profile(prof), DecodePlannerData.from_profile(prof)
    assert PrefillPlannerData.from_npz(pre.to_npz()) == pre == PrefillPlannerData.from_json(pre.to_json())
    assert DecodePlannerData.from_npz(dec.to_npz()) == dec == DecodePlannerData.from_json(dec.to_json())
    # a JSON written with a one-element max_kv_tokens list (as the npz has) is read too
    doc = json.loads(dec.to_json())
    doc["max_kv_tokens"] = [doc["max_kv_tokens"]]
    assert DecodePlannerData.from_json(json.dumps(doc)).max_kv_tokens == dec.max_kv_tokens
    buf = io.BytesIO()
    np.savez(buf, prefill_isl=np.arange(3.0))
    with pytest.raises(UserError, match="lacks prefill_ttft, prefill_thpt_per_gpu"):
        PrefillPlannerData.from_npz(buf.getvalue())
    with pytest.raises(UserError, match="not a valid .npz"):
        DecodePlannerData.from_npz(b"not a zip")
    with pytest.raises(UserError, match="lacks max_kv_tokens"):
        DecodePlannerData.from_json(
            json.dumps({k: [] for k in ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu")})
        )
