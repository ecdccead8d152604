"""The `dtf` command."""
