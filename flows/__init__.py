"""One module per runbook; each reads like the runbook and owns no I/O details.

Flows import procedures, tasks, decisions, blocks and core, never another flow
(tests/unit/test_import_contract.py).
"""
