"""AI Configurator adapter: real calls (few: each takes seconds), caching, and its errors."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import numpy as np
import pytest

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.perf import get_estimator
from slaprof.steps.perf.aic import AicEstimator, _estimate, aic_available
from slaprof.steps.specs.gpus import get_gpu
from slaprof.steps.specs.models import load_model_info
from tests.conftest import MODELS, ROOT

pytestmark = pytest.mark.skipif(not aic_available(), reason="the 'aic' extra (aiconfigurator) is not installed")


def test_aic_agg_estimate_is_cached_and_close_to_the_builtin_model():
    model = load_model_info(str(MODELS / "Qwen3-32B"))
    gpu, cand = get_gpu("h200_sxm"), Candidate.parse("tp4")
    aic = get_estimator(model, gpu, "vllm", cand, "aic", hf_id="Qwen/Qwen3-32B")
    assert isinstance(aic, AicEstimator)
    first = aic.agg(3000, 150, 16)
    calls = _estimate.cache_info()
    again = aic.agg(3000, 150, 16)
    after = _estimate.cache_info()
    assert again == first and after.misses == calls.misses and after.hits > calls.hits  # cached within the process
    assert 50 < first.ttft_ms < 2000 and 3 < first.itl_ms < 100 and first.thpt_per_gpu > 0
    builtin = get_estimator(model, gpu, "vllm", cand).agg(3000, 150, 16)
    # two independent models of the same deployment agree within a factor of two
    assert 0.5 < builtin.itl_ms / first.itl_ms < 2 and 0.5 < builtin.ttft_ms / first.ttft_ms < 2
    assert aic.max_kv_tokens() == get_estimator(model, gpu, "vllm", cand).max_kv_tokens()


def test_aic_rejects_an_uncovered_system_with_an_actionable_error():
    model = load_model_info(str(MODELS / "Qwen3-32B"))
    est = AicEstimator(
        model, get_gpu("h200_sxm"), "vllm", Candidate.parse("tp2"), system="tpu_v5", hf_id="Qwen/Qwen3-32B"
    )
    with pytest.raises(
        UserError, match=r"AI Configurator cannot estimate Qwen/Qwen3-32B on tpu_v5 .*--estimator builtin"
    ):
        est.decode_itl_ms(8, 1000)


def test_missing_aiconfigurator_is_a_clear_user_error():
    code = (
        "import sys; sys.modules['aiconfigurator'] = None\n"  # as if the extra were not installed
        "from slaprof.steps.cli.main import main\n"
        f"sys.exit(main(['estimate', '--model', {str(MODELS / 'Qwen3-0.6B')!r}, '--gpu', 'h100_sxm', "
        "'--backend', 'vllm', '--mapping', 'tp1', '--isl', '100', '--osl', '10', '--batch', '1', "
        "'--estimator', 'aic']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "needs AI Configurator, which is not installed" in proc.stderr
    assert "pip install 'slaprof[aic]'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_whole_sweep_from_one_session_equals_ai_configurators_own_single_estimates():
    from aiconfigurator.cli.api import cli_estimate

    from slaprof.steps.perf.aic import _database_version, _session

    model = load_model_info(str(MODELS / "Qwen3-30B-A3B"))  # MoE with expert parallelism: the longest set-up path
    aic = AicEstimator(model, get_gpu("h200_sxm"), "sglang", Candidate.parse("tep2"), hf_id="Qwen/Qwen3-30B-A3B")
    isls, batches = np.array([300, 2000, 2000]), np.array([1, 1, 6])
    sessions = _session.cache_info().misses
    prefill = aic.prefill_ttft_ms(isls, batches)
    decode = aic.decode_itl_ms(batches, isls)
    agg = aic.agg_sweep(2000, 100, [1, 12])
    assert _session.cache_info().misses - sessions <= 3  # one session per mode, whatever the number of points
    assert prefill.shape == decode.shape == (3,) and len(agg) == 2
    assert [aic.prefill_ttft_ms(int(i), int(b)) for i, b in zip(isls, batches)] == list(prefill)
    assert [aic.decode_itl_ms(int(b), int(i)) for i, b in zip(isls, batches)] == list(decode)
    assert [aic.agg(2000, 100, c) for c in (1, 12)] == agg
    assert prefill[2] > prefill[1] > prefill[0] > 0 and decode[2] > decode[0] > 0

    t = aic.target
    kwargs = dict(
        backend_name="sglang",
        backend_version=_database_version(t.system, t.backend, t.version),
        tp_size=t.mapping.attn_tp,
        attention_dp_size=t.mapping.attn_dp,
        moe_tp_size=t.mapping.moe_tp,
        moe_ep_size=t.mapping.moe_ep,
        gemm_quant_mode=t.gemm,
        moe_quant_mode=t.gemm,
        kvcache_quant_mode=t.kv,
    )
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        own_prefill = cli_estimate(t.model_path, t.system, mode="static_ctx", isl=2000, osl=2, batch_size=6, **kwargs)
        own_decode = cli_estimate(t.model_path, t.system, mode="static_gen", isl=300, osl=2, batch_size=1, **kwargs)
        own_agg = cli_estimate(t.model_path, t.system, mode="agg", isl=2000, osl=100, batch_size=12, **kwargs)
    assert prefill[2] == own_prefill.ttft and decode[0] == own_decode.tpot
    assert (agg[1].ttft_ms, agg[1].itl_ms) == (own_agg.ttft, own_agg.tpot)
