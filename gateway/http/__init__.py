"""The HTTP edge: the endpoint guard, persisted operations, health probes, GraphiQL."""
