"""Reading saved pytest-benchmark runs: history, the statistical gate, charts, the CLI.

This package reads JSON only and imports no engine, so it runs anywhere the runs are.
"""
