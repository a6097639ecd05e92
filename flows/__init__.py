"""One module per runbook; each reads like the runbook and owns no I/O details."""
