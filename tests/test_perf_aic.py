"""AI Configurator adapter: real calls (few: each takes seconds), caching, and its errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from steps.candidates import Candidate
from steps.errors import UserError
from steps.gpus import get_gpu
from steps.models import load_model_info
from steps.perf import get_estimator
from steps.perf.aic import AicEstimator, _estimate, aic_available
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
        "from steps.cli import main\n"
        f"sys.exit(main(['estimate', '--model', {str(MODELS / 'Qwen3-0.6B')!r}, '--gpu', 'h100_sxm', "
        "'--backend', 'vllm', '--mapping', 'tp1', '--isl', '100', '--osl', '10', '--batch', '1', "
        "'--estimator', 'aic']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "needs AI Configurator, which is not installed" in proc.stderr
    assert "pip install 'slaprof[aic]'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
