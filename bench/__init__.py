"""Benchmarks of aifactory against the bare systems (slurmrestd, the model server) and a peer (LiteLLM's proxy).

`make bench` (or `python3 -m bench`) runs them on the local stack; docs/performance.md says how and what they found.
"""
