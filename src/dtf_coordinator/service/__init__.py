"""The service layer: proposes commands through the consensus port, reads the state
machine and the results store, publishes effects; `api/` and `rpc/` call it."""
