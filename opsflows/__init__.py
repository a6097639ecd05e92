"""opsflows: an operations runbook that runs (Prefect 3 flows over real services)."""
