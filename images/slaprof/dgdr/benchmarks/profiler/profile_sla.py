"""The Dynamo 0.7-0.9 operator's profiling-Job entry point, answered by slaprof (steps/dynamo/dgdr_profiler.py)."""

from slaprof.steps.dynamo.dgdr_profiler import profile_sla_main

if __name__ == "__main__":
    raise SystemExit(profile_sla_main())
