"""dtf_coordinator package."""
