"""Executors: one module per task type, looked up through `registry.get_executor`.

This package's `__init__` imports nothing on purpose: `bench_runner` and
`pytest_progress` run inside task subprocesses, and importing the worker's gRPC
and protobuf modules there would slow every run and inflate its measured memory.
"""
