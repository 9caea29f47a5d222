"""DAG step `bench`: measure one candidate's prefill and decode surfaces with one engine start.

Input: request.json and plan.json from the run's store, and a candidate id.
Output: profiles/<id>.json (a `CandidateProfile`), plus the engine log (and torch-profiler
traces with `torch_profile`) under logs/ and traces/.

Methods:
  online    the request's backend (vLLM, SGLang, TRT-LLM) started on this machine's GPUs;
  simulate  the same path against `slaprof.steps.measure.simengine` (the `simulated` backend) on CPUs;
  offline   no engine: `slaprof.steps.perf.surfaces.offline_profile` estimates the same surfaces.

Online and simulate measure with AIPerf (`slaprof.steps.measure.loadgen`):
  prefill  one AIPerf run over an explicit trace: `prefill_repeats` fresh prompts per ISL of
           the plan's grid, one at a time (DEP: as many at once as attention-DP ranks), each
           prompt new to the engine so its prefix cache is not hit. TTFT per ISL, and
           throughput/GPU = ISL x ranks / TTFT / GPUs.
  decode   for each context in the grid, a concurrency sweep up to the KV capacity the engine
           reports: the bench first sends the same prompts itself with max_tokens=1 (warming
           the prefix cache, so the measured requests skip their prefill), then AIPerf runs
           them at that concurrency. ITL over the steps where the whole batch decodes
           (`loadgen.steady_itl_ms`: requests entering one by one make the first steps longer),
           throughput/GPU = concurrency / ITL / GPUs, and kv_usage =
           concurrency x (isl + osl/2) / max_kv_tokens.
  prefill  under load: one AIPerf run per load of `prefill_load_per_rank` prompts in flight per
           rank at the SLA's ISL (fresh prompts, AGG_ROUNDS per slot); TTFT after the first wave,
           throughput/GPU = load x ISL / TTFT / GPUs (closed loop).
Tokenizer: the prompts are cut to exact token counts with the tokenizer AIPerf uses (`--tokenizer`,
SLAPROF_TOKENIZER, else the model's own); one that cannot count tokens is a UserError up front.
AIPerf runs are started gated and ahead of time (during engine start-up, or while the
previous run measures), so their ~10 s start-up does not idle the engine.
Simulate sends all of a candidate's points (prefill, prefill under load and decode; an aggregated
candidate's concurrencies) in one AIPerf run instead (`slaprof.steps.measure.simsession`), each point at a time scale
of its own, and checks its prefill and decode points against the model driving the engine
(`slaprof.steps.measure.simcheck`).

Aggregated candidates (`agg-tp4`) start the engine as it would serve (its own chunked-prefill
budget) and measure one AIPerf run per concurrency at the SLA's ISL/OSL (`plan.agg_concurrencies`,
fresh prompts, AGG_ROUNDS requests per slot): TTFT and ITL averaged after the first wave, and
output tokens/s/GPU = concurrency x OSL / (TTFT + (OSL - 1) x ITL) / GPUs (Little's law).

Failures: engine out of memory at start-up -> infeasible; engine not ready or crash mid-sweep ->
failed, with the points measured so far. A point whose requests fail (an overloaded engine, a
failed AIPerf run) is recorded in `failed_points` and the sweep goes on; a phase with no point
at all fails the candidate. Whatever happens, the engine and every AIPerf process are stopped.

Resuming: `checkpoint` receives the profile after every point (`run_step` keeps it as
partial/<id>.json), and `resume` takes such a profile back: its points are not measured again.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.results import (
    AggPoint,
    CandidateProfile,
    DecodePoint,
    FailedPoint,
    PointCheck,
    PointPhase,
    PrefillLoadPoint,
    PrefillPoint,
    ProfileStatus,
    Provenance,
    utc_now,
)

# The engine, load-generator and asyncio modules are imported on the online/simulate path only:
# an offline run (the default of `slaprof profile`) never needs them.
if TYPE_CHECKING:
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.store import ArtifactStore
    from slaprof.steps.dag.plan import Plan
    from slaprof.steps.engines import EngineBackend, ServerOptions
    from slaprof.steps.engines.process import EngineProcess
    from slaprof.steps.measure.loadgen import LoadResult, LoadRun, LoadSpec, RequestRecord, TraceEntry
    from slaprof.steps.measure.simsession import SessionPlan

log = logging.getLogger(__name__)
ProgressFn = Callable[[str, int, int], None]
CheckpointFn = Callable[[CandidateProfile], None]
SESSION_POLL_S = 0.1  # how often a one-session sweep's new records are read
AIPERF_BOOT_S = 10.0
# requests/s under the concurrency cap: all of a point's requests leave within milliseconds, and
# AIPerf's timing loop sleeps instead of spinning (see LoadSpec.request_rate)
REQUEST_RATE = 1000.0
AGG_ROUNDS = 3  # requests per concurrency slot of an aggregated point: the first wave, then steady state


class BenchOptions(BaseModel):
    """How to measure (not what: that is the request and the plan)."""

    tokenizer: str | None = Field(None, description="tokenizer for AIPerf and prompts; default: the model")
    time_scale: float | None = Field(
        None, gt=0, description="simulate: wall ms per modelled ms (results are rescaled); None: chosen per point"
    )
    one_session: bool | None = Field(None, description="the whole sweep in one AIPerf run (default: simulate only)")
    sim_streams: int | None = Field(None, ge=1, description="simulate: HTTP streams per decode point (one session)")
    startup_s: float = Field(0.0, ge=0, description="simulate: simulated engine start-up time")
    sim_max_kv_tokens: int | None = Field(None, description="simulate: override the engine's KV capacity")
    prefill_repeats: int = Field(2, ge=1, description="requests per prefill ISL")
    prefill_osl: int = Field(2, ge=1, description="output tokens of a prefill request")
    decode_osl: int | None = Field(None, ge=2, description="output tokens of a decode request (default: plan)")
    max_prefill_points: int | None = Field(None, ge=1, description="thin the plan's prefill ISLs to at most this many")
    max_decode_isls: int | None = Field(None, ge=1, description="thin the plan's decode contexts to at most this many")
    max_concurrency_points: int | None = Field(None, ge=1, description="concurrencies per context (default: plan)")
    prefill_load_per_rank: tuple[int, ...] = Field(
        (4, 16), description="prompts in flight per attention-DP rank of the prefill-under-load runs (SLA ISL)"
    )
    pipeline: bool = Field(True, description="start the next AIPerf runs while the current one measures")
    pipeline_depth: int = Field(2, ge=1, description="AIPerf runs booting ahead of the one measuring")
    torch_profile: bool = Field(False, description="capture a torch-profiler trace after the sweeps")
    ready_timeout_s: float = 1800.0
    run_timeout_s: float = 3600.0
    port: int | None = None
    memory_utilization: float | None = None
    random_seed: int = 0
    keep_workdir: bool = False
    resume: bool = Field(True, description="run_step: keep the points of an unfinished earlier measurement")

    @classmethod
    def from_env(cls, **overrides: Any) -> BenchOptions:
        """Defaults, then SLAPROF_TOKENIZER / SLAPROF_SIM_TIME_SCALE / SLAPROF_SIM_STARTUP_S, then overrides
        (None: not given; a time scale may be given as text, `auto` included)."""
        env: dict[str, Any] = {}
        if os.environ.get("SLAPROF_TOKENIZER"):
            env["tokenizer"] = os.environ["SLAPROF_TOKENIZER"]
        if os.environ.get("SLAPROF_SIM_TIME_SCALE"):
            env["time_scale"] = parse_time_scale(os.environ["SLAPROF_SIM_TIME_SCALE"], "SLAPROF_SIM_TIME_SCALE")
        if os.environ.get("SLAPROF_SIM_STARTUP_S"):
            env["startup_s"] = float(os.environ["SLAPROF_SIM_STARTUP_S"])
        given = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(given.get("time_scale"), str):
            given["time_scale"] = parse_time_scale(given["time_scale"])  # auto (None) wins over the environment
        return cls(**{**env, **given})


def parse_time_scale(text: str | None, where: str = "--time-scale") -> float | None:
    """`auto` (or nothing) -> None, else a positive number of wall ms per modelled ms."""
    if text is None or text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise UserError(f"{where} {text!r}: give a positive number of wall ms per modelled ms, or auto")
    return value


class SweepFailed(Exception):
    """The candidate's sweep cannot go on: its profile is recorded as failed."""

    infeasible = False


