"""Label and field selectors, parsed the way the apiserver parses them.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a``, ``!a``,
joined by commas.  Field selectors: ``path=value``, ``path==value``, ``path!=value`` on
dotted paths such as ``status.phase`` or ``metadata.name``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"[-A-Za-z0-9_.]*"
_EXISTS = re.compile(rf"^(?P<neg>!?)\s*(?P<key>{_KEY})$")
_SET = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})$")
_FIELD = re.compile(r"^(?P<key>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*)$")


class SelectorError(ValueError):
    """A selector the apiserver would reject with 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    """One clause of a selector."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label map (or field map) satisfies this clause."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" also match objects that lack the key.
        return not present or value not in self.values


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in selector {text!r}")
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise SelectorError(f"unbalanced parentheses in selector {text!r}")
    terms.append("".join(current))
    return [term.strip() for term in terms]


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse a label selector string; an empty selector matches everything."""
    if text is None or not text.strip():
        return ()
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        if not term:
            raise SelectorError(f"unable to parse requirement: empty clause in {text!r}")
        if match := _SET.match(term):
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            if not values or any(not re.fullmatch(_VALUE, v) for v in values):
                raise SelectorError(f"unable to parse requirement: invalid values in {term!r}")
            requirements.append(Requirement(match["key"], match["op"], values))
        elif match := _EQUALITY.match(term):
            op = "!=" if match["op"] == "!=" else "="
            requirements.append(Requirement(match["key"], op, (match["value"],)))
        elif match := _EXISTS.match(term):
            requirements.append(Requirement(match["key"], "!" if match["neg"] else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return tuple(requirements)


def parse_field_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse a field selector string (only equality operators exist for fields)."""
    if text is None or not text.strip():
        return ()
    requirements: list[Requirement] = []
    for term in (t.strip() for t in text.split(",")):
        match = _FIELD.match(term)
        if match is None:
            raise SelectorError(f"invalid field selector: {term!r}")
        op = "!=" if match["op"] == "!=" else "="
        requirements.append(Requirement(match["key"], op, (match["value"].strip(),)))
    return tuple(requirements)


def matches_labels(requirements: tuple[Requirement, ...], labels: Mapping[str, str] | None) -> bool:
    """Whether every requirement holds for ``labels``."""
    labels = labels or {}
    return all(req.matches(labels) for req in requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string value at a dotted path; absent fields read as the empty string."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return ""
        current = current[part]
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def matches_fields(requirements: tuple[Requirement, ...], obj: Mapping[str, Any]) -> bool:
    """Whether every field requirement holds for ``obj``."""
    for req in requirements:
        value = field_value(obj, req.key)
        if (value == req.values[0]) != (req.op == "="):
            return False
    return True


def label_selector_requirements(selector: Mapping[str, Any] | None) -> tuple[Requirement, ...]:
    """Turn a ``LabelSelector`` object (matchLabels + matchExpressions) into requirements."""
    if not selector:
        return ()
    requirements = [
        Requirement(key, "=", (str(value),))
        for key, value in sorted((selector.get("matchLabels") or {}).items())
    ]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(str(expr.get("operator")))
        if op is None:
            raise SelectorError(f"unknown selector operator {expr.get('operator')!r}")
        requirements.append(Requirement(str(expr.get("key")), op, tuple(expr.get("values") or ())))
    return tuple(requirements)


def format_selector(selector: Mapping[str, Any] | None) -> str:
    """Render a ``LabelSelector`` object as the string form (used by ``Scale.status.selector``)."""
    parts: list[str] = []
    for req in label_selector_requirements(selector):
        if req.op == "=":
            parts.append(f"{req.key}={req.values[0]}")
        elif req.op in ("in", "notin"):
            parts.append(f"{req.key} {req.op} ({','.join(sorted(req.values))})")
        else:
            parts.append(req.key if req.op == "exists" else f"!{req.key}")
    return ",".join(parts)
