"""A simulated candidate's whole sweep in one AIPerf run (`--method simulate`).

Each AIPerf run costs ~10 s and ~12 CPU-seconds to start; one run per point made the default
simulated profile of a small model take over an hour on 2 cores. Here one run sends every point.
Its trace has one conversation per request stream; a conversation's turns are that stream's
requests, point after point, each sent when the one before it has its response. Every request
carries a `SimTag`, and the simulated engine admits the groups of the session one at a time, each
one whole, after every request of the groups before it has finished (`simengine.GroupBarrier`):
points never overlap, whatever the machine's speed.

prefill  per ISL, `repeats` groups of attn_dp fresh prompts (one per rank) entering an idle engine;
closed loop (aggregated points; a prefill engine under load) per concurrency c: min(c, load_streams)
         streams whose weights add up to c, each sending `rounds` fresh prompts one after the other in one
         group whose first wave enters together and whose later requests enter as they are sent, as in
         a closed loop; the first wave is not measured (it arrives at an idle engine).
decode   per (ISL, concurrency): a warm-up group (the streams' prompts with one output token at time
         scale 0: they fill the prefix cache and take no wall time), then the measured group:
         min(concurrency, streams) requests whose weights add up to the concurrency, so a point
         of 2,000 concurrent requests is a few HTTP streams, each `measure_osl` tokens long, with
         prompts of context - measure_osl/2 tokens so that the steady window decodes at the
         point's mean context (isl + osl/2).

Latency floor: after the opening of the streams whose TTFT is measured, a probe group sends
PROBE_ROUNDS one-token requests per stream at time scale 0: they take no modelled time, so their
TTFT is the wall latency of HTTP, AIPerf and the server (a few ms). It is not the modelled engine's
and does not scale with it; the bench takes it out of every TTFT before rescaling (at time scale 10
a 6 ms modelled TTFT lasts 60 wall ms, and 9 ms of latency would read as 15% slow).

Time scale, per point: the one given, or one that makes the measured quantity last a fixed time on
the wall clock: long enough to be measured over HTTP (a modelled decode step of a tiny model is
~2 ms; the engine, AIPerf and HTTP add a millisecond or more of jitter), and no longer, so a long
modelled step runs faster than real time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from slaprof.steps.measure.loadgen import RequestRecord, TraceEntry
from slaprof.steps.measure.simengine import SIM_FIELD, SimTag

MEASURE_OSL = 12  # output tokens of a measured decode request: 11 steady steps per stream
STREAMS = 8  # most HTTP streams of one decode point
PROBE_ROUNDS = 3  # zero-time requests per TTFT stream measuring the latency floor
LOAD_STREAMS = 16  # most HTTP streams of one closed-loop point (enough to stagger its requests)
DECODE_STEP_WALL_MS = 20.0  # auto time scale: a decode step lasts this long on the wall clock
LOAD_STEP_WALL_MS = 4.0  # ... a closed-loop point's step (its ITL is averaged over a whole output)
PREFILL_WALL_MS = 150.0  # ... and a TTFT this long (measured once per request, not over many steps)
AUTO_SCALES = (0.01, 1000.0)  # bounds of a chosen time scale


def auto_time_scale(modelled_ms: float, wall_ms: float) -> float:
    """The time scale that makes `modelled_ms` last `wall_ms` on the wall clock."""
    low, high = AUTO_SCALES
    return min(high, max(low, wall_ms / max(modelled_ms, 1e-9)))


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal positive integers (the weights of a point's streams)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class SessionPoint:
    """One point of the session and the records that have come back for it."""

    phase: SessionPhase
    isl: int
    concurrency: int  # decode, closed loop: the point's concurrency; prefill: requests per group (attn_dp)
    context: int  # decode: mean context while decoding
    scale: float
    osl: int = 1  # closed loop: output tokens of each request
    requests: int = 0  # requests in the trace (warm-up and measured)
    measured: list[RequestRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seen: int = 0
    counted: bool = True  # False: a request that only prepares the session (not a point)

    @property
    def complete(self) -> bool:
        return self.seen >= self.requests


SessionPhase = Literal["prefill", "decode", "agg", "prefill_load", "probe"]
PromptFn = Callable[[int, str], str]  # (tokens, unique tag) -> prompt text


class SessionPlan:
    """The trace of one AIPerf run covering many points, and the bookkeeping of its records."""

    def __init__(
        self, session: str, prompt: PromptFn, streams: int = STREAMS, load_streams: int = LOAD_STREAMS
    ) -> None:
        self.session = session
        self.prompt = prompt
        self.streams = streams
        self.load_streams = load_streams
        self.entries: list[TraceEntry] = []
        self.points: list[SessionPoint] = []
        self._turns: dict[tuple[str, int], tuple[SessionPoint, bool]] = {}  # (conversation, turn) -> point, measured
        self._next_turn: dict[str, int] = {}
        self._group = 0
        self._decode_prompts: dict[tuple[int, int], str] = {}

    @property
    def conversations(self) -> int:
        return len(self._next_turn)

    @property
    def concurrency(self) -> int:
        """Every conversation in flight at once: a held turn must never keep another from being sent."""
        return max(1, self.conversations)

    def _group_of(
        self,
        point: SessionPoint,
        requests: list[tuple[str, str, int, int, float]],
        measured: bool | list[bool],
        gang: int | None = None,
    ) -> None:
        """Append one group: (conversation, prompt, output tokens, weight, time scale) per request;
        `measured` for all of them or per request; `gang`: see SimTag."""
        for i, (conversation, text, osl, weight, scale) in enumerate(requests):
            tag = SimTag(
                session=self.session, group=self._group, size=len(requests), gang=gang, weight=weight, time_scale=scale
            )
            turn = self._next_turn.get(conversation, 0)
            self._next_turn[conversation] = turn + 1
            self._turns[(conversation, turn)] = (point, measured if isinstance(measured, bool) else measured[i])
            self.entries.append(
                TraceEntry(
                    messages=[{"role": "user", "content": text}],
                    output_length=osl,
                    session_id=conversation,
                    extra={SIM_FIELD: tag.model_dump(exclude_none=True)},
                )
            )
        point.requests += len(requests)
        self._group += 1

    def add_prefill(self, isl: int, repeats: int, ranks: int, osl: int, scale: float) -> None:
        """`repeats` groups of `ranks` fresh `isl`-token prompts (DEP: one per attention-DP rank)."""
        point = SessionPoint("prefill", isl, ranks, 0, scale)
        self._open([f"p{r}" for r in range(ranks)], probe=True)
        self.points.append(point)
        for rep in range(repeats):
            texts = [self.prompt(isl, f"{rep * ranks + r} {isl} {self.session} prefill") for r in range(ranks)]
            self._group_of(point, [(f"p{r}", texts[r], osl, 1, scale) for r in range(ranks)], measured=True)

    def _open(self, conversations: list[str], probe: bool = False) -> None:
        """A conversation's first request pays for AIPerf's and the connection's first use: a group of
        one-token requests, taking no modelled time, opens the conversations not used yet; with
        `probe`, the first such conversations then measure the latency floor (see above)."""
        new = [c for c in conversations if c not in self._next_turn]
        if not new:
            return
        opening = SessionPoint("prefill", 0, len(new), 0, 0.0, counted=False)
        texts = [self.prompt(4, f"{c} {self.session} opening") for c in new]
        self._group_of(opening, [(c, t, 1, 1, 0.0) for c, t in zip(new, texts)], measured=False)
        if probe and not any(p.phase == "probe" for p in self.points):
            point = SessionPoint("probe", 0, len(new), 0, 0.0)
            self.points.append(point)
            for r in range(PROBE_ROUNDS):
                texts = [self.prompt(4, f"{c} {r} {self.session} probe") for c in new]
                self._group_of(point, [(c, t, 1, 1, 0.0) for c, t in zip(new, texts)], measured=True)

    def add_closed_loop(
        self, phase: SessionPhase, isl: int, concurrency: int, osl: int, rounds: int, scale: float
    ) -> None:
        """`concurrency` requests in flight, each slot sending `rounds` fresh `isl`-token prompts one
        after the other; the first wave (one per slot) is not measured."""
        point = SessionPoint(phase, isl, concurrency, isl + osl // 2, scale, osl=osl)
        weights = split(concurrency, min(concurrency, self.load_streams))
        streams = [f"l{j}" for j in range(len(weights))]
        self._open(streams, probe=True)
        self.points.append(point)
        requests, measured = [], []
        for r in range(rounds):
            for j, (stream, w) in enumerate(zip(streams, weights)):
                text = self.prompt(isl, f"{r * len(weights) + j} {isl} {self.session} {phase}{concurrency}")
                requests.append((stream, text, osl, w, scale))
                measured.append(r > 0)
        self._group_of(point, requests, measured, gang=len(weights))

    def add_decode(self, isl: int, concurrency: int, context: int, osl: int, scale: float) -> None:
        """Warm-up group, then the measured group of min(concurrency, streams) weighted requests."""
        point = SessionPoint("decode", isl, concurrency, context, scale)
        self.points.append(point)
        weights = split(concurrency, min(concurrency, self.streams))
        tokens = max(1, context - osl // 2)
        texts = [self._decode_prompt(j, isl, tokens) for j in range(len(weights))]
        self._group_of(point, [(f"d{j}", t, 1, 1, 0.0) for j, t in enumerate(texts)], measured=False)
        self._group_of(point, [(f"d{j}", t, osl, w, scale) for j, (t, w) in enumerate(zip(texts, weights))], True)

    def _decode_prompt(self, stream: int, isl: int, tokens: int) -> str:
        """Each stream's prompt of a context is shared by all its concurrencies (the first ones warm)."""
        key = (stream, isl)
        if key not in self._decode_prompts:
            self._decode_prompts[key] = self.prompt(tokens, f"{stream} {isl} {self.session} decode")
        return self._decode_prompts[key]

    def prompts(self) -> list[str]:
        """Every distinct prompt of the trace."""
        return list(dict.fromkeys(e.messages[0]["content"] for e in self.entries if e.messages))

    def feed(self, records: list[RequestRecord]) -> list[SessionPoint]:
        """Take AIPerf's records as they come; returns the points whose every request is now back."""
        done = []
        for rec in records:
            if rec.phase != "profiling" or rec.conversation_id is None or rec.turn_index is None:
                continue
            found = self._turns.pop((rec.conversation_id, rec.turn_index), None)
            if found is None:
                continue
            point, measured = found
            point.seen += 1
            if rec.error:
                point.errors.append(rec.error)
            elif measured:
                point.measured.append(rec)
            if point.complete and point.counted:
                done.append(point)
        return done

    def unfinished(self) -> list[SessionPoint]:
        return [p for p in self.points if not p.complete]
