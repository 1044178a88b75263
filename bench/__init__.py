"""The benchmark suite behind ``make bench`` / ``make bench-quick`` (entry point: :mod:`bench.run`).

Every benchmark runs in its own child process (so its CPU time and peak RSS are its own), against a
fresh database cloned from a migrated template on an embedded PostgreSQL, with the fake OpenAI-compatible
server running as yet another process.
"""
