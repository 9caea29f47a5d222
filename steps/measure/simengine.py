"""Simulated engine: an OpenAI-compatible streaming server that behaves like a GPU engine on CPUs.

Used by `--method simulate` (started through `slaprof.steps.engines.simulated`, exactly like a real
backend) and by tests. Endpoints: `/v1/chat/completions`, `/v1/completions` (streaming or
not, `usage` when asked), `/v1/models`, `/health`, `/version`, `/metrics` (KV capacity and
load), `/tokenize` (a prompt's token count), `/start_profile` + `/stop_profile` (a small Chrome
trace of engine steps).

Timing comes from `slaprof.steps.perf.get_estimator(...)` for its (model, GPU, backend, mapping).
One engine loop runs continuous batching. A step with new prompts lasts their prefill work
(`prefill_ttft_ms(uncached tokens, prompts)` less the per-request overhead) plus the decode
step of the running requests; a pure decode step lasts `decode_itl_ms(running, mean
context)`. The per-request part of TTFT (API server, scheduling) delays a request's entry
without stalling the engine. Every modelled millisecond takes `time_scale` wall
milliseconds. Requests reserve prompt + max_tokens of KV cache when admitted; when the
cache is full they wait. Finished prompts stay in a block-level prefix cache (LRU, evicted
when space is needed), so a repeated prompt skips its prefill.

One-session sweeps (`slaprof.steps.measure.simsession`): a request may carry a `slaprof_sim` body field (`SimTag`)
saying which group of its AIPerf session it belongs to, how many requests of the simulated batch it
stands for, and its own time scale. Groups enter the engine in order, each one whole (or, for a closed
loop, its first wave together and the rest as they come), after every request of the groups before it
has finished; so the points of a whole sweep can be sent by one
AIPerf run without overlapping, and thousands of concurrent requests cost a few HTTP streams.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger("simengine")
BLOCK_TOKENS = 16  # prefix-cache granularity, as vLLM's default block size
DEFAULT_MAX_TOKENS = 16
DEFAULT_ADMIT_TOKENS = 8192  # new prompt tokens admitted per step when the engine is given no budget
SIM_FIELD = "slaprof_sim"  # request body field holding a SimTag
# a group whose requests have not all arrived this long after its first one enters without the rest
# (a request AIPerf never sent must not stall the session)
GANG_WAIT_S = 10.0
TOKEN_CACHE_ENTRIES = 2048  # prompts whose token counts and block hashes are kept (see /tokenize)


class SimTag(BaseModel):
    """What a one-session sweep tells the simulated engine about one request (body field `slaprof_sim`)."""

    session: str = Field(..., description="the AIPerf session; groups are numbered within it from 0")
    group: int = Field(..., ge=0, description="enters after every request of groups < group has finished")
    size: int = Field(..., ge=1, description="requests in the group; the group ends when all have finished")
    gang: int | None = Field(
        None, ge=1, description="requests that enter together, the group's first wave (default: all of them)"
    )
    weight: int = Field(1, ge=1, description="requests of the simulated batch this request stands for")
    time_scale: float | None = Field(None, ge=0, description="wall ms per modelled ms (0: no wall time)")


# ---------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------
class TokenCounter:
    """Token ids of prompts and one stable single-token word to stream as output."""

    def __init__(self, tokenizer_dir: str | None) -> None:
        self._tok = None
        self._cache: OrderedDict[str, tuple[int, list[str]]] = OrderedDict()
        self.word = " the"
        if tokenizer_dir:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
            for word in (" the", " and", " of", " a", " I", " to"):
                if len(self._tok.encode(word * 3, add_special_tokens=False).ids) == 3:
                    self.word = word
                    break

    def ids(self, text: str) -> list[int]:
        if self._tok is not None:
            return self._tok.encode(text, add_special_tokens=False).ids
        # no tokenizer: ~4 characters a token, ids from the characters themselves
        return [int.from_bytes(text[i : i + 4].encode()[:8].ljust(8, b"\0"), "little") for i in range(0, len(text), 4)]

    def count_and_blocks(self, text: str) -> tuple[int, list[str]]:
        """Token count and prefix-cache block hashes of a prompt; a sweep sends each prompt several
        times (warm-up, then measured), and long prompts cost milliseconds to tokenize."""
        hit = self._cache.get(text)
        if hit is None:
            ids = self.ids(text)
            hit = self._cache[text] = (len(ids), block_hashes(ids))
            if len(self._cache) > TOKEN_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        self._cache.move_to_end(text)
        return hit


def block_hashes(ids: list[int]) -> list[str]:
    """Chained hashes of the full BLOCK_TOKENS blocks of a prompt (a block depends on all before it)."""
    out, prev = [], ""
    for start in range(0, len(ids) - len(ids) % BLOCK_TOKENS, BLOCK_TOKENS):
        prev = hashlib.blake2b(
            (prev + ",".join(map(str, ids[start : start + BLOCK_TOKENS]))).encode(), digest_size=12
        ).hexdigest()
        out.append(prev)
    return out


# ---------------------------------------------------------------------------
# engine
# ---------------------------------------------------------------------------
@dataclass
class SimRequest:
    prompt_tokens: int
    blocks: list[str]
    max_tokens: int
    out: asyncio.Queue = field(default_factory=asyncio.Queue)  # token count per step, None at the end
    cached_tokens: int = 0
    generated: int = 0
    prefilled: bool = False
    received: float | None = None  # event-loop time the HTTP request came in
    entry: float = 0.0  # event-loop time it enters the engine (modelled: received + overhead)
    tag: SimTag | None = None

    @property
    def weight(self) -> int:
        return self.tag.weight if self.tag else 1

    @property
    def reserve(self) -> int:
        return (self.prompt_tokens + self.max_tokens) * self.weight

    @property
    def context(self) -> int:
        return self.prompt_tokens + self.generated


class PrefixCache:
    """Blocks of finished prompts, least recently used first; they only occupy free KV space."""

    def __init__(self) -> None:
        self.blocks: OrderedDict[str, None] = OrderedDict()

    def hit_tokens(self, blocks: list[str]) -> int:
        n = 0
        for b in blocks:
            if b not in self.blocks:
                break
            self.blocks.move_to_end(b)
            n += 1
        return n * BLOCK_TOKENS

    def add(self, blocks: list[str]) -> None:
        for b in blocks:
            self.blocks[b] = None
            self.blocks.move_to_end(b)

    def tokens(self) -> int:
        return len(self.blocks) * BLOCK_TOKENS

    def evict_to(self, max_tokens: int) -> None:
        while self.blocks and self.tokens() > max_tokens:
            self.blocks.popitem(last=False)


class GroupBarrier:
    """The groups of one session enter in order, each whole (see SimTag)."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.gangs: dict[int, int] = {}  # requests that must have arrived before the group enters
        self.arrived: dict[int, int] = {}
        self.done: dict[int, int] = {}
        self.first_arrival: dict[int, float] = {}
        self.next = 0  # lowest group not finished

    def arrive(self, tag: SimTag, now: float) -> None:
        self.sizes[tag.group] = tag.size
        self.gangs[tag.group] = min(tag.gang or tag.size, tag.size)
        self.arrived[tag.group] = self.arrived.get(tag.group, 0) + 1
        self.first_arrival.setdefault(tag.group, now)

    def finish(self, tag: SimTag, now: float) -> None:
        self.done[tag.group] = self.done.get(tag.group, 0) + 1
        self.advance(now)

    def _gang_expired(self, group: int, now: float) -> bool:
        return group in self.first_arrival and now - self.first_arrival[group] >= GANG_WAIT_S

    def advance(self, now: float) -> None:
        while self.next in self.sizes:
            g = self.next
            done, arrived = self.done.get(g, 0), self.arrived.get(g, 0)
            if done < self.sizes[g] and not (self._gang_expired(g, now) and done == arrived):
                return
            self.next += 1

    def admits(self, group: int, now: float) -> bool:
        if group != self.next:
            return group < self.next  # a straggler of a group that went ahead without it
        return self.arrived.get(group, 0) >= self.gangs[group] or self._gang_expired(group, now)

    def wait_s(self, now: float) -> float | None:
        """Seconds until the current group's gang wait ends, when it has come in part."""
        g = self.next
        if g not in self.first_arrival or self.arrived.get(g, 0) >= self.gangs[g]:
            return None
        return max(0.0, self.first_arrival[g] + GANG_WAIT_S - now)


