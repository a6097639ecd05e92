"""Sub-procedures several runbooks share: the operation log and notifications, the change
slot, releasing to an environment and rolling back, restore-and-verify, the migration plan,
the backup. Flows import these (never another flow); these import tasks, decisions, blocks
and core only (tests/unit/test_import_contract.py)."""

from procedures.run_overhead import install as _install_without_join

_install_without_join()
