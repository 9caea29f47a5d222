"""DAG step `bench`: measure one candidate's prefill and decode surfaces with one engine start.

Input: request.json and plan.json from the run's store, and a candidate id.
Output: profiles/<id>.json (a `CandidateProfile`), plus the engine log (and torch-profiler
traces with `torch_profile`) under logs/ and traces/.

Methods:
  online    the request's backend (vLLM, SGLang, TRT-LLM) started on this machine's GPUs;
  simulate  the same path against `steps.simengine` (the `simulated` backend) on CPUs;
  offline   no engine: `steps.perf.surfaces.offline_profile` estimates the same surfaces.

Online and simulate measure with AIPerf (`steps.loadgen`):
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
Tokenizer: the prompts are cut to exact token counts with the tokenizer AIPerf uses (`--tokenizer`,
SLAPROF_TOKENIZER, else the model's own); one that cannot count tokens is a UserError up front.
AIPerf runs are started gated and ahead of time (during engine start-up, or while the
previous run measures), so their ~10 s start-up does not idle the engine.

  prefill  under load: one AIPerf run per load of `prefill_load_per_rank` prompts in flight per
           rank at the SLA's ISL (fresh prompts, AGG_ROUNDS per slot); TTFT after the first wave,
           throughput/GPU = load x ISL / TTFT / GPUs (closed loop).

Aggregated candidates (`agg-tp4`) start the engine as it would serve (its own chunked-prefill
budget) and measure one AIPerf run per concurrency at the SLA's ISL/OSL (`plan.agg_concurrencies`,
fresh prompts, AGG_ROUNDS requests per slot): TTFT and ITL averaged after the first wave, and
output tokens/s/GPU = concurrency x OSL / (TTFT + (OSL - 1) x ITL) / GPUs (Little's law).

Failures: engine out of memory at start-up -> infeasible; engine not ready, crash mid-sweep,
AIPerf failure -> failed. Either way the profile keeps the points measured so far and the
engine and every AIPerf process are stopped.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from steps.candidates import Candidate
from steps.engines.base import batched_tokens
from steps.errors import UserError
from steps.results import (
    AggPoint,
    CandidateProfile,
    DecodePoint,
    PrefillLoadPoint,
    PrefillPoint,
    Provenance,
    utc_now,
)

# The engine, load-generator and asyncio modules are imported on the online/simulate path only:
# an offline run (the default of `slaprof profile`) never needs them.
if TYPE_CHECKING:
    from steps.engines import EngineBackend
    from steps.engines.process import EngineProcess
    from steps.loadgen import LoadResult, LoadRun, LoadSpec, TraceEntry
    from steps.plan import Plan
    from steps.request import ProfileRequest
    from steps.store import ArtifactStore

log = logging.getLogger(__name__)
ProgressFn = Callable[[str, int, int], None]
AIPERF_BOOT_S = 10.0
# requests/s under the concurrency cap: all of a point's requests leave within milliseconds, and
# AIPerf's timing loop sleeps instead of spinning (see LoadSpec.request_rate)
REQUEST_RATE = 1000.0
AGG_ROUNDS = 3  # requests per concurrency slot of an aggregated point: the first wave, then steady state


class BenchOptions(BaseModel):
    """How to measure (not what: that is the request and the plan)."""

    tokenizer: str | None = Field(None, description="tokenizer for AIPerf and prompts; default: the model")
    time_scale: float = Field(1.0, gt=0, description="simulate: wall ms per modelled ms (results are rescaled)")
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

    @classmethod
    def from_env(cls, **overrides: Any) -> BenchOptions:
        """Defaults, then SLAPROF_TOKENIZER / SLAPROF_SIM_TIME_SCALE / SLAPROF_SIM_STARTUP_S, then overrides."""
        env: dict[str, Any] = {}
        if os.environ.get("SLAPROF_TOKENIZER"):
            env["tokenizer"] = os.environ["SLAPROF_TOKENIZER"]
        if os.environ.get("SLAPROF_SIM_TIME_SCALE"):
            env["time_scale"] = float(os.environ["SLAPROF_SIM_TIME_SCALE"])
        if os.environ.get("SLAPROF_SIM_STARTUP_S"):
            env["startup_s"] = float(os.environ["SLAPROF_SIM_STARTUP_S"])
        return cls(**{**env, **{k: v for k, v in overrides.items() if v is not None}})


class SweepFailed(Exception):
    pass


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

    def make(self, isl: int, tag: str) -> str:
        """`isl` tokens; `tag` must be unique and comes first, so the first cache block differs."""
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
async def _send_all(url: str, model: str, prompts: list[str], max_tokens: int, timeout_s: float) -> list[str]:
    import asyncio

    import aiohttp

    errors: list[str] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(prompt: str) -> None:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "stream": False,
            }
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors.append(f"HTTP {resp.status}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(p) for p in prompts))
    return errors


def send_requests(url: str, model: str, prompts: list[str], max_tokens: int = 1, timeout_s: float = 600.0) -> list[str]:
    """Send every prompt at once and wait for all; returns the errors."""
    import asyncio

    return asyncio.run(_send_all(url, model, prompts, max_tokens, timeout_s))


# ---------------------------------------------------------------------------
# one candidate
# ---------------------------------------------------------------------------
class _Job:
    """One AIPerf run to do; its prompts (and so its spec) are made only when it is about to start."""

    def __init__(
        self,
        label: str,
        kind: str,
        isl: int,
        concurrency: int,
        osl: int,
        warm: bool,
        make_prompts: Callable[[], list[str]],
        spec_for: Callable[[str, list[TraceEntry], int], LoadSpec],
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
        self._prompts: list[str] | None = None

    @property
    def prompts(self) -> list[str]:
        if self._prompts is None:
            self._prompts = self._make_prompts()
        return self._prompts

    def spec(self) -> LoadSpec:
        from steps.loadgen import TraceEntry

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
    from steps.engines import get_backend

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
    ) -> None:
        self.request, self.plan, self.cand = request, plan, candidate
        self.workdir = Path(workdir)
        self.opts = options
        self.on_progress = on_progress
        self.backend = backend_for(request, options)
        self.engine: EngineProcess | None = None
        self.runs: list[LoadRun] = []
        self.prefill: list[PrefillPoint] = []
        self.decode: list[DecodePoint] = []
        self.agg: list[AggPoint] = []
        self.prefill_load: list[PrefillLoadPoint] = []
        self.max_kv = 0
        self.measuring_s = 0.0
        self.warming_s = 0.0
        self.aiperf_version: str | None = None
        self.engine_version: str | None = None
        self.nonce = uuid.uuid4().hex[:8]
        self.scale = options.time_scale if request.method == "simulate" else 1.0
        self.osl = options.decode_osl or plan.grid.decode_osl
        self.tokenizer = options.tokenizer or request.model
        self._prompt_cache: dict[int, list[str]] = {}
        self.total_decode = 0
        self.notes: dict[str, str] = {}  # recorded in the profile's artifacts

    # ---- plan of AIPerf runs ----------------------------------------------
    def _spec(self, label: str, trace: list[TraceEntry], concurrency: int) -> LoadSpec:
        from steps.loadgen import LoadSpec

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
        )

    def prefill_isls(self) -> list[int]:
        limit = self.plan.grid.max_context - self.opts.prefill_osl
        isls = [i for i in self.plan.grid.prefill_isls if i <= limit]
        return _thin(isls, self.opts.max_prefill_points, keep=self.request.sla.isl)

    def prefill_job(self, prompts: PromptBuilder) -> _Job:
        per_isl = self.opts.prefill_repeats * self.cand.attn_dp

        def make() -> list[str]:
            return [
                prompts.make(isl, f"{j} {isl} {self.nonce} prefill")
                for isl in self.prefill_isls()
                for j in range(per_isl)
            ]

        return _Job("prefill", "prefill", 0, self.cand.attn_dp, self.opts.prefill_osl, False, make, self._spec)

    def decode_jobs(self, prompts: PromptBuilder) -> list[_Job]:
        from steps.plan import decode_concurrencies

        jobs: list[_Job] = []
        granularity = self.opts.max_concurrency_points or self.plan.grid.decode_granularity
        for isl in _thin(self.plan.grid.decode_isls, self.opts.max_decode_isls, keep=self.request.sla.isl):
            for c in decode_concurrencies(self.max_kv, isl, self.osl, granularity, self.cand.attn_dp):
                jobs.append(
                    _Job(
                        f"decode-isl{isl}-c{c}",
                        "decode",
                        isl,
                        c,
                        self.osl,
                        True,
                        functools.partial(self._decode_prompts, prompts, isl, c),
                        self._spec,
                    )
                )
        return jobs

    def agg_jobs(self, prompts: PromptBuilder) -> list[_Job]:
        """An aggregated engine: one AIPerf run per concurrency at the SLA's ISL/OSL, fresh prompts,
        AGG_ROUNDS requests per concurrency slot (closed loop: the first wave arrives together)."""
        from steps.plan import agg_concurrencies

        isl, osl = self.request.sla.isl, self.request.sla.osl
        points = self.opts.max_concurrency_points or self.plan.grid.decode_granularity
        jobs = []
        for c in agg_concurrencies(self.max_kv, isl, osl, points, self.cand.attn_dp):

            def make(c: int = c) -> list[str]:
                return [prompts.make(isl, f"{j} {isl} {self.nonce} agg{c}") for j in range(AGG_ROUNDS * c)]

            jobs.append(_Job(f"agg-c{c}", "agg", isl, c, osl, False, make, self._spec))
        return jobs

    def prefill_load_jobs(self, prompts: PromptBuilder) -> list[_Job]:
        """The prefill engine kept busy: one AIPerf run per load (prompts in flight) at the SLA's ISL,
        fresh prompts, AGG_ROUNDS per slot, as many as the KV cache holds at once."""
        isl, dp = self.request.sla.isl, self.cand.attn_dp
        jobs = []
        for per_rank in self.opts.prefill_load_per_rank:
            b = per_rank * dp
            if b * isl > self.max_kv:
                break

            def make(b: int = b) -> list[str]:
                return [prompts.make(isl, f"{j} {isl} {self.nonce} load{b}") for j in range(AGG_ROUNDS * b)]

            jobs.append(
                _Job(f"prefill-load-c{b}", "prefill_load", isl, b, self.opts.prefill_osl, False, make, self._spec)
            )
        return jobs

    def jobs(self, prompts: PromptBuilder) -> list[_Job]:
        """The AIPerf runs of this candidate at the current KV capacity, in order."""
        if self.cand.is_agg:
            return self.agg_jobs(prompts)
        return [self.prefill_job(prompts), *self.prefill_load_jobs(prompts), *self.decode_jobs(prompts)]

    def _decode_prompts(self, prompts: PromptBuilder, isl: int, count: int) -> list[str]:
        """The first `count` prompts of context `isl`: every concurrency of a context shares them, so
        later points find their prefixes warm, and a run started early sends what the bench warms."""
        texts = self._prompt_cache.setdefault(isl, [])
        while len(texts) < count:
            texts.append(prompts.make(isl, f"{len(texts)} {isl} {self.nonce} decode"))
        return texts[:count]

    def predicted_kv_tokens(self) -> int:
        """What the engine will report, as far as it can be known before it starts."""
        if self.request.method == "simulate" and self.opts.sim_max_kv_tokens:
            return self.opts.sim_max_kv_tokens
        return next((p.kv_tokens_estimate for p in self.plan.candidates if p.id == self.cand.id), 0)

    # ---- measuring ---------------------------------------------------------
    def run(self) -> None:
        from steps.engines import ServerOptions
        from steps.engines.process import EngineProcess

        prompts = PromptBuilder(self.tokenizer, seed=self.opts.random_seed)
        self.engine = EngineProcess(
            self.backend,
            self.request.model,
            self.cand,
            self.workdir / "engine",
            options=ServerOptions(
                prefix_caching=True,
                max_context=self.plan.grid.max_context,
                # an aggregated engine runs with its own chunked-prefill budget, as it would serve
                max_batched_tokens=None if self.cand.is_agg else batched_tokens(self.plan.grid.max_context),
                memory_utilization=self.opts.memory_utilization,
                profile_dir=str(self.workdir / "traces") if self.opts.torch_profile else None,
            ),
            port=self.opts.port,
        )
        # AIPerf runs boot before and while the engine starts: the first runs of the sweep (prefill,
        # then decode or aggregated points planned from the predicted KV capacity); the engine's real
        # capacity decides which of those are kept
        self.max_kv = self.predicted_kv_tokens()
        ahead = 1 + (self.opts.pipeline_depth if self.opts.pipeline else 0)
        early: dict[str, LoadRun] = {job.label: self._start_run(job) for job in self.jobs(prompts)[:ahead]}
        if early and self.opts.pipeline and getattr(self.backend, "expected_startup_s", 120.0) < AIPERF_BOOT_S:
            next(iter(early.values())).wait_at_gate(timeout_s=120.0)  # a fast engine would only idle while AIPerf boots
        self.engine.start()
        self.engine.wait_ready(self.opts.ready_timeout_s)
        self.engine_version = self.engine.version()
        kv = self.engine.kv_tokens()
        if not kv:
            kv = self.predicted_kv_tokens()
            log.warning("%s: the engine reported no KV capacity; using the plan's estimate %d", self.cand.id, kv)
        self.max_kv = int(kv)
        jobs = self.jobs(prompts)
        self.total_decode = sum(job.kind in ("decode", "agg") for job in jobs)
        labels = {job.label for job in jobs}
        for label, run in early.items():
            if label not in labels:
                run.terminate()  # its concurrency does not fit the capacity the engine reported
        if self.total_decode == 0:
            raise SweepFailed(
                f"KV cache of {self.max_kv:,} tokens holds no {'request' if self.cand.is_agg else 'decode request'} "
                f"of the grid (osl {self.osl}); the candidate cannot serve this workload"
            )
        self._execute(jobs, {i: early[j.label] for i, j in enumerate(jobs) if j.label in early})
        if self.opts.torch_profile:
            from steps.engines.process import EngineFailed

            try:
                self._torch_profile()
            except EngineFailed as exc:  # the surfaces are measured; a missing trace does not undo them
                log.warning("%s: no torch-profiler trace: %s", self.cand.id, exc.reason)
                self.notes["torch_trace_error"] = exc.reason

    def _start_run(self, job: _Job) -> LoadRun:
        from steps.loadgen import LoadRun

        run = LoadRun(job.spec(), self.workdir / "aiperf", gated=True).start()
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
            raise SweepFailed(
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
        if measured:
            self.measuring_s += (max(r.end_ns for r in measured) - min(r.start_ns for r in measured)) / 1e9
        if not result.ok:
            assert self.engine is not None
            if not self.engine.alive():
                raise SweepFailed(f"engine died during {job.label}: {self.engine.exit_reason()}")
            raise SweepFailed(f"AIPerf run {job.label} failed ({result.failure}): {result.reason}")
        if job.kind == "prefill":
            self._prefill_points(job, measured)
        elif job.kind == "agg":
            self._agg_point(job, measured)
        elif job.kind == "prefill_load":
            self._prefill_load_point(job, measured)
        else:
            self._decode_point(job, result, measured)

    def _prefill_points(self, job: _Job, measured: list) -> None:
        grid = self.prefill_isls()
        order = [e for e in grid for _ in range(self.opts.prefill_repeats * self.cand.attn_dp)]
        by_isl: dict[int, list[float]] = {}
        for r in measured:
            if r.ttft_ms is None:
                continue
            # the prompt length AIPerf counted names the point; the trace order is the fallback
            isl = (
                min(grid, key=lambda g: abs(g - r.isl))
                if r.isl
                else order[r.session]
                if r.session < len(order)
                else None
            )
            if isl is not None:
                by_isl.setdefault(isl, []).append(r.ttft_ms / self.scale)
        for isl in sorted(by_isl):
            ttft = sum(by_isl[isl]) / len(by_isl[isl])
            thpt = isl * self.cand.attn_dp / ttft * 1000.0 / self.cand.num_gpus
            self.prefill.append(PrefillPoint(isl=isl, ttft_ms=round(ttft, 4), thpt_per_gpu=round(thpt, 3)))
        self._progress("prefill", len(self.prefill), len(self.prefill_isls()))
        if not self.prefill:
            raise SweepFailed("the prefill run returned no time-to-first-token")

    def _decode_point(self, job: _Job, result: LoadResult, measured: list) -> None:
        from steps.loadgen import steady_itl_ms

        itls = [r.itl_ms for r in measured if r.itl_ms is not None]
        if not itls:
            raise SweepFailed(f"AIPerf run {job.label} returned no inter-token latency")
        # the steps with the whole batch decoding, when the run had enough of them (see steady_itl_ms)
        steady = steady_itl_ms(measured)
        if steady is not None:
            # steady state: `concurrency` tokens every ITL, as the offline model and the planner count it
            itl = steady / self.scale
            thpt = job.concurrency * 1000.0 / itl / self.cand.num_gpus
        else:
            itl = sum(itls) / len(itls) / self.scale
            thpt = result.summary.get("output_token_throughput", 0.0) * self.scale / self.cand.num_gpus
        context = job.isl + self.osl // 2
        self.decode.append(
            DecodePoint(
                isl=job.isl,
                context=context,
                concurrency=job.concurrency,
                kv_usage=round(job.concurrency * context / self.max_kv, 6),
                itl_ms=round(itl, 4),
                thpt_per_gpu=round(thpt, 3),
            )
        )
        self._progress("decode", len(self.decode), self.total_decode)

    def _steady(self, job: _Job, measured: list) -> list:
        """The requests after the first wave (the `concurrency` sent together at the start) when
        later ones exist: the steady state of the closed loop."""
        done = sorted((r for r in measured if r.ttft_ms is not None), key=lambda r: r.start_ns)
        steady = done[job.concurrency :] or done
        if not steady:
            raise SweepFailed(f"AIPerf run {job.label} returned no time-to-first-token")
        return steady

    def _prefill_load_point(self, job: _Job, measured: list) -> None:
        steady = self._steady(job, measured)
        ttft = sum(r.ttft_ms for r in steady) / len(steady) / self.scale
        # closed loop: `concurrency` prompts every TTFT (Little's law)
        thpt = job.concurrency * job.isl / (ttft / 1e3) / self.cand.num_gpus
        self.prefill_load.append(
            PrefillLoadPoint(
                isl=job.isl, concurrency=job.concurrency, ttft_ms=round(ttft, 4), thpt_per_gpu=round(thpt, 3)
            )
        )

    def _agg_point(self, job: _Job, measured: list) -> None:
        """TTFT, ITL and output tokens/s/GPU of an aggregated engine at one concurrency. The first wave
        (the `concurrency` requests sent together at the start) is left out when later requests
        exist, so the point describes the steady state of the closed loop."""
        steady = self._steady(job, measured)
        ttft = sum(r.ttft_ms for r in steady) / len(steady) / self.scale
        itls = [r.itl_ms for r in steady if r.itl_ms is not None]
        if not itls:
            raise SweepFailed(f"AIPerf run {job.label} returned no inter-token latency")
        itl = sum(itls) / len(itls) / self.scale
        # Little's law over the closed loop: `concurrency` requests, each ttft + (osl - 1) * itl long
        latency_ms = ttft + max(0, job.osl - 1) * itl
        thpt = job.concurrency * job.osl / (latency_ms / 1e3) / self.cand.num_gpus
        self.agg.append(
            AggPoint(
                isl=job.isl,
                osl=job.osl,
                concurrency=job.concurrency,
                ttft_ms=round(ttft, 4),
                itl_ms=round(itl, 4),
                thpt_per_gpu=round(thpt, 3),
            )
        )
        self._progress("agg", len(self.agg), self.total_decode)

    def _progress(self, phase: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(phase, done, total)
            except Exception:
                log.exception("progress callback failed")

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
        from steps.loadgen import stop_all

        stop_all(self.runs)
        if self.engine is not None:
            self.engine.stop()


def measure_candidate(
    request: ProfileRequest,
    plan: Plan,
    candidate: Candidate,
    workdir: Path | str,
    on_progress: ProgressFn | None = None,
    options: BenchOptions | None = None,
) -> CandidateProfile:
    """One candidate's CandidateProfile: offline estimate, or one engine start measured with AIPerf."""
    if request.method == "offline":
        from steps.perf.surfaces import offline_profile

        profile = offline_profile(request, plan, candidate)
        if on_progress is not None:
            on_progress("prefill", len(profile.prefill), len(profile.prefill))
            on_progress("decode", len(profile.decode), len(profile.decode))
        return profile
    from steps.engines.process import EngineFailed

    opts = options or BenchOptions.from_env()
    bench = CandidateBench(request, plan, candidate, Path(workdir), opts, on_progress)
    provenance = Provenance(
        method=request.method,
        backend=request.backend,
        request_key=plan.request_key,
        estimator="builtin" if request.method == "simulate" else None,
    )  # simengine's clock
    status, reason = "ok", ""
    try:
        bench.run()
    except EngineFailed as exc:
        status, reason = ("infeasible" if exc.infeasible else "failed"), exc.reason
    except SweepFailed as exc:
        status, reason = "failed", str(exc)
        if reason.startswith("KV cache of") and " holds no " in reason:
            status = "infeasible"
    finally:
        bench.close()
        from steps.engines import sidecar

        sidecar.release()  # on Argo: the engine container may exit now, so the pod completes
    engine = bench.engine
    if engine is not None and engine.started_at is not None:
        provenance.engine_up_s = round((engine.stopped_at or time.monotonic()) - engine.started_at, 3)
    provenance.measuring_s = round(bench.measuring_s, 3)
    provenance.engine_version = bench.engine_version
    provenance.aiperf_version = bench.aiperf_version or _aiperf_version()
    provenance.finished_at = utc_now()
    if request.method == "simulate":
        provenance.engine_version = f"simengine ({request.backend} timing) {bench.engine_version or ''}".strip()
    artifacts = {"workdir": str(bench.workdir), **bench.notes}
    for i, trace in enumerate(torch_traces(bench.workdir)):
        artifacts[f"torch_trace_{i}" if i else "torch_trace"] = str(trace)
    return CandidateProfile(
        candidate=candidate,
        status=status,
        reason=reason,
        max_kv_tokens=bench.max_kv,
        prefill=bench.prefill,
        decode=bench.decode,
        agg=bench.agg,
        prefill_load=bench.prefill_load,
        provenance=provenance,
        artifacts=artifacts,
    )


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
    """DAG step `bench`: request.json + plan.json -> profiles/<candidate_id>.json (and logs, traces)."""
    from steps.plan import Plan
    from steps.request import ProfileRequest
    from steps.store import Layout, read_model, write_model

    request = read_model(store, Layout.REQUEST, ProfileRequest)
    plan = read_model(store, Layout.PLAN, Plan)
    candidate = plan.get(candidate_id).candidate
    opts = options or BenchOptions.from_env()
    workdir = Path(tempfile.mkdtemp(prefix=f"slaprof-bench-{candidate_id}-"))
    try:
        profile = measure_candidate(request, plan, candidate, workdir, on_progress, opts)
        notes = {
            k: v
            for k, v in profile.artifacts.items()
            if k != "workdir" and not k.startswith("torch_trace_") and k != "torch_trace"
        }
        profile.artifacts = {**notes, **_upload_artifacts(store, candidate_id, workdir)}
        write_model(store, Layout.profile(candidate_id), profile)
        return profile
    finally:
        if not opts.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


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
