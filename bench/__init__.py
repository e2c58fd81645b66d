"""Benchmarks, each a script run as `.venv/bin/python bench/<name>.py` whose last line is `RESULT key=value ...`."""
