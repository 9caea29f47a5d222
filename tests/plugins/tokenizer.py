"""A tiny tokenizer directory built offline, usable by AIPerf (transformers AutoTokenizer) and simengine.

A byte-level BPE with a small vocabulary is trained with the `tokenizers` library on the
Shakespeare corpus AIPerf ships, then saved as `tokenizer.json` + `tokenizer_config.json`.
Nothing is downloaded. Use: `from tests.plugins.tokenizer import tiny_tokenizer  # noqa: F401`
and take the session fixture `tiny_tokenizer` (a Path), or call `build_tiny_tokenizer(dir)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

VOCAB_SIZE = 2000


def _corpus() -> Path:
    import aiperf

    path = Path(aiperf.__file__).parent / "dataset" / "generator" / "assets" / "shakespeare.txt"
    assert path.is_file(), f"AIPerf's corpus is missing at {path}"
    return path


def build_tiny_tokenizer(directory: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train and save the tokenizer into `directory` (created); returns the directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "tokenizer.json").is_file():
        return directory
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(_corpus())], trainer)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1_000_000,
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "unk_token": None,
        "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (directory / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return directory


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny offline tokenizer (built once per test session)."""
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))
