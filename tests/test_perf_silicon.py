"""The calibrated model against measured deployments (AI Configurator's silicon_sample.csv).

Guards the accuracy bench/accuracy.py reports: a change to the physics or the constants that
makes held-out systems worse fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from slaprof.steps.perf.aic import aic_available
from slaprof.steps.perf.constants import load_calibration

pytestmark = pytest.mark.skipif(not aic_available(), reason="the measured rows ship with the 'aic' extra")


@pytest.fixture(scope="module")
def cases():
    from slaprof.steps.perf.silicon import load_cases

    return load_cases()


def errors(rows):
    from slaprof.steps.perf.silicon import predict_case

    pred = np.array([predict_case(c) for c in rows])
    meas = np.array([(c.ttft_ms, c.tpot_ms) for c in rows])
    return np.abs(pred / meas - 1.0)


def test_rows_are_read_with_their_mapping_and_precision(cases):
    from slaprof.steps.perf.silicon import skip_summary

    usable = [c for c in cases if not c.skip]
    assert len(cases) > 5000 and len(usable) > 2500
    dep = [c for c in usable if c.agg and c.agg.mapping.attn_dp > 1]
    assert dep and all(c.agg.batch == c.concurrency for c in dep)  # batch_size is per DP rank; load is total
    assert {c.precision for c in usable} == {"bf16", "fp8", "fp4"}
    assert {c.model.weight_dtype for c in usable if c.precision == "fp4"} == {"fp4"}
    reasons = skip_summary(cases)
    assert reasons["hybrid linear-attention model (not modelled)"] > 0
    assert all(reasons.values())


def test_held_out_systems_stay_accurate(cases):
    held = [c for c in cases if not c.skip and not c.calibration]
    assert {c.system for c in held} == {"b200_sxm", "gb200", "b300_sxm", "gb300"}
    err = errors(held)
    # median absolute error; bench/accuracy.py prints MAPE and the rest
    assert np.median(err[:, 1]) < 0.20, "TPOT on held-out systems"
    assert np.median(err[:, 0]) < 0.40, "TTFT on held-out systems"


def test_calibration_used_only_h100_and_h200(cases):
    cal = load_calibration()
    assert cal.systems == ["h100_sxm", "h200_sxm"]
    fitted = [c for c in cases if not c.skip and c.calibration]
    assert {c.system for c in fitted} == {"h100_sxm", "h200_sxm"}
    assert sum(e["rows"] for e in cal.fit_error.values()) == len(fitted)


def test_rows_whose_own_numbers_are_impossible_are_excluded_by_stated_rules(cases):
    from slaprof.steps.perf.silicon import implied_kv_memory_share, implied_prefill_utilisation

    usable = [c for c in cases if not c.skip]
    assert any(c.calibration for c in usable) and any(not c.calibration for c in usable)
    rules = {
        "measured load needs more than the GPUs' peak FLOP/s (inconsistent row)": implied_prefill_utilisation,
        "measured load needs more KV memory than the GPUs have (inconsistent row)": implied_kv_memory_share,
    }
    for why, share in rules.items():
        flagged = [c for c in cases if c.skip == why]
        assert 0 < len(flagged) < 10  # a handful of rows, not a way to drop hard ones
        assert all(share(c) > 1.0 for c in flagged)
        assert all(share(c) <= 1.0 for c in usable)  # the same rule on calibration and held-out rows


def test_a_measurement_listed_under_two_checkpoint_names_counts_once(cases):
    from slaprof.steps.perf.silicon import _identity

    usable = [c for c in cases if not c.skip]
    keys = [_identity(c) for c in usable]
    assert len(keys) == len(set(keys))
    kept = {_identity(c): c.model_path for c in usable}
    renamed = [c for c in cases if c.skip == "duplicate of another row" and kept[_identity(c)] != c.model_path]
    assert renamed and {"DeepSeek-V3", "DeepSeek-R1"} <= {c.model_path.split("/")[-1] for c in renamed} | {
        kept[_identity(c)].split("/")[-1] for c in renamed
    }


def test_quantised_rows_hold_an_fp8_kv_cache(cases):
    usable = [c for c in cases if not c.skip]
    assert {c.model.kv_dtype for c in usable if c.precision in ("fp8", "fp4")} == {"fp8"}
    assert {c.model.kv_dtype for c in usable if c.precision == "bf16"} == {"bf16"}


def test_held_out_ttft_mape_improved_and_tpot_kept(cases):
    held = [c for c in cases if not c.skip and not c.calibration]
    mape = errors(held).mean(axis=0)
    assert mape[0] < 0.45, f"TTFT MAPE on held-out systems {mape[0]:.1%}"
    assert mape[1] < 0.20, f"TPOT MAPE on held-out systems {mape[1]:.1%}"
