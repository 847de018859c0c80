"""Operations: liveness, readiness and Prometheus metrics for one Squall process.

Submodules are imported where used: the invoker and scheduler import `ops.counters`, and
`ops.readiness` imports them, so this package re-exports nothing.
"""
