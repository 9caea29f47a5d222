"""The local runner: the whole DAG on one machine (`slaprof profile`), its run lock and progress."""