class KvCacheTooSmall(SweepFailed):
    """The engine's KV cache holds no request of the grid: the candidate cannot serve this workload."""

    infeasible = True


class PointFailed(SweepFailed):
    """One point could not be measured, the engine is alive: record it and go on."""


# ---------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------
_WORDS = (
    "time world life hand part child eye woman place work week case point number group problem fact "
    "house river city light voice night story music paper water money table garden window morning "
    "answer reason letter market ocean mountain forest winter summer bridge station engine signal "
    "silver golden quiet bright early simple gentle ancient modern hidden open careful honest"
).split()


# files a Hugging Face tokenizer folder holds (any one of them makes a loadable tokenizer)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "spiece.model")
# a prompt grows by doubling its words; more rounds than this means the tokenizer cannot count tokens
MAX_PROMPT_ROUNDS = 12
COMPOSE_CHECKS = 8  # prompts put together word by word whose length is checked before the method is trusted


def _no_tokenizer(tokenizer: str, why: str) -> UserError:
    return UserError(
        f"cannot count tokens with tokenizer {tokenizer!r}: {why}. Online and simulated measurements need "
        f"the model's tokenizer: pass --tokenizer DIR (or set SLAPROF_TOKENIZER=DIR) to a folder with "
        f"tokenizer.json, or use a model folder that includes its tokenizer files"
    )


def load_tokenizer(tokenizer: str) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    """(encode without special tokens, decode) for a local folder or a Hugging Face id.

    A folder with tokenizer.json is read with `tokenizers` alone (fast, and no transformers import);
    anything else goes through transformers' AutoTokenizer. Raises UserError when the result cannot
    count tokens: transformers quietly builds an empty tokenizer from a folder that has only a
    config.json, and prompts of N tokens could then never be made."""
    check_tokenizer_path(tokenizer)
    folder = Path(tokenizer).expanduser()
    if folder.is_dir():
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            try:
                tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as exc:
                raise _no_tokenizer(tokenizer, f"tokenizer.json does not load ({exc})") from None
            encode = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
            decode = lambda ids: tok.decode(ids)  # noqa: E731
            return _checked(tokenizer, encode, decode)
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise _no_tokenizer(tokenizer, f"the folder has none of {', '.join(TOKENIZER_FILES)}")
    # transformers prints an advisory line about PyTorch on import; slaprof only needs its tokenizers
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer

    try:
        auto = AutoTokenizer.from_pretrained(tokenizer)
    except Exception as exc:
        raise _no_tokenizer(
            tokenizer, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    return _checked(
        tokenizer, lambda text: list(auto.encode(text, add_special_tokens=False)), lambda ids: str(auto.decode(ids))
    )


def check_tokenizer(request: ProfileRequest, options: BenchOptions) -> None:
    """Online and simulate: UserError, before anything starts, when the tokenizer (the option,
    SLAPROF_TOKENIZER, else the model's) is missing or cannot count tokens."""
    if request.method != "offline":
        load_tokenizer(options.tokenizer or request.model)


def check_tokenizer_path(tokenizer: str) -> None:
    """UserError when `tokenizer` names a local path (not a Hugging Face id such as 'org/name') that is
    not a folder: said at once, without asking the Hub."""
    folder = Path(tokenizer).expanduser()
    is_path = tokenizer.startswith(("/", ".", "~")) or tokenizer.count("/") > 1 or tokenizer.endswith("/")
    if (is_path or folder.exists()) and not folder.is_dir():
        raise UserError(
            f"tokenizer {tokenizer!r}: {'not a folder' if folder.exists() else 'no such folder'}; pass --tokenizer "
            "(or SLAPROF_TOKENIZER) a folder with tokenizer.json, or a Hugging Face id"
        )


def _checked(
    tokenizer: str, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str]
) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    probe = " ".join(_WORDS[:32])
    try:
        count = len(encode(probe))
    except Exception as exc:
        raise _no_tokenizer(tokenizer, f"it cannot encode plain text ({exc})") from None
    if count < 8:  # 32 common words are at least 8 tokens in any real vocabulary
        raise _no_tokenizer(tokenizer, f"it turns {len(probe.split())} common words into {count} tokens")
    return encode, decode


