"""How far offline estimates land from measured deployments: the error band a report shows beside
every estimated TTFT and ITL.

The figures are `python bench/accuracy.py`'s, as the README's "Accuracy" section documents them:
for the built-in model, the held-out rows (GPUs it was not calibrated on); for AI Configurator,
the sampled aggregated rows it could estimate (`--aic 30`). A test keeps them equal to the README.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ErrorBand(BaseModel):
    """Mean absolute percentage error (MAPE) of TTFT and ITL, and the signed median TTFT error."""

    model_config = ConfigDict(frozen=True)

    estimator: str
    ttft_mape_pct: float
    itl_mape_pct: float
    ttft_median_pct: float  # < 0: estimates tend to be low
    rows: int
    basis: str

    def describe(self) -> str:
        bias = "low" if self.ttft_median_pct < 0 else "high"
        return (
            f"TTFT ±{self.ttft_mape_pct:.0f}%, ITL ±{self.itl_mape_pct:.0f}%: the mean absolute error of the "
            f"{self.estimator} estimator on {self.rows:,} measured deployments ({self.basis}); its TTFT "
            f"estimates tend to be {bias} (median {self.ttft_median_pct:+.0f}%)"
        )


HELD_OUT: dict[str, ErrorBand] = {
    "builtin": ErrorBand(
        estimator="built-in",
        ttft_mape_pct=33.9,
        itl_mape_pct=18.1,
        ttft_median_pct=-17.6,
        rows=1308,
        basis="GPUs held out of calibration: b200_sxm, gb200, b300_sxm, gb300",
    ),
    "aic": ErrorBand(
        estimator="AI Configurator",
        ttft_mape_pct=52.2,
        itl_mape_pct=18.8,
        ttft_median_pct=-54.9,
        rows=21,
        basis="sampled aggregated rows it could estimate",
    ),
}


def error_band(estimator: str | None) -> ErrorBand:
    """The band of `estimator` (builtin when not given: the simulated engine is timed by it too)."""
    return HELD_OUT.get(estimator or "builtin", HELD_OUT["builtin"])
