"""pytest inside dtf: what a worker's pytest batches and `dtf run`'s own session share.

- `reports`: the plugin every batch's pytest loads (`-p dtf_pytest.reports`): selects
  the batch's tests by node id, writes each test's serialised reports as a line, plays
  an xdist worker, yields on request.
- `cases`: reads those lines back (pure).
- `server`: a warm pytest process that has collected a suite and forks each batch from
  inside its session; `redirect_output` points a forked batch's output at its logs.
- `output`: a running batch's stdout and stderr, read as they grow (live output, `-s`).
- `xdist`: pytest-xdist's options, switched off in sessions dtf distributes itself.

The worker's pytest executor (`dtf_worker.executors.pytest_batch`, with its pool of
warm servers) and the run's session (`dtf.run`, whose head start forks a batch of its
own) both build on these; this package imports neither of them.
"""
