"""Wall-clock numbers measured end to end (engine, HTTP, AIPerf) compared with the model.

The simulated engine's exact timing is asserted on a virtual clock (tests/test_simengine.py).
End to end, a loaded machine can only stretch wall time (the engine catches up on late steps,
it never runs ahead of its schedule), so these checks bound the ratio loosely: they catch a
unit, a field or a pipeline error, never a busy CI machine.
"""

from __future__ import annotations

LOWEST = 0.8  # below the model: the engine or the measurement took a shortcut
HIGHEST = 4.0  # far above: a unit or field error, not load


def like_the_model(measured: float, modelled: float) -> bool:
    return LOWEST <= measured / modelled <= HIGHEST
