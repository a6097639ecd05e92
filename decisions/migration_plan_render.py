"""The migration plan for people (the ``migration-plan`` artifact and ``opsflows migrate
plan``): per pending file its mode, each statement's lock, its findings, and how the files are
grouped into units applied all-or-nothing. Statement text is shown scrubbed
(:attr:`decisions.sql_locks.Statement.head`): a ``PASSWORD '…'`` literal never appears.
"""

from __future__ import annotations

from decisions.migrations import Plan


def render_plan(plan: Plan, *, markdown: bool = False) -> str:
    """The plan for people: the units the pending files are applied in, then per file its
    mode, each statement's lock (statement text scrubbed), its findings."""
    h, li = ("## ", "- ") if markdown else ("", "  ")
    version = plan.server_version or "unknown (no database given)"
    out = [
        f"{'# ' if markdown else ''}Migration plan",
        f"server: PostgreSQL {version}; applied: {len(plan.applied)}; pending: "
        f"{len(plan.pending)}; verdict: {'BLOCKED' if plan.blocked else 'ok to apply'}",
    ]
    for err in plan.errors:
        out.append(f"{li}ERROR: {err}")
    unit_of: dict[str, int] = {}
    if plan.pending:
        out.append(f"applied as {len(plan.units)} unit(s), in order:")
    for number, unit in enumerate(plan.units, start=1):
        unit_of.update(dict.fromkeys(unit.names, number))
        how = (
            "one transaction: all of them or none; a lock an earlier file takes is held"
            " until the last one commits"
            if unit.transactional
            else "outside a transaction: its statements commit one by one, each guarded so"
            " the file re-runs safely after a partial failure"
        )
        out.append(f"{li}unit {number}: {', '.join(unit.names)} ({how})")
    for p in plan.pending:
        mode = "in one transaction" if p.transactional else "OUTSIDE a transaction (autocommit)"
        number = unit_of[p.migration.name]
        out += [
            "",
            f"{h}{p.migration.name}  ({mode}, unit {number}, sha256 {p.migration.checksum[:12]})",
        ]
        for st in p.steps:
            where = ", outside transaction" if st.lock.outside_transaction else ""
            out.append(
                f"{li}line {st.statement.line}: {st.statement.head}  [lock: {st.lock.lock};"
                f" blocks: {st.lock.blocks}{where}]"
            )
        for problem in p.problems:
            out.append(f"{li}BLOCKS: {problem}")
        for j in (j for j in p.findings if j.verdict != "runner"):
            f = j.finding
            label = "BLOCKS" if j.verdict == "blocks" else "reviewed"
            out.append(f"{li}{label}: squawk {f.rule} at line {f.line}: {f.message}")
        runner = sorted({j.finding.rule for j in p.findings if j.verdict == "runner"})
        if runner:
            out.append(f"{li}ok: squawk {', '.join(runner)} (the runner sets both timeouts)")
        for ig in p.migration.ignores:
            rules = ", ".join(sorted(ig.rules)) or "all rules"
            scope = "the file" if ig.whole_file else f"the statement after line {ig.line}"
            out.append(f"{li}reviewed: {rules} for {scope}")
        if p.migration.expectations:
            declared = ", ".join(e.describe() for e in p.migration.expectations)
            out.append(f"{li}verify: {declared}")
    return "\n".join(out) + "\n"