class Engine:
    """Continuous batching with modelled step times, a KV-cache limit and a prefix cache."""

    def __init__(
        self,
        estimator: Any,
        max_kv_tokens: int,
        *,
        time_scale: float = 1.0,
        prefix_caching: bool = True,
        max_batched_tokens: int = DEFAULT_ADMIT_TOKENS,
    ) -> None:
        self.est = estimator
        self.max_kv_tokens = max_kv_tokens
        self.time_scale = time_scale
        self.prefix_caching = prefix_caching
        self.max_batched_tokens = max_batched_tokens
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.cache = PrefixCache()
        self.reserved = 0
        self.steps = 0
        self._wake = asyncio.Event()
        self.trace: list[dict[str, Any]] | None = None  # Chrome trace events while profiling
        self._t0 = time.monotonic()
        self._overhead_ms: float | None = None
        self.barriers: dict[str, GroupBarrier] = {}

    def scale_of(self, req: SimRequest) -> float:
        scale = req.tag.time_scale if req.tag else None
        return self.time_scale if scale is None else scale

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def admit_later(self, req: SimRequest) -> None:
        """Enter the engine the per-request overhead (see request_overhead_ms) after it came in."""
        now = self._now()
        req.entry = (now if req.received is None else req.received) + self.request_overhead_ms * self.scale_of(
            req
        ) / 1e3
        await asyncio.sleep(max(0.0, req.entry - now))
        self.submit(req)

    def check(self, req: SimRequest) -> None:
        if req.reserve > self.max_kv_tokens:
            raise ValueError(f"request needs {req.reserve} KV tokens; the engine holds {self.max_kv_tokens}")

    def submit(self, req: SimRequest) -> None:
        self.check(req)
        if req.tag is not None:
            self.barriers.setdefault(req.tag.session, GroupBarrier()).arrive(req.tag, self._now())
        self.waiting.append(req)
        self._wake.set()

    def refused(self, tag: SimTag | None) -> None:
        """A tagged request answered with an error counts as arrived and finished, so its group can end."""
        if tag is not None:
            barrier = self.barriers.setdefault(tag.session, GroupBarrier())
            barrier.arrive(tag, self._now())
            barrier.finish(tag, self._now())
            self._wake.set()

    def _held(self, req: SimRequest, now: float) -> bool:
        return req.tag is not None and not self.barriers[req.tag.session].admits(req.tag.group, now)

    def _admit(self) -> list[SimRequest]:
        admitted: list[SimRequest] = []
        budget, now = self.max_batched_tokens, self._now()
        for barrier in self.barriers.values():
            barrier.advance(now)  # a gang wait may have run out since the last step
        for req in [r for r in self.waiting if not self._held(r, now)]:
            if self.reserved + req.reserve > self.max_kv_tokens:
                break
            if self.prefix_caching:
                req.cached_tokens = min(self.cache.hit_tokens(req.blocks), req.prompt_tokens - 1)
            new = (req.prompt_tokens - req.cached_tokens) * req.weight
            if admitted and new > budget:
                break
            self.waiting.remove(req)
            self.reserved += req.reserve
            budget -= new
            admitted.append(req)
        # cached blocks live only in KV space nobody reserved
        self.cache.evict_to(max(0, self.max_kv_tokens - self.reserved))
        return admitted

    def _idle_timeout(self) -> float | None:
        """How long the loop may sleep with nothing to run: until a held group's gang wait ends."""
        now = self._now()
        waits = [w for b in self.barriers.values() if (w := b.wait_s(now)) is not None]
        return min(waits) if waits else None

    @property
    def request_overhead_ms(self) -> float:
        """Per-request time outside the engine loop (API server, tokenization, scheduling).

        The estimator's TTFT includes it; a one-token prefill step costs about one decode step,
        so the rest of a one-token TTFT is this overhead. It delays a request's entry into the
        engine but never blocks the engine's steps (other requests keep decoding meanwhile).
        """
        if self._overhead_ms is None:
            self._overhead_ms = max(0.0, float(self.est.prefill_ttft_ms(1, 1)) - float(self.est.decode_itl_ms(1, 1)))
        return self._overhead_ms

    def step_ms(self, prefills: list[SimRequest], decodes: list[SimRequest]) -> float:
        """Modelled length of one step; a request of weight w counts as w requests of the batch."""
        ms = 0.0
        if prefills:
            prompts = sum(r.weight for r in prefills)
            new = sum((r.prompt_tokens - r.cached_tokens) * r.weight for r in prefills)
            ttft = float(self.est.prefill_ttft_ms(max(1, round(new / prompts)), prompts))
            ms += max(0.0, ttft - self.request_overhead_ms)
        if decodes:
            batch = sum(r.weight for r in decodes)
            ctx = sum(r.context * r.weight for r in decodes) / batch
            ms += float(self.est.decode_itl_ms(batch, ctx))
        return ms

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            prefills = self._admit()
            decodes = list(self.running)
            if not prefills and not decodes:  # idle, or every waiting request is held by its group
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._idle_timeout())
                except TimeoutError:
                    pass
                continue
            ms = self.step_ms(prefills, decodes)
            # the slowest clock of the step's requests (a one-session sweep runs one point at a time)
            scale = max(self.scale_of(r) for r in prefills + decodes)
            # Steps follow a schedule, not the wall clock: a late wake-up shortens the next steps (the
            # schedule catches up), so a busy CPU does not stretch modelled steps, and a stall of the
            # event loop does not add to every running request's ITL. A step that admits requests
            # starts when the last of them entered (modelled), if the engine was free then: the
            # simulator's own work on a request (reading, tokenizing a long prompt) is not the
            # modelled engine's and does not count in its TTFT. It starts no earlier than one step
            # ago, though: the steps after it would otherwise come in a burst of catching up.
            start = deadline
            if prefills:
                start = max(deadline, max(r.entry for r in prefills), loop.time() - ms * scale / 1e3)
            deadline = start + ms * scale / 1e3
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            self.steps += 1
            if self.trace is not None:
                self.trace.append(
                    {
                        "name": "prefill+decode" if prefills else "decode",
                        "ph": "X",
                        "pid": 0,
                        "tid": 0,
                        "ts": (start - self._t0) * 1e6,
                        "dur": ms * scale * 1e3,
                        "args": {"prefills": len(prefills), "decodes": len(decodes)},
                    }
                )
            for req in prefills:
                req.prefilled = True
                self.running.append(req)
            for req in prefills + decodes:
                req.generated += 1
                req.out.put_nowait(1)
                if req.generated >= req.max_tokens:
                    self._finish(req)

    def _finish(self, req: SimRequest) -> None:
        self.running.remove(req)
        self.reserved -= req.reserve
        if self.prefix_caching:
            self.cache.add(req.blocks)
            self.cache.evict_to(max(0, self.max_kv_tokens - self.reserved))
        if req.tag is not None:
            self.barriers[req.tag.session].finish(req.tag, self._now())
        req.out.put_nowait(None)


