"""Choosing for `fit`: whole deployments, interpolation, the planner data, confidence and interval checks, the report and plots."""
