"""Subcommands of `slaprof`; each module exposes `register(subparsers)`."""