class PromptBuilder:
    """Prompts of an exact token length that start with a unique tag (so no two share a cached prefix)."""

    def __init__(self, tokenizer: str, seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self.encode, self.decode = load_tokenizer(tokenizer)
        self.rng = random.Random(seed)
        # tokens of each " word": with a tokenizer that splits text at spaces first (byte-level BPE,
        # SentencePiece) a prompt of N tokens is put together word by word instead of by cutting
        # the encoding of a longer text, at a third of the cost (a simulated sweep makes millions)
        self._costs = {w: len(self.encode(" " + w)) for w in _WORDS}
        self._one_token = [w for w, n in self._costs.items() if n == 1]
        self._composed_ok = 0  # compositions checked so far; after COMPOSE_CHECKS exact ones, trusted

    def make(self, isl: int, tag: str) -> str:
        """`isl` tokens; `tag` must be unique and comes first, so the first cache block differs."""
        text = self._compose(isl, tag) if self._one_token and self._composed_ok >= 0 else None
        return text if text is not None else self._cut(isl, tag)

    def _compose(self, isl: int, tag: str) -> str | None:
        head = f"{tag}:"
        need = isl - len(self.encode(head))
        if need < 1:
            return None
        words, total = [], 0
        while total < need:
            word = self.rng.choice(_WORDS)
            if total + self._costs[word] > need:
                word = self.rng.choice(self._one_token)
            words.append(word)
            total += self._costs[word]
        text = head + " " + " ".join(words)
        if self._composed_ok < COMPOSE_CHECKS:
            if len(self.encode(text)) != isl:
                self._composed_ok = -1  # words do not add up with this tokenizer: cut encodings from now on
                return None
            self._composed_ok += 1
        return text

    def _cut(self, isl: int, tag: str) -> str:
        words: list[str] = []
        for _ in range(MAX_PROMPT_ROUNDS):  # bounded: each round at least doubles the text
            words.extend(self.rng.choice(_WORDS) for _ in range(max(16, isl, len(words))))
            ids = self.encode(f"{tag}: " + " ".join(words))
            if len(ids) >= isl:
                return self.decode(ids[:isl])
        raise _no_tokenizer(self.tokenizer, f"{len(words)} words made only {len(ids)} of the {isl} tokens asked")


# ---------------------------------------------------------------------------
# warm-up and profiling traffic sent by the bench itself (not measured)
# ---------------------------------------------------------------------------
async def _post_all(url: str, bodies: list[dict[str, Any]], timeout_s: float, limit: int) -> list[str]:
    import asyncio

    import aiohttp

    errors: list[str] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(body: dict[str, Any]) -> None:
            try:
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors.append(f"HTTP {resp.status}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(b) for b in bodies))
    return errors


def send_requests(url: str, model: str, prompts: list[str], max_tokens: int = 1, timeout_s: float = 600.0) -> list[str]:
    """Send every prompt at once and wait for all; returns the errors."""
    import asyncio

    bodies = [
        {"model": model, "messages": [{"role": "user", "content": p}], "max_tokens": max_tokens, "stream": False}
        for p in prompts
    ]
    return asyncio.run(_post_all(url + "/v1/chat/completions", bodies, timeout_s, limit=256))


def tokenize_ahead(url: str, prompts: list[str], timeout_s: float = 600.0) -> list[str]:
    """Have a simulated engine tokenize (and cache) prompts before they are sent; returns the errors."""
    import asyncio

    bodies = [{"messages": [{"role": "user", "content": p}]} for p in prompts]
    return asyncio.run(_post_all(url + "/tokenize", bodies, timeout_s, limit=4))


# ---------------------------------------------------------------------------
# one candidate
# ---------------------------------------------------------------------------
class _Job:
    """One AIPerf run to do; its prompts (and so its spec) are made only when it is about to start."""

    def __init__(
        self,
        label: str,
        kind: PointPhase,
        isl: int,
        concurrency: int,
        osl: int,
        warm: bool,
        make_prompts: Callable[[], list[str]],
        spec_for: Callable[[str, list[TraceEntry], int], LoadSpec],
        isls: list[int] | None = None,
    ):
        self.label, self.kind, self.isl, self.concurrency, self.osl, self.warm = (
            label,
            kind,
            isl,
            concurrency,
            osl,
            warm,
        )
        self._make_prompts, self._spec_for = make_prompts, spec_for
        self.isls = isls or []  # a prefill run's ISLs
        self._prompts: list[str] | None = None

    @property
    def prompts(self) -> list[str]:
        if self._prompts is None:
            self._prompts = self._make_prompts()
        return self._prompts

    def spec(self) -> LoadSpec:
        from slaprof.steps.measure.loadgen import TraceEntry

        trace = [TraceEntry(text_input=t, output_length=self.osl) for t in self.prompts]
        return self._spec_for(self.label, trace, self.concurrency)


def _thin(values: list[int], most: int | None, keep: int | None = None) -> list[int]:
    """At most `most` values spread over the list (ends kept, and `keep` when present)."""
    if not most or len(values) <= most:
        return list(values)
    if most == 1:
        return [keep if keep in values else values[len(values) // 2]]
    idx = {round(i * (len(values) - 1) / (most - 1)) for i in range(most)}
    out = sorted(values[i] for i in idx)
    if keep in values and keep not in out:
        inner = list(range(1, len(out) - 1)) or list(range(len(out)))  # keep the ends when possible
        out[min(inner, key=lambda i: abs(out[i] - keep))] = keep
    return sorted(set(out))


def backend_for(request: ProfileRequest, options: BenchOptions, model_path: str | None = None) -> EngineBackend:
    from slaprof.steps.engines import get_backend

    if request.method == "simulate":
        # the built-in model times every engine step; AI Configurator is far too slow for that
        return get_backend(
            "simulated",
            emulate=request.backend,
            gpu=request.hardware.gpu,
            tokenizer=options.tokenizer,
            time_scale=options.time_scale,
            startup_s=options.startup_s,
            estimator="builtin",
            max_kv_tokens=options.sim_max_kv_tokens,
            model_path=model_path,
        )
    return get_backend(request.backend)


class CandidateBench:
    """Everything one candidate's measurement holds: engine, AIPerf runs, points so far, timings."""

    def __init__(
        self,
        request: ProfileRequest,
        plan: Plan,
        candidate: Candidate,
        workdir: Path,
        options: BenchOptions,
        on_progress: ProgressFn | None,
        resume: CandidateProfile | None = None,
        checkpoint: CheckpointFn | None = None,
    ) -> None:
        self.request, self.plan, self.cand = request, plan, candidate
        self.workdir = Path(workdir)
        self.opts = options
        self.on_progress = on_progress
        self.checkpoint = checkpoint
        self.engine: EngineProcess | None = None
        self.runs: list[LoadRun] = []
        self.prefill: list[PrefillPoint] = []
        self.decode: list[DecodePoint] = []
        self.agg: list[AggPoint] = []
        self.prefill_load: list[PrefillLoadPoint] = []
        self.failed_points: list[FailedPoint] = []
        self.checks: list[PointCheck] = []
        self.max_kv = 0
        self.measuring_s = 0.0
        self.warming_s = 0.0
        self.aiperf_version: str | None = None
        self.engine_version: str | None = None
        self.nonce = uuid.uuid4().hex[:8]
        self.simulate = request.method == "simulate"
        self.osl = options.decode_osl or plan.grid.decode_osl
        # the model timing the simulated engine: it picks the time scale and checks every point
        self.sim_model = _driving_model(request, plan, candidate) if self.simulate else None
        self.scale = (options.time_scale or self._auto_engine_scale()) if self.simulate else 1.0
        self.one_session = self.simulate if options.one_session is None else options.one_session
        self.backend = backend_for(request, options.model_copy(update={"time_scale": self.scale}))
        self.tokenizer = options.tokenizer or request.model
        self._prompt_cache: dict[int, list[str]] = {}
        self.total_decode = 0
        self.notes: dict[str, str] = {}  # recorded in the profile's artifacts
        self.started_at = utc_now()
        self._session: tuple[SessionPlan, LoadRun] | None = None
        self.latency_floor_ms = 0.0  # one-session TTFTs: the wall latency a zero-time request measures
        self._resumed = resume if resume is not None and resume.candidate == candidate else None
        if self._resumed is not None:
            self.prefill = [p for p in self._resumed.prefill if p.isl in self.prefill_isls()]
            self.checks = [c for c in self._resumed.checks if c.phase == "prefill" and self._has_prefill(c.isl)]

    # ---- plan of AIPerf runs ----------------------------------------------
    def _spec(self, label: str, trace: list[TraceEntry], concurrency: int, **extra: Any) -> LoadSpec:
        from slaprof.steps.measure.loadgen import LoadSpec

        assert self.engine is not None
        return LoadSpec(
            label=label,
            url=self.engine.url,
            model=self.request.model,
            tokenizer=self.tokenizer,
            concurrency=concurrency,
            request_count=len(trace),
            trace=trace,
            request_rate=REQUEST_RATE,
            random_seed=self.opts.random_seed,
            request_timeout_s=self.opts.run_timeout_s,
            **extra,
        )

    def prefill_isls(self) -> list[int]:
        limit = self.plan.grid.max_context - self.opts.prefill_osl
        isls = [i for i in self.plan.grid.prefill_isls if i <= limit]
        return _thin(isls, self.opts.max_prefill_points, keep=self.request.sla.isl)

    def prefill_todo(self) -> list[int]:
        """The prefill ISLs not measured yet (all of them unless resuming)."""
        return [isl for isl in self.prefill_isls() if not self._has_prefill(isl)]

    def _has_prefill(self, isl: int) -> bool:
        return any(p.isl == isl for p in self.prefill)

    def decode_isls(self) -> list[int]:
        return _thin(self.plan.grid.decode_isls, self.opts.max_decode_isls, keep=self.request.sla.isl)

    def decode_grid(self, max_kv: int) -> list[tuple[int, int]]:
        """(isl, concurrency) of every decode point for a KV capacity of `max_kv` tokens."""
        from slaprof.steps.dag.plan import decode_concurrencies

        granularity = self.opts.max_concurrency_points or self.plan.grid.decode_granularity
        return [
            (isl, c)
            for isl in self.decode_isls()
            for c in decode_concurrencies(max_kv, isl, self.osl, granularity, self.cand.attn_dp)
        ]

    def _set_capacity(self, max_kv: int) -> list[tuple[int, int]]:
        """Take the engine's KV capacity; returns the decode points still to measure. Resumed decode
        points count only when measured at the same capacity (it decides the concurrencies)."""
        self.max_kv = max_kv
        grid = self.decode_grid(max_kv)
        self.total_decode = len(grid)
        if self._resumed is not None:
            same = self._resumed.max_kv_tokens == max_kv
            self.decode = [p for p in self._resumed.decode if same and (p.isl, p.concurrency) in grid]
            kept = {(p.isl, p.concurrency) for p in self.decode}
            self.checks = [c for c in self.checks if c.phase == "prefill"] + [
                c for c in self._resumed.checks if c.phase == "decode" and (c.isl, c.concurrency) in kept
            ]
            # the load points are at the SLA's ISL/OSL; the capacity decides which concurrencies fit
            sla = (self.request.sla.isl, self.request.sla.osl)
            self.agg = [p for p in self._resumed.agg if same and (p.isl, p.osl) == sla]
            self.prefill_load = [p for p in self._resumed.prefill_load if same and p.isl == sla[0]]
        done = {(p.isl, p.concurrency) for p in self.decode}
        return [point for point in grid if point not in done]

    def prefill_job(self, prompts: PromptBuilder) -> _Job:
        per_isl = self.opts.prefill_repeats * self.cand.attn_dp
        isls = self.prefill_todo()

        def make() -> list[str]:
            return [prompts.make(isl, f"{j} {isl} {self.nonce} prefill") for isl in isls for j in range(per_isl)]

        return _Job("prefill", "prefill", 0, self.cand.attn_dp, self.opts.prefill_osl, False, make, self._spec, isls)

    def decode_jobs(self, prompts: PromptBuilder, points: list[tuple[int, int]]) -> list[_Job]:
        def make(isl: int, c: int) -> Callable[[], list[str]]:
            return lambda: self._decode_prompts(prompts, isl, c)

        return [
            _Job(
                f"decode-isl{isl}-c{c}",
                "decode",
                isl,
                c,
                self.osl,
                True,
                make(isl, c),
                self._spec,
            )
            for isl, c in points
        ]

    def agg_todo(self) -> list[int]:
        """The concurrencies of an aggregated candidate not measured yet, at the current KV capacity."""
        from slaprof.steps.dag.plan import agg_concurrencies

        isl, osl = self.request.sla.isl, self.request.sla.osl
        points = self.opts.max_concurrency_points or self.plan.grid.decode_granularity
        done = {p.concurrency for p in self.agg}
        return [c for c in agg_concurrencies(self.max_kv, isl, osl, points, self.cand.attn_dp) if c not in done]

    def prefill_load_todo(self) -> list[int]:
        """The loads (prompts in flight) of the prefill-under-load points not measured yet."""
        isl, dp = self.request.sla.isl, self.cand.attn_dp
        done = {p.concurrency for p in self.prefill_load}
        loads = []
        for per_rank in self.opts.prefill_load_per_rank:
            if per_rank * dp * isl > self.max_kv:
                break
            loads.append(per_rank * dp)
        return [b for b in loads if b not in done]

    def agg_jobs(self, prompts: PromptBuilder) -> list[_Job]:
        """An aggregated engine: one AIPerf run per concurrency at the SLA's ISL/OSL, fresh prompts,
        AGG_ROUNDS requests per concurrency slot (closed loop: the first wave arrives together)."""
        isl, osl = self.request.sla.isl, self.request.sla.osl
        jobs = []
        for c in self.agg_todo():

            def make(c: int = c) -> list[str]:
                return [prompts.make(isl, f"{j} {isl} {self.nonce} agg{c}") for j in range(AGG_ROUNDS * c)]

            jobs.append(_Job(f"agg-c{c}", "agg", isl, c, osl, False, make, self._spec))
        return jobs

    def prefill_load_jobs(self, prompts: PromptBuilder) -> list[_Job]:
        """The prefill engine kept busy: one AIPerf run per load (prompts in flight) at the SLA's ISL,
        fresh prompts, AGG_ROUNDS per slot, as many as the KV cache holds at once."""
        isl = self.request.sla.isl
        jobs = []
        for b in self.prefill_load_todo():

            def make(b: int = b) -> list[str]:
                return [prompts.make(isl, f"{j} {isl} {self.nonce} load{b}") for j in range(AGG_ROUNDS * b)]

            jobs.append(
                _Job(f"prefill-load-c{b}", "prefill_load", isl, b, self.opts.prefill_osl, False, make, self._spec)
            )
        return jobs

    def jobs(self, prompts: PromptBuilder, decode_todo: list[tuple[int, int]]) -> list[_Job]:
        """The AIPerf runs of this candidate still to do at the current KV capacity, in order
        (`decode_todo`: from `_set_capacity`)."""
        if self.cand.is_agg:
            jobs = self.agg_jobs(prompts)
            self.total_decode = len(self.agg) + len(jobs)
            return jobs
        prefill = [self.prefill_job(prompts)] if self.prefill_todo() else []
        return [*prefill, *self.prefill_load_jobs(prompts), *self.decode_jobs(prompts, decode_todo)]

    def _decode_prompts(self, prompts: PromptBuilder, isl: int, count: int) -> list[str]:
        """The first `count` prompts of context `isl`: every concurrency of a context shares them, so
        later points find their prefixes warm, and a run started early sends what the bench warms."""
        texts = self._prompt_cache.setdefault(isl, [])
        while len(texts) < count:
            texts.append(prompts.make(isl, f"{len(texts)} {isl} {self.nonce} decode"))
        return texts[:count]

    def predicted_kv_tokens(self) -> int:
        """What the engine will report, as far as it can be known before it starts."""
        if self.simulate and self.opts.sim_max_kv_tokens:
            return self.opts.sim_max_kv_tokens
        return next((p.kv_tokens_estimate for p in self.plan.candidates if p.id == self.cand.id), 0)

    # ---- time scale (simulate) ---------------------------------------------
    def _auto_engine_scale(self) -> float:
        """One clock for a whole engine (a run per point): the shortest modelled step of the sweep,
        the smallest decode batch at the shortest context, is long enough to measure."""
        from slaprof.steps.measure.simsession import DECODE_STEP_WALL_MS, PREFILL_WALL_MS, auto_time_scale

        assert self.sim_model is not None
        isl = min(self.plan.grid.decode_isls)
        shortest_itl = float(self.sim_model.decode_itl_ms(self.cand.attn_dp, isl + self.osl // 2))
        shortest_ttft = float(self.sim_model.prefill_ttft_ms(min(self.plan.grid.prefill_isls), self.cand.attn_dp))
        return max(auto_time_scale(shortest_itl, DECODE_STEP_WALL_MS), auto_time_scale(shortest_ttft, PREFILL_WALL_MS))

    def point_scale(self, phase: Literal["prefill", "decode", "load"], modelled_ms: float) -> float:
        """A one-session point's clock: the one given, else one that makes the point measurable
        (`modelled_ms`: a TTFT for prefill, a decode step for decode and closed-loop points)."""
        from slaprof.steps.measure.simsession import (
            DECODE_STEP_WALL_MS,
            LOAD_STEP_WALL_MS,
            PREFILL_WALL_MS,
            auto_time_scale,
        )

        if self.opts.time_scale:
            return self.opts.time_scale
        wall = {"prefill": PREFILL_WALL_MS, "decode": DECODE_STEP_WALL_MS, "load": LOAD_STEP_WALL_MS}[phase]
        return auto_time_scale(modelled_ms, wall)

    # ---- measuring ---------------------------------------------------------
    def run(self) -> None:
        from slaprof.steps.engines.process import EngineProcess

        prompts = PromptBuilder(self.tokenizer, seed=self.opts.random_seed)
        options = engine_options(self.plan, self.cand)
        options.memory_utilization = self.opts.memory_utilization
        options.profile_dir = str(self.workdir / "traces") if self.opts.torch_profile else None
        self.engine = EngineProcess(
            self.backend, self.request.model, self.cand, self.workdir / "engine", options=options, port=self.opts.port
        )
        try:
            if self.one_session:
                self._run_session(prompts)
            else:
                self._run_per_point(prompts)
        except KeyboardInterrupt:
            self._salvage()  # points whose records are in: kept for the next run
            raise
        phases = (("agg", self.agg),) if self.cand.is_agg else (("prefill", self.prefill), ("decode", self.decode))
        for phase, points in phases:
            if not points:
                failed = [f for f in self.failed_points if f.phase == phase]
                why = f": {failed[0].reason}" if failed else ""
                raise SweepFailed(f"no {phase} point could be measured ({len(failed)} failed){why}")
        if self.opts.torch_profile:
            from slaprof.steps.engines.process import EngineFailed

            try:
                self._torch_profile()
            except EngineFailed as exc:  # the surfaces are measured; a missing trace does not undo them
                log.warning("%s: no torch-profiler trace: %s", self.cand.id, exc.reason)
                self.notes["torch_trace_error"] = exc.reason

    def _no_decode(self) -> KvCacheTooSmall:
        return KvCacheTooSmall(
            f"KV cache of {self.max_kv:,} tokens holds no {'request' if self.cand.is_agg else 'decode request'} "
            f"of the grid (osl {self.osl}); the candidate cannot serve this workload"
        )

    def _run_per_point(self, prompts: PromptBuilder) -> None:
        """One AIPerf run per point (online; simulate's aggregated candidates), started ahead so that
        its start-up overlaps the work."""
        assert self.engine is not None
        # AIPerf runs boot before and while the engine starts: the first runs of the sweep (prefill,
        # then decode or aggregated points planned from the predicted KV capacity); the engine's real
        # capacity decides which of those are kept
        ahead = 1 + (self.opts.pipeline_depth if self.opts.pipeline else 0)
        planned = self.jobs(prompts, self._set_capacity(self.predicted_kv_tokens()))
        early: dict[str, LoadRun] = {job.label: self._start_run(job) for job in planned[:ahead]}
        first = next(iter(early.values()), None)
        if self.opts.pipeline and first and getattr(self.backend, "expected_startup_s", 120.0) < AIPERF_BOOT_S:
            first.wait_at_gate(timeout_s=120.0)  # a fast engine would only idle while AIPerf boots
        self.engine.start()
        self.engine.wait_ready(self.opts.ready_timeout_s)
        self.engine_version = self.engine.version()
        jobs = self.jobs(prompts, self._set_capacity(self._engine_kv()))
        labels = {job.label for job in jobs}
        for label, run in early.items():
            if label not in labels:
                run.terminate()  # its concurrency does not fit the capacity the engine reported
        if self.total_decode == 0:
            raise self._no_decode()
        self._execute(jobs, {i: early[j.label] for i, j in enumerate(jobs) if j.label in early})

    def _engine_kv(self) -> int:
        assert self.engine is not None
        kv = self.engine.kv_tokens()
        if not kv:
            kv = self.predicted_kv_tokens()
            log.warning("%s: the engine reported no KV capacity; using the plan's estimate %d", self.cand.id, kv)
        return int(kv)

    def _start_run(self, job: _Job) -> LoadRun:
        return self._start_spec(job.spec())

    def _start_spec(self, spec: LoadSpec) -> LoadRun:
        from slaprof.steps.measure.loadgen import LoadRun

        run = LoadRun(spec, self.workdir / "aiperf", gated=True).start()
        self.runs.append(run)
        return run

    def _execute(self, jobs: list[_Job], started: dict[int, LoadRun]) -> None:
        depth = self.opts.pipeline_depth if self.opts.pipeline else 0
        previous: tuple[_Job, LoadRun] | None = None
        for i, job in enumerate(jobs):
            current = started.get(i) or started.setdefault(i, self._start_run(job))
            if not current.wait_at_gate(timeout_s=300.0):
                if previous:
                    self._consume(previous[0], previous[1].wait(timeout_s=self.opts.run_timeout_s))
                self._consume(job, current.wait(timeout_s=60.0))  # it exited before its gate: a failure
                raise SweepFailed(f"AIPerf run {job.label} did not start")
            if previous:
                # the previous run has its last response; AIPerf's own shutdown overlaps this one
                previous[1].wait_requests_done(timeout_s=self.opts.run_timeout_s)
            try:
                self._check_engine(job.label)
                if job.warm:
                    self._warm(job)
            except PointFailed as exc:  # this point only: the next one goes on
                current.terminate()
                self._fail_point(job.kind, job.isl, job.concurrency, str(exc))
                continue
            except SweepFailed:
                if previous:  # keep the point measured just before the failure
                    self._consume(previous[0], previous[1].wait(timeout_s=self.opts.run_timeout_s))
                raise
            current.open_gate()
            if previous:
                self._consume(previous[0], previous[1].wait(timeout_s=self.opts.run_timeout_s))
            for k in range(i + 1, min(len(jobs), i + 1 + depth)):
                if k not in started:
                    started[k] = self._start_run(jobs[k])  # boots while this run measures
            previous = (job, current)
            if depth == 0:
                self._consume(job, current.wait(timeout_s=self.opts.run_timeout_s))
                previous = None
        if previous:
            self._consume(previous[0], previous[1].wait(timeout_s=self.opts.run_timeout_s))

    def _warm(self, job: _Job) -> None:
        """Prefill the point's prompts (max_tokens=1) so its measured requests hit the prefix cache."""
        assert self.engine is not None
        t0 = time.monotonic()
        errors = send_requests(self.engine.url, self.request.model, job.prompts, 1, self.opts.run_timeout_s)
        self.warming_s += time.monotonic() - t0
        if errors:
            self._check_engine(job.label)
            raise PointFailed(
                f"warming the prefix cache for {job.label} failed: "
                f"{len(errors)} of {len(job.prompts)} requests: {errors[0]}"
            )

    def _check_engine(self, label: str) -> None:
        assert self.engine is not None
        if not self.engine.alive():
            raise SweepFailed(f"engine died before {label}: {self.engine.exit_reason()}")

    def _consume(self, job: _Job, result: LoadResult) -> None:
        self.aiperf_version = result.aiperf_version or self.aiperf_version
        measured = result.measured()
        self._count_measuring(measured)
        if not result.ok:
            assert self.engine is not None
            if not self.engine.alive():
                raise SweepFailed(f"engine died during {job.label}: {self.engine.exit_reason()}")
            reason = f"AIPerf run {job.label} failed ({result.failure}): {result.reason}"
            for isl in job.isls or [job.isl]:
                self._fail_point(job.kind, isl, job.concurrency, reason)
            return
        if job.kind == "prefill":
            self._prefill_points(job, measured)
        elif job.kind == "agg":
            if steady := self._steady(job, measured):
                self._agg_point(job.isl, job.osl, job.concurrency, steady, self.scale)
        elif job.kind == "prefill_load":
            if steady := self._steady(job, measured):
                self._prefill_load_point(job.isl, job.concurrency, steady, self.scale)
        else:
            self._decode_point(job, result, measured)

    def _count_measuring(self, measured: list[RequestRecord]) -> None:
        if measured:
            self.measuring_s += (max(r.end_ns for r in measured) - min(r.start_ns for r in measured)) / 1e9

    def _prefill_points(self, job: _Job, measured: list[RequestRecord]) -> None:
        grid = job.isls
        order = [e for e in grid for _ in range(self.opts.prefill_repeats * self.cand.attn_dp)]
        by_isl: dict[int, list[float]] = {}
        for r in measured:
            if r.ttft_ms is None:
                continue
            # the prompt length AIPerf counted names the point; the trace order is the fallback
            counted = r.isl
            isl = (
                min(grid, key=lambda g: abs(g - counted))
                if counted
                else order[r.session]
                if r.session < len(order)
                else None
            )
            if isl is not None:
                by_isl.setdefault(isl, []).append(r.ttft_ms)
        for isl in grid:
            if isl in by_isl:
                self._add_prefill(isl, by_isl[isl], self.scale)
            else:
                self._fail_point("prefill", isl, None, f"the prefill run returned no time-to-first-token for ISL {isl}")

    def _add_prefill(self, isl: int, ttfts_ms: list[float], scale: float) -> None:
        from slaprof.steps.measure.points import prefill_point

        point = prefill_point(isl, ttfts_ms, scale, self.cand.attn_dp, self.cand.num_gpus)
        self.prefill.append(point)
        self.prefill.sort(key=lambda p: p.isl)
        if self.sim_model is not None:
            from slaprof.steps.measure.simcheck import check_prefill

            self.checks.append(check_prefill(point, self.sim_model, self.cand.attn_dp, scale))
        self._progress("prefill", len(self.prefill), len(self.prefill_isls()))
        self._save()

    def _decode_point(self, job: _Job, result: LoadResult, measured: list[RequestRecord]) -> None:
        context = job.isl + self.osl // 2
        throughput = result.summary.get("output_token_throughput", 0.0)
        self._add_decode(job.isl, context, job.concurrency, measured, self.scale, throughput)

    def _add_decode(
        self,
        isl: int,
        context: int,
        concurrency: int,
        measured: list[RequestRecord],
        scale: float,
        run_throughput: float | None = None,
    ) -> None:
        from slaprof.steps.measure.points import decode_point

        try:
            point = decode_point(
                isl,
                context,
                concurrency,
                measured,
                scale,
                self.cand.num_gpus,
                self.max_kv,
                run_throughput,
                simulated=self.simulate,
            )
        except ValueError as exc:
            self._fail_point("decode", isl, concurrency, f"AIPerf returned {exc}")
            return
        self.decode.append(point)
        self.decode.sort(key=lambda p: (p.isl, p.concurrency))
        if self.sim_model is not None:
            from slaprof.steps.measure.simcheck import check_decode

            self.checks.append(check_decode(point, self.sim_model, scale))
        self._progress("decode", len(self.decode), self.total_decode)
        self._save()

    def _fail_point(self, phase: PointPhase, isl: int, concurrency: int | None, reason: str) -> None:
        where = f"ISL {isl}" + (f" x {concurrency}" if phase != "prefill" else "")
        log.warning("%s: %s point %s failed: %s", self.cand.id, phase, where, reason)
        self.failed_points.append(
            FailedPoint(
                phase=phase,
                isl=isl,
                concurrency=None if phase == "prefill" else concurrency,
                reason=reason,
            )
        )
        self._save()

    def _steady(self, job: _Job, measured: list[RequestRecord]) -> list[RequestRecord]:
        """The requests after the first wave (the `concurrency` sent together at the start) when
        later ones exist: the steady state of the closed loop. None of them: a failed point."""
        done = sorted((r for r in measured if r.ttft_ms is not None), key=lambda r: r.start_ns)
        steady = done[job.concurrency :] or done
        if not steady:
            self._fail_point(job.kind, job.isl, job.concurrency, "AIPerf returned no time-to-first-token")
        return steady

    def _net_ttft(self, ttft_ms: float) -> float:
        """A measured TTFT without the latency floor (never more than half of it: a floor that large
        means the probes met a stall, not the usual latency)."""
        return ttft_ms - min(self.latency_floor_ms, ttft_ms / 2)

    def _prefill_load_point(self, isl: int, concurrency: int, steady: list[RequestRecord], scale: float) -> None:
        """A prefill engine kept busy with `concurrency` prompts in flight: mean steady TTFT."""
        ttfts = [self._net_ttft(r.ttft_ms) for r in steady if r.ttft_ms is not None]
        if not ttfts:
            self._fail_point("prefill_load", isl, concurrency, "AIPerf returned no time-to-first-token")
            return
        ttft = sum(ttfts) / len(ttfts) / scale
        # closed loop: `concurrency` prompts every TTFT (Little's law)
        thpt = concurrency * isl / (ttft / 1e3) / self.cand.num_gpus
        self.prefill_load.append(
            PrefillLoadPoint(isl=isl, concurrency=concurrency, ttft_ms=round(ttft, 4), thpt_per_gpu=round(thpt, 3))
        )
        self.prefill_load.sort(key=lambda p: p.concurrency)
        self._save()

    def _agg_point(self, isl: int, osl: int, concurrency: int, steady: list[RequestRecord], scale: float) -> None:
        """TTFT, ITL and output tokens/s/GPU of an aggregated engine at one concurrency, from the
        requests of the closed loop's steady state (after its first wave)."""
        ttfts = [self._net_ttft(r.ttft_ms) for r in steady if r.ttft_ms is not None]
        itls = [r.itl_ms for r in steady if r.itl_ms is not None]
        if not ttfts or not itls:
            what = "inter-token latency" if ttfts else "time-to-first-token"
            self._fail_point("agg", isl, concurrency, f"AIPerf returned no {what}")
            return
        ttft = sum(ttfts) / len(ttfts) / scale
        itl = sum(itls) / len(itls) / scale
        # Little's law over the closed loop: `concurrency` requests, each ttft + (osl - 1) * itl long
        latency_ms = ttft + max(0, osl - 1) * itl
        thpt = concurrency * osl / (latency_ms / 1e3) / self.cand.num_gpus
        self.agg.append(
            AggPoint(
                isl=isl,
                osl=osl,
                concurrency=concurrency,
                ttft_ms=round(ttft, 4),
                itl_ms=round(itl, 4),
                thpt_per_gpu=round(thpt, 3),
            )
        )
        self.agg.sort(key=lambda p: p.concurrency)
        self._progress("agg", len(self.agg), self.total_decode)
        self._save()

    # ---- one AIPerf run for the whole sweep (simulate) ---------------------
    def _session_plan(self, prompts: PromptBuilder, todo: list[tuple[int, int]]) -> SessionPlan:
        from slaprof.steps.measure.simsession import MEASURE_OSL, STREAMS, SessionPlan

        assert self.sim_model is not None
        plan = SessionPlan(self.nonce, prompts.make, self.opts.sim_streams or STREAMS)
        dp = self.cand.attn_dp
        if self.cand.is_agg:
            isl, osl = self.request.sla.isl, self.request.sla.osl
            todo_agg = self.agg_todo()
            self.total_decode = len(self.agg) + len(todo_agg)
            for c in todo_agg:
                itl = float(self.sim_model.decode_itl_ms(c, isl + osl // 2))
                plan.add_closed_loop("agg", isl, c, osl, AGG_ROUNDS, self.point_scale("load", itl))
            return plan
        for isl in self.prefill_todo():
            scale = self.point_scale("prefill", float(self.sim_model.prefill_ttft_ms(isl, dp)))
            plan.add_prefill(isl, self.opts.prefill_repeats, dp, self.opts.prefill_osl, scale)
        for b in self.prefill_load_todo():
            isl = self.request.sla.isl
            ttft = float(self.sim_model.prefill_ttft_ms(isl, b))
            plan.add_closed_loop(
                "prefill_load", isl, b, self.opts.prefill_osl, AGG_ROUNDS, self.point_scale("prefill", ttft)
            )
        measure_osl = min(self.osl, MEASURE_OSL)
        for isl, c in todo:
            context = isl + self.osl // 2
            scale = self.point_scale("decode", float(self.sim_model.decode_itl_ms(c, context)))
            plan.add_decode(isl, c, context, measure_osl, scale)
        return plan

    def _start_session(self, plan: SessionPlan) -> LoadRun:
        spec = self._spec(
            "session",
            plan.entries,
            plan.concurrency,
            conversations=plan.conversations,
            server_token_count=True,  # the engine's count: AIPerf need not tokenize every prompt again
            stream_records=True,  # points are taken (and checkpointed) as they finish
        )
        return self._start_spec(spec)

    def _run_session(self, prompts: PromptBuilder) -> None:
        assert self.engine is not None
        self.engine.start()  # the simulated engine starts in seconds; the trace's prompts are made meanwhile
        predicted = self.predicted_kv_tokens()
        plan = self._session_plan(prompts, self._set_capacity(predicted))
        run = self._start_session(plan) if plan.points else None
        self.engine.wait_ready(self.opts.ready_timeout_s)
        self.engine_version = self.engine.version()
        kv = self._engine_kv()
        if kv != predicted:
            log.warning("%s: KV capacity %d, not the predicted %d: new session", self.cand.id, kv, predicted)
            if run is not None:
                run.terminate()
            plan = self._session_plan(prompts, self._set_capacity(kv))
            run = self._start_session(plan) if plan.points else None
        if self.total_decode == 0:
            raise self._no_decode()
        if run is None:
            return  # every point was measured before (resumed)
        self._session = (plan, run)
        # while AIPerf starts: the engine's tokenizer is the simulator's, not the modelled engine's
        errors = tokenize_ahead(self.engine.url, plan.prompts(), self.opts.run_timeout_s)
        if errors:
            log.warning("%s: %d prompts were not tokenized ahead: %s", self.cand.id, len(errors), errors[0])
        if not run.wait_at_gate(timeout_s=300.0):
            result = run.wait(timeout_s=60.0)
            raise SweepFailed(f"AIPerf did not start ({result.failure}): {result.reason}")
        run.open_gate()
        deadline = time.monotonic() + self.opts.run_timeout_s
        while run.running() and time.monotonic() < deadline:
            self._take_session_points()
            self._check_engine("the end of the sweep")
            time.sleep(SESSION_POLL_S)
        result = run.wait(timeout_s=max(1.0, deadline - time.monotonic()))  # a timeout stops AIPerf
        self.aiperf_version = result.aiperf_version or self.aiperf_version
        self._take_session_points()
        self._check_engine("the end of the sweep")
        why = result.reason if not result.ok else "AIPerf returned no record for some of its requests"
        for point in plan.unfinished():
            if point.phase != "probe":
                self._fail_point(point.phase, point.isl, point.concurrency, why)

    def _take_session_points(self) -> None:
        assert self._session is not None
        plan, run = self._session
        for point in plan.feed(run.new_records()):
            if point.phase == "probe":  # no point of its own; a failed probe leaves the floor at 0
                floors = sorted(r.ttft_ms for r in point.measured if r.ttft_ms is not None)
                if floors:
                    self.latency_floor_ms = floors[len(floors) // 2]
                    self.notes["latency_floor_ms"] = f"{self.latency_floor_ms:.2f}"
                continue
            self._count_measuring(point.measured)
            if point.errors:
                reason = f"{len(point.errors)} of {point.requests} requests failed: {point.errors[0]}"
                self._fail_point(point.phase, point.isl, point.concurrency, reason)
            elif point.phase == "prefill":
                ttfts = [self._net_ttft(r.ttft_ms) for r in point.measured if r.ttft_ms is not None]
                if ttfts:
                    self._add_prefill(point.isl, ttfts, point.scale)
                else:
                    self._fail_point("prefill", point.isl, None, "AIPerf returned no time-to-first-token")
            elif point.phase == "agg":
                self._agg_point(point.isl, point.osl, point.concurrency, point.measured, point.scale)
            elif point.phase == "prefill_load":
                self._prefill_load_point(point.isl, point.concurrency, point.measured, point.scale)
            else:
                self._add_decode(point.isl, point.context, point.concurrency, point.measured, point.scale)

    def _salvage(self) -> None:
        """Interrupted: take the points whose records AIPerf has already written."""
        if self._session is not None:
            try:
                self._take_session_points()
            except Exception:  # the interruption is what matters; the next run measures the rest
                log.exception("%s: could not read the points measured before the interruption", self.cand.id)

    # ---- results -----------------------------------------------------------
    def _progress(self, phase: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(phase, done, total)
            except Exception:
                log.exception("progress callback failed")

    def _save(self) -> None:
        """Hand the points so far to `checkpoint`, so that an interrupted run resumes from here."""
        if self.checkpoint is not None:
            try:
                self.checkpoint(self.profile("failed", "interrupted before the sweep ended"))
            except Exception:
                log.exception("%s: checkpoint failed", self.cand.id)

    def provenance(self) -> Provenance:
        prov = Provenance(
            method=self.request.method,
            backend=self.request.backend,
            request_key=self.plan.request_key,
            estimator="builtin" if self.simulate else None,  # simengine's clock
            started_at=self.started_at,
            measuring_s=round(self.measuring_s, 3),
            engine_version=self.engine_version,
            aiperf_version=self.aiperf_version or _aiperf_version(),
            aiperf_runs=len(self.runs),
        )
        engine = self.engine
        if engine is not None and engine.started_at is not None:
            prov.engine_up_s = round((engine.stopped_at or time.monotonic()) - engine.started_at, 3)
        if self.simulate:
            prov.engine_version = f"simengine ({self.request.backend} timing) {self.engine_version or ''}".strip()
        return prov

    def profile(self, status: ProfileStatus, reason: str) -> CandidateProfile:
        artifacts = {"workdir": str(self.workdir), **self.notes}
        for i, trace in enumerate(torch_traces(self.workdir)):
            artifacts[f"torch_trace_{i}" if i else "torch_trace"] = str(trace)
        return CandidateProfile(
            candidate=self.cand,
            status=status,
            reason=reason,
            max_kv_tokens=self.max_kv,
            prefill=list(self.prefill),
            decode=list(self.decode),
            prefill_load=list(self.prefill_load),
            agg=list(self.agg),
            failed_points=list(self.failed_points),
            checks=sorted(self.checks, key=lambda c: (c.phase != "prefill", c.isl, c.concurrency or 0)),
            provenance=self.provenance(),
            artifacts=artifacts,
        )

    def _torch_profile(self) -> None:
        """A short torch-profiler trace under the SLA's load point (the middle decode concurrency)."""
        assert self.engine is not None
        isl = min(self.plan.grid.decode_isls, key=lambda x: abs(x - self.request.sla.isl))
        points = [p for p in self.decode if p.isl == isl] or self.decode
        conc = points[len(points) // 2].concurrency if points else 1
        prompts = PromptBuilder(self.tokenizer, seed=self.opts.random_seed + 1)
        texts = [prompts.make(isl, f"{j} {self.nonce} profile") for j in range(conc)]
        self.engine.start_profile()
        try:
            send_requests(self.engine.url, self.request.model, texts, max_tokens=min(self.osl, 32))
        finally:
            self.engine.stop_profile()

    def close(self) -> None:
        from slaprof.steps.measure.loadgen import stop_all

        stop_all(self.runs)
        if self.engine is not None:
            self.engine.stop()


def engine_options(plan: Plan, cand: Candidate) -> ServerOptions:
    """What the plan fixes of a candidate's engine: its context, its step budget (`Plan.step_tokens`)
    and the precision overrides. The DGD's workers are told the same (`steps/dag/render.py`)."""
    from slaprof.steps.engines import ServerOptions

    return ServerOptions(
        prefix_caching=True,
        max_context=plan.grid.max_context,
        max_batched_tokens=plan.step_tokens(cand),
        precision=plan.precision,
    )


def _driving_model(request: ProfileRequest, plan: Plan, candidate: Candidate) -> Any:
    """The performance model the simulated engine is started with (see `backend_for`, `engine_options`)."""
    from slaprof.steps.measure.simengine import driving_estimator

    engine = request.engine
    return driving_estimator(
        request.model,
        request.hardware.gpu,
        request.backend,
        candidate.id,
        quantization=engine.quantization,
        kv_cache_dtype=engine.kv_cache_dtype,
        step_tokens=plan.step_tokens(candidate),
    )


def measure_candidate(
    request: ProfileRequest,
    plan: Plan,
    candidate: Candidate,
    workdir: Path | str,
    on_progress: ProgressFn | None = None,
    options: BenchOptions | None = None,
    resume: CandidateProfile | None = None,
    checkpoint: CheckpointFn | None = None,
) -> CandidateProfile:
    """One candidate's CandidateProfile: offline estimate, or one engine start measured with AIPerf.

    `resume`: a profile of this candidate from an interrupted or failed measurement under the same
    request; its points are kept and not measured again. `checkpoint` gets the profile so far after
    every point."""
    if request.method == "offline":
        from slaprof.steps.perf.surfaces import offline_profile

        profile = offline_profile(request, plan, candidate)
        if on_progress is not None:
            on_progress("prefill", len(profile.prefill), len(profile.prefill))
            on_progress("decode", len(profile.decode), len(profile.decode))
        return profile
    from slaprof.steps.engines.process import EngineFailed

    opts = options or BenchOptions.from_env()
    bench = CandidateBench(request, plan, candidate, Path(workdir), opts, on_progress, resume, checkpoint)
    status: ProfileStatus = "ok"
    reason = ""
    try:
        bench.run()
    except EngineFailed as exc:
        status, reason = ("infeasible" if exc.infeasible else "failed"), exc.reason
    except SweepFailed as exc:
        status, reason = ("infeasible" if exc.infeasible else "failed"), str(exc)
    finally:
        bench.close()
        from slaprof.steps.engines import sidecar

        sidecar.release()  # on Argo: the engine container may exit now, so the pod completes
    profile = bench.profile(status, reason)
    profile.provenance.finished_at = utc_now()
    return profile


def torch_traces(workdir: Path) -> list[Path]:
    """Trace files the engine wrote into the bench's profiler directory."""
    traces = Path(workdir) / "traces"
    return sorted(p for p in traces.rglob("*") if p.is_file()) if traces.is_dir() else []


def _aiperf_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("aiperf")
    except Exception:
        return None


def run_step(
    store: ArtifactStore, candidate_id: str, on_progress: ProgressFn | None = None, options: BenchOptions | None = None
) -> CandidateProfile:
    """DAG step `bench`: request.json + plan.json -> profiles/<candidate_id>.json (and logs, traces).

    While it measures, the points so far are kept in partial/<candidate_id>.json; a later run of the
    step (after Ctrl-C, a killed pod, a crashed engine) measures only the points still missing."""
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.store import Layout, delete, read_model, write_model
    from slaprof.steps.dag.plan import Plan

    request = read_model(store, Layout.REQUEST, ProfileRequest)
    plan = read_model(store, Layout.PLAN, Plan)
    candidate = plan.get(candidate_id).candidate
    opts = options or BenchOptions.from_env()
    partial = Layout.partial(candidate_id)
    resume = resumable_profile(store, candidate_id, plan.request_key) if opts.resume else None
    workdir = Path(tempfile.mkdtemp(prefix=f"slaprof-bench-{candidate_id}-"))
    try:
        profile = measure_candidate(
            request, plan, candidate, workdir, on_progress, opts, resume, lambda p: write_model(store, partial, p)
        )
        notes = {
            k: v
            for k, v in profile.artifacts.items()
            if k != "workdir" and not k.startswith("torch_trace_") and k != "torch_trace"
        }
        profile.artifacts = {**notes, **_upload_artifacts(store, candidate_id, workdir)}
        write_model(store, Layout.profile(candidate_id), profile)
        delete(store, partial)  # the profile holds every point now (a failed one is resumed from)
        return profile
    finally:
        if not opts.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def resumable_profile(store: ArtifactStore, candidate_id: str, request_key: str) -> CandidateProfile | None:
    """Points of `candidate_id` measured under this request key by a run that did not finish: its
    checkpoint, else a failed profile; None when there is neither (or it is unreadable)."""
    from pydantic import ValidationError

    from slaprof.steps.core.store import Layout, read_model

    for key in (Layout.partial(candidate_id), Layout.profile(candidate_id)):
        if not store.exists(key):
            continue
        try:
            found = read_model(store, key, CandidateProfile)
        except (ValidationError, ValueError, UserError):
            continue
        if found.status != "ok" and found.id == candidate_id and found.provenance.request_key == request_key:
            if found.prefill or found.decode or found.agg:
                return found
    return None


def _upload_artifacts(store: ArtifactStore, candidate_id: str, workdir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    engine_log = workdir / "engine" / "engine.log"
    if engine_log.is_file():
        key = f"logs/{candidate_id}-engine.log"
        store.put_bytes(key, engine_log.read_bytes(), "text/plain")
        out["engine_log"] = key
    for i, path in enumerate(torch_traces(workdir)):
        key = f"traces/{candidate_id}/{path.relative_to(workdir / 'traces')}"
        store.put_bytes(key, path.read_bytes())
        out[f"torch_trace_{i}" if i else "torch_trace"] = key
    return out
