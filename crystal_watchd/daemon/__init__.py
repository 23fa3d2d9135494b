"""The daemon: the service's life cycle, dispatching jobs to workers, budgets, shared slots,
hooks, notifications, the state lock and systemd."""
