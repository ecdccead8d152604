"""dtf_worker package."""
