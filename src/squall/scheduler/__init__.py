"""The scheduler: per-action queues, container decisions, and (later) alarms."""
