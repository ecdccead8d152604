"""`dtf run`: a pytest suite collected once, packed by recorded durations, run across workers."""
