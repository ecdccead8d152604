"""dtf: the command-line interface and client library for the distributed testing framework."""
