"""The Dynamo 0.7-0.9 operator's profiling-Job entry point, answered by slaprof (steps/dgdr_profiler.py)."""

from steps.dgdr_profiler import profile_sla_main

if __name__ == "__main__":
    raise SystemExit(profile_sla_main())
