"""The Dynamo 1.x operator's profiling-Job entry point, answered by slaprof (steps/dynamo/dgdr_profiler.py)."""

from slaprof.steps.dynamo.dgdr_profiler import dynamo_profiler_main

if __name__ == "__main__":
    raise SystemExit(dynamo_profiler_main())
