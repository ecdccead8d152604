"""gRPC edge of the coordinator: the WorkerService servicer and error mapping."""
