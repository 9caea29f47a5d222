"""The `slaprof` command line: `main` (the dispatcher and the request options every subcommand shares) and `commands/`, one module per subcommand."""
