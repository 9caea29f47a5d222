"""Model ids without Hub access: the order of sources (local folder, HF cache, Hub asked once, built-in
catalog), what stderr says, HF_HUB_OFFLINE, `slaprof models`, and the README quick start offline."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

from slaprof.steps.cli.main import main
from slaprof.steps.core.errors import Unreachable, UserError
from slaprof.steps.specs.catalog import catalog_configs, catalog_info, catalog_models
from slaprof.steps.specs.models import load_model_info, load_model_info_from_dir, model_info_from_config
from tests.conftest import MODELS, ROOT

QUICK_START = ["--model", "Qwen/Qwen3-32B", "--gpu", "h200_sxm", "--isl", "3000", "--osl", "150"]
QUICK_START += ["--ttft", "200", "--itl", "20"]
# catalog id -> the fixture folder or AI Configurator config.json holding the same model's public config
FIXTURE_TWINS = {
    "Qwen/Qwen3-0.6B": "Qwen3-0.6B",
    "Qwen/Qwen3-32B": "Qwen3-32B",
    "Qwen/Qwen3-30B-A3B": "Qwen3-30B-A3B",
    "meta-llama/Llama-3.1-8B-Instruct": "Llama-3.1-8B",
    "meta-llama/Llama-3.1-70B-Instruct": "Llama-3.1-70B",
    "deepseek-ai/DeepSeek-V3": "DeepSeek-V3",
}
AIC_RENAMED = {
    "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Meta-Llama-3.1-8B",
    "meta-llama/Llama-3.1-70B-Instruct": "meta-llama/Meta-Llama-3.1-70B",
    "meta-llama/Llama-3.1-405B-Instruct": "meta-llama/Meta-Llama-3.1-405B",
    "meta-llama/Llama-3.3-70B-Instruct": "meta-llama/Meta-Llama-3.1-70B",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mistralai/Mixtral-8x7B-v0.1",
}
SHAPE_FIELDS = (
    "architecture num_layers hidden_size num_attention_heads num_kv_heads head_dim vocab_size intermediate_size "
    "max_context_length tie_word_embeddings q_lora_rank kv_lora_rank qk_rope_head_dim qk_nope_head_dim v_head_dim "
    "num_experts experts_per_token moe_intermediate_size num_shared_experts num_dense_layers weight_dtype kv_dtype"
).split()


def _shape(info) -> dict:
    return {f: getattr(info, f) for f in SHAPE_FIELDS}


# ---------------------------------------------------------------------------
# the catalog's content
# ---------------------------------------------------------------------------
def test_catalog_covers_the_widely_served_families():
    models = {m.name: m for m in catalog_models()}
    assert len(models) >= 25
    assert sum(m.is_moe for m in models.values()) >= 10 and sum(not m.is_moe for m in models.values()) >= 10
    for family in ("Qwen/Qwen3-", "meta-llama/Llama-3.", "deepseek-ai/DeepSeek-", "openai/gpt-oss-", "mistralai/Mi"):
        assert any(name.startswith(family) for name in models), family
    for family in ("zai-org/GLM-", "moonshotai/Kimi-K2"):
        assert any(name.startswith(family) for name in models), family
    assert {"fp8", "fp4", "bf16"} <= {m.weight_dtype for m in models.values()}
    assert any(m.kv_dtype == "fp8" for m in models.values())  # ModelOpt checkpoints declare an FP8 KV cache
    assert models["Qwen/Qwen3-30B-A3B"].is_moe and not models["Qwen/Qwen3-32B"].is_moe
    assert models["deepseek-ai/DeepSeek-R1"].is_mla and models["deepseek-ai/DeepSeek-R1"].weight_dtype == "fp8"
    assert models["openai/gpt-oss-120b"].weight_dtype == "fp4"  # declared MXFP4
    assert round(models["openai/gpt-oss-120b"].total_params / 1e9) == 117  # published: 117B


@pytest.mark.parametrize("model_id", sorted(FIXTURE_TWINS))
def test_catalog_matches_the_config_fixtures(model_id):
    fixture = load_model_info_from_dir(MODELS / FIXTURE_TWINS[model_id])
    assert _shape(catalog_info(model_id)) == _shape(fixture)


def _aic_config_dir() -> Path:
    spec = find_spec("aiconfigurator_core")
    assert spec is not None and spec.submodule_search_locations, "AI Configurator is a dev dependency"
    return Path(next(iter(spec.submodule_search_locations))) / "model_configs"


def test_catalog_matches_ai_configurators_config_files():
    """Every catalog model whose config.json AI Configurator ships has the same shapes and declared precision."""
    folder = _aic_config_dir()
    compared = 0
    for model_id in catalog_configs():
        stem = AIC_RENAMED.get(model_id, model_id).replace("/", "--")
        cfg_path = folder / f"{stem}_config.json"
        if not cfg_path.is_file():
            continue
        quant_path = folder / f"{stem}_hf_quant_config.json"
        quant = json.loads(quant_path.read_text()) if quant_path.is_file() else None
        expected = model_info_from_config(json.loads(cfg_path.read_text()), model_id, quant)
        assert _shape(catalog_info(model_id)) == _shape(expected), model_id
        compared += 1
    assert compared >= 20


def test_catalog_lookup_ignores_case_and_unknown_ids_are_none():
    assert catalog_info("qwen/QWEN3-32b").name == "Qwen/Qwen3-32B"
    assert catalog_info("nobody/not-a-model") is None


# ---------------------------------------------------------------------------
# the order of sources
# ---------------------------------------------------------------------------
class _Hub:
    """A stand-in for the Hugging Face Hub: serves `files` per repo, counts requests."""

    def __init__(self, files: dict[str, dict], status: int = 200) -> None:
        self.files, self.status = files, status
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.requests.append(self.path)
                body = hub.files.get(self.path)
                if hub.status != 200:
                    self.send_response(hub.status)
                    self.end_headers()
                    return
                if body is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub_env(monkeypatch, tmp_path) -> Iterator[None]:
    """An empty HF cache and no token, so only what a test sets up answers."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for var in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    yield


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more: connections are refused


