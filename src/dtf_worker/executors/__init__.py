"""Executors: one module per task type, given to the worker's task runner in a registry
(`registry.default_executors`).

This package's `__init__` imports nothing on purpose: `bench_runner` and
`pytest_progress` run inside task subprocesses, and importing the worker's gRPC
and protobuf modules there would slow every run and inflate its measured memory.
"""
