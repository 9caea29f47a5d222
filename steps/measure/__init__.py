"""Measuring for `bench`: AIPerf runs, surface points, process groups, the simulated engine."""