def _small_config(layers: int) -> dict:
    cfg = json.loads((MODELS / "Qwen3-0.6B" / "config.json").read_text())
    return {**cfg, "num_hidden_layers": layers}


def test_a_cached_model_is_read_from_the_hf_cache_without_asking_the_hub(hub_env, monkeypatch, tmp_path, capsys):
    hub = _Hub({})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    snap = tmp_path / "hf-cache" / "models--Qwen--Qwen3-32B" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(_small_config(7)))
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc123")
    try:
        info = load_model_info("Qwen/Qwen3-32B")
    finally:
        hub.close()
    assert info.num_layers == 7 and info.source == f"hf-cache:{snap}" and info.name == "Qwen/Qwen3-32B"
    assert hub.requests == []
    assert "from the Hugging Face cache" in capsys.readouterr().err


def test_the_hub_answers_before_the_catalog(hub_env, monkeypatch, capsys):
    index = {"metadata": {"total_size": 12345}}
    hub = _Hub(
        {
            "/Qwen/Qwen3-32B/resolve/main/config.json": _small_config(5),
            "/Qwen/Qwen3-32B/resolve/main/model.safetensors.index.json": index,
        }
    )
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        info = load_model_info("Qwen/Qwen3-32B")
    finally:
        hub.close()
    assert info.num_layers == 5 and info.source == "hf://Qwen/Qwen3-32B" and info.checkpoint_bytes == 12345
    assert hub.requests.count("/Qwen/Qwen3-32B/resolve/main/config.json") == 1
    assert "config.json from the Hugging Face Hub" in capsys.readouterr().err


def test_a_failing_hub_is_asked_once_then_the_catalog_answers(hub_env, monkeypatch, capsys):
    hub = _Hub({}, status=503)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        info = load_model_info("Qwen/Qwen3-32B")
    finally:
        hub.close()
    assert info.source == "catalog" and info.num_layers == 64
    assert len(hub.requests) == 1  # no retries
    err = capsys.readouterr().err
    assert "from the built-in catalog" in err and "HTTP 503" in err


def test_hf_hub_offline_is_honoured(hub_env, monkeypatch, capsys):
    hub = _Hub({"/Qwen/Qwen3-32B/resolve/main/config.json": _small_config(5)})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        info = load_model_info("Qwen/Qwen3-32B")
    finally:
        hub.close()
    assert info.source == "catalog" and hub.requests == []
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


def test_an_unreachable_hub_falls_back_to_the_catalog(hub_env, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    assert load_model_info("deepseek-ai/DeepSeek-R1").source == "catalog"
    assert "unreachable" in capsys.readouterr().err


def test_an_unknown_id_without_hub_says_what_to_do(hub_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(UserError) as err:
        load_model_info("nobody/Qwen3-32B")
    text = str(err.value)
    assert "local folder" in text and "slaprof models" in text and "Qwen/Qwen3-32B" in text
    with pytest.raises(UserError, match="closest: Qwen/Qwen3-32B"):
        load_model_info("Qwen3-32B")  # no organisation


def test_a_silent_hub_is_unreachable_an_offline_one_is_not(hub_env, monkeypatch):
    """Argo retries a task whose error is Unreachable: a Hub that did not answer may answer later."""
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(Unreachable):
        load_model_info("nobody/Qwen3-32B")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        load_model_info("nobody/Qwen3-32B")
    assert not isinstance(err.value, Unreachable)


def test_a_local_folder_wins_over_everything(hub_env, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = load_model_info(str(MODELS / "Qwen3-32B"))
    assert info.source == str(MODELS / "Qwen3-32B")
    assert capsys.readouterr().err == ""  # the user named the folder: nothing to announce


# ---------------------------------------------------------------------------
# the commands
# ---------------------------------------------------------------------------
def test_models_command_lists_and_filters_the_catalog(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(catalog_configs()) + 1 and lines[0].split()[0] == "model"
    assert any(line.startswith("openai/gpt-oss-120b ") and "MoE 128x top-4" in line for line in lines)
    assert main(["models", "deepseek", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all("deepseek" in r["name"].lower() and r["mla"] for r in rows)
    assert main(["models", "no-such-family"]) == 2


@pytest.mark.parametrize("no_hub", ["offline", "unreachable"])
def test_readme_quick_start_runs_without_the_hub(tmp_path, no_hub):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_TOKEN": ""}
    if no_hub == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
        env["HF_ENDPOINT"] = closed_port_url()
    out = tmp_path / "runs" / "qwen32b"
    proc = subprocess.run(
        [sys.executable, "-m", "slaprof.steps.cli.main", "profile", *QUICK_START, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # the Dynamo-format lines of the recommended deployment, whichever serving mode wins
    assert lines[0].startswith(("Suggested prefill TP:", "Suggested aggregated TP:"))
    assert any(line.startswith("Suggested deployment: ") for line in lines)
    assert lines[-1] == f"Report: {out / 'report.html'}"
    assert "slaprof: model Qwen/Qwen3-32B: config.json from the built-in catalog" in proc.stderr
    assert (out / "dgd.yaml").is_file()