# ---------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------
def _prompt_text(body: dict[str, Any], chat: bool) -> str:
    if not chat:
        prompt = body.get("prompt", "")
        return "".join(prompt) if isinstance(prompt, list) else str(prompt)
    parts = []
    for msg in body.get("messages") or []:
        content = msg.get("content", "")
        if isinstance(content, list):
            content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
        parts.append(str(content))
    return "\n".join(parts)


class SimServer:
    def __init__(self, args: argparse.Namespace, engine: Engine, tokens: TokenCounter) -> None:
        self.args, self.engine, self.tokens = args, engine, tokens
        self.name = args.served_model_name or args.model
        self.profile_dir = args.profile_dir

    def app(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/start_profile", self.start_profile)
        app.router.add_post("/stop_profile", self.stop_profile)
        return app

    async def health(self, request):
        from aiohttp import web

        return web.Response(text="")

    async def version(self, request):
        from aiohttp import web

        return web.json_response({"version": _version()})

    async def models(self, request):
        from aiohttp import web

        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": self.name, "object": "model", "owned_by": "slaprof", "max_model_len": self.args.max_context}
                ],
            }
        )

    async def metrics(self, request):
        from aiohttp import web

        e = self.engine
        lines = [
            "# HELP simengine:max_total_num_tokens KV-cache capacity of the engine, tokens",
            "# TYPE simengine:max_total_num_tokens gauge",
            f'simengine:max_total_num_tokens{{model_name="{self.name}"}} {e.max_kv_tokens}',
            "# TYPE simengine:num_requests_running gauge",
            f'simengine:num_requests_running{{model_name="{self.name}"}} {len(e.running)}',
            "# TYPE simengine:num_requests_waiting gauge",
            f'simengine:num_requests_waiting{{model_name="{self.name}"}} {len(e.waiting)}',
            "# TYPE simengine:kv_cache_usage_perc gauge",
            f'simengine:kv_cache_usage_perc{{model_name="{self.name}"}} {e.reserved / max(1, e.max_kv_tokens):.6f}',
            "# TYPE simengine:steps_total counter",
            f'simengine:steps_total{{model_name="{self.name}"}} {e.steps}',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def start_profile(self, request):
        from aiohttp import web

        if not self.profile_dir:
            return web.json_response({"error": "profiling needs --profile-dir at start-up"}, status=400)
        self.engine.trace = []
        return web.Response(text="Profiling started")

    async def stop_profile(self, request):
        from aiohttp import web

        if self.engine.trace is None:
            return web.json_response({"error": "profiling was not started"}, status=400)
        events, self.engine.trace = self.engine.trace, None
        out = Path(self.profile_dir) / f"simengine-trace-{int(time.time() * 1000)}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
        return web.Response(text=f"Profiling stopped: {out}")

    async def tokenize(self, request):
        """Token count of a prompt (as vLLM's /tokenize); it stays cached, so a sweep that tokenizes its
        prompts ahead keeps this work out of the measured requests."""
        from aiohttp import web

        try:
            body = await request.json()
        except (json.JSONDecodeError, ValueError):
            return _invalid("body is not JSON")
        n_tokens, _ = self.tokens.count_and_blocks(_prompt_text(body, "messages" in body))
        return web.json_response({"count": n_tokens, "max_model_len": self.args.max_context})

    async def chat(self, request):
        return await self._complete(request, chat=True)

    async def completions(self, request):
        return await self._complete(request, chat=False)

    async def _complete(self, request, chat: bool):
        from aiohttp import web

        received = asyncio.get_running_loop().time()
        try:
            body = await request.json()
        except (json.JSONDecodeError, ValueError):
            return _invalid("body is not JSON")
        try:
            tag = SimTag.model_validate(body[SIM_FIELD]) if SIM_FIELD in body else None
        except ValidationError as exc:
            return _invalid(f"{SIM_FIELD}: {str(exc).splitlines()[0]}")
        n_tokens, blocks = self.tokens.count_and_blocks(_prompt_text(body, chat))
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS)
        if self.args.max_context and n_tokens + max_tokens > self.args.max_context:
            self.engine.refused(tag)
            return _invalid(
                f"prompt ({n_tokens}) + max_tokens ({max_tokens}) exceeds the context length {self.args.max_context}"
            )
        req = SimRequest(
            prompt_tokens=max(1, n_tokens), blocks=blocks, max_tokens=max(1, max_tokens), received=received, tag=tag
        )
        try:
            self.engine.check(req)
        except ValueError as exc:
            self.engine.refused(tag)
            return _invalid(str(exc))
        asyncio.get_running_loop().create_task(self.engine.admit_later(req))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        created = int(time.time())

        def usage() -> dict[str, Any]:  # cached tokens are known once the request is admitted
            return {
                "prompt_tokens": req.prompt_tokens,
                "completion_tokens": req.max_tokens,
                "total_tokens": req.prompt_tokens + req.max_tokens,
                "prompt_tokens_details": {"cached_tokens": req.cached_tokens},
            }

        obj = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            while await req.out.get() is not None:
                pass
            text = self.tokens.word * req.max_tokens
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                if chat
                else {"index": 0, "text": text, "finish_reason": "length"}
            )
            return web.json_response(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": self.name,
                    "choices": [choice],
                    "usage": usage(),
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"
        sent = 0
        while (n := await req.out.get()) is not None:
            sent += n
            last = sent >= req.max_tokens
            piece = self.tokens.word * n
            if chat:
                delta = {"content": piece} if sent > n else {"role": "assistant", "content": piece}
                choice = {"index": 0, "delta": delta, "finish_reason": "length" if last else None}
            else:
                choice = {"index": 0, "text": piece, "finish_reason": "length" if last else None}
            chunk = {"id": rid, "object": chunk_obj, "created": created, "model": self.name, "choices": [choice]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if include_usage:
            final = {
                "id": rid,
                "object": chunk_obj,
                "created": created,
                "model": self.name,
                "choices": [],
                "usage": usage(),
            }
            await resp.write(b"data: " + json.dumps(final).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _invalid(message: str) -> Any:
    from aiohttp import web

    return web.json_response({"error": {"message": message, "type": "invalid_request"}}, status=400)


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"slaprof-{version('slaprof')}"
    except Exception:  # not installed as a distribution
        return "slaprof-dev"


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------
def driving_estimator(
    model: str,
    gpu: str,
    emulate: str,
    mapping: str,
    estimator: str = "builtin",
    quantization: str = "auto",
    kv_cache_dtype: str = "auto",
    step_tokens: int | None = None,
) -> Any:
    """The performance model that times the engine's steps (the bench checks its points against it),
    for the model as the engine is told to run it (`--quantization`, `--kv-cache-dtype`, and
    `--max-batched-tokens` as its step budget when given)."""
    from slaprof.steps.core.candidates import Candidate
    from slaprof.steps.perf import get_estimator
    from slaprof.steps.specs.gpus import get_gpu
    from slaprof.steps.specs.models import apply_overrides, load_model_info

    info = apply_overrides(load_model_info(model), quantization, kv_cache_dtype)
    return get_estimator(info, get_gpu(gpu), emulate, Candidate.parse(mapping), estimator, step_tokens)


def build_engine(args: argparse.Namespace) -> tuple[Engine, int]:
    est = driving_estimator(
        args.model,
        args.gpu,
        args.emulate,
        args.mapping,
        args.estimator,
        args.quantization,
        args.kv_cache_dtype,
        args.max_batched_tokens,
    )
    max_kv = args.max_kv_tokens or int(est.max_kv_tokens())
    engine = Engine(
        est,
        max_kv,
        time_scale=args.time_scale,
        prefix_caching=args.prefix_caching,
        max_batched_tokens=args.max_batched_tokens or DEFAULT_ADMIT_TOKENS,
    )
    return engine, max_kv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m slaprof.steps.measure.simengine", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model directory (config.json) or Hugging Face id")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--mapping", default="tp1", help="parallel mapping id: tpN, tepN, depN")
    p.add_argument("--gpu", default="h100_sxm")
    p.add_argument("--emulate", default="vllm", help="backend whose timing constants to use")
    p.add_argument("--estimator", default="builtin")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (tokenizer.json) for token counts")
    p.add_argument("--time-scale", type=float, default=1.0, help="wall ms per modelled ms")
    p.add_argument("--startup-s", type=float, default=0.0, help="simulated start-up time before serving")
    p.add_argument("--no-prefix-caching", dest="prefix_caching", action="store_false")
    p.add_argument(
        "--max-batched-tokens",
        type=int,
        default=None,
        help=f"prompt tokens per step (default: {DEFAULT_ADMIT_TOKENS} admitted, the backend's own chunk timed)",
    )
    p.add_argument("--max-context", type=int, default=0)
    p.add_argument("--max-kv-tokens", type=int, default=0, help="override the modelled KV capacity")
    p.add_argument("--quantization", default="auto", choices=("auto", "bf16", "fp8", "fp4"), help="weights as served")
    p.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "bf16", "fp8"), help="KV cache as served")
    p.add_argument("--profile-dir", default=None, help="enables /start_profile and /stop_profile")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    engine, max_kv = build_engine(args)
    log.info(
        "simengine version %s: %s as %s on %s, mapping %s, time scale %g",
        _version(),
        args.model,
        args.emulate,
        args.gpu,
        args.mapping,
        args.time_scale,
    )
    log.info("KV cache capacity: %s tokens", f"{max_kv:,}")
    if args.startup_s > 0:  # weights loading and graph capture: the port is not open yet
        await asyncio.sleep(args.startup_s)
    server = SimServer(args, engine, TokenCounter(args.tokenizer))
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    log.info("simengine ready on http://%s:%d", args.host, args.port)
    try:
        await engine.run()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
