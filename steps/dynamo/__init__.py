"""Dynamo's shapes: DGD versions, the releases slaprof renders for, the DGDR profiler entry point."""
