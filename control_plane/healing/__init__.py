"""Self-healing: signals (health, drift) that the reconciler turns into actions."""
