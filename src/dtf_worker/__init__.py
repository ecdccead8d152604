"""dtf worker daemon: fingerprints its hardware, leases tasks from a coordinator, runs
them in isolated process groups and spools outcomes to disk until acknowledged.

Entry points live in `dtf_worker.daemon` (`WorkerDaemon`, `run_worker`, `main`). This
module imports nothing so that task subprocesses importing `dtf_worker.executors.*`
helpers stay light.
"""
