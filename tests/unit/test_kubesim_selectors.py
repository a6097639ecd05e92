"""Label and field selectors."""

from __future__ import annotations

import pytest

from devstack.kubesim.selectors import (
    SelectorError,
    format_selector,
    label_selector_requirements,
    matches_fields,
    matches_labels,
    parse_field_selector,
    parse_label_selector,
)

WEB = {"app": "web", "tier": "front"}
DB = {"app": "db"}


@pytest.mark.parametrize(
    ("selector", "web", "db"),
    [
        ("", True, True),
        ("app=web", True, False),
        ("app==web", True, False),
        ("app!=web", False, True),
        ("app in (web, api)", True, False),
        ("app notin (web,api)", False, True),
        ("tier", True, False),
        ("!tier", False, True),
        ("app=web,tier=front", True, False),
        ("app in (web,db),!tier", False, True),
        ("tier!=back", True, True),
    ],
)
def test_label_selector_semantics(selector: str, web: bool, db: bool) -> None:
    requirements = parse_label_selector(selector)
    assert matches_labels(requirements, WEB) is web
    assert matches_labels(requirements, DB) is db


@pytest.mark.parametrize("bad", ["app in (web", "app=web,", "=web", "app in ()", "a b"])
def test_malformed_label_selectors_are_rejected(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_field_selectors_read_dotted_paths() -> None:
    pod = {"metadata": {"name": "p1", "namespace": "staging"}, "status": {"phase": "Running"}}
    assert matches_fields(parse_field_selector("status.phase=Running"), pod)
    assert not matches_fields(parse_field_selector("status.phase!=Running"), pod)
    assert matches_fields(parse_field_selector("metadata.name=p1,metadata.namespace==staging"), pod)
    assert matches_fields(parse_field_selector("spec.nodeName="), pod), "absent reads as empty"
    with pytest.raises(SelectorError):
        parse_field_selector("status.phase~Running")


def test_label_selector_objects_round_trip_to_strings() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "api"]}],
    }
    assert format_selector(selector) == "app=web,tier in (api,front)"
    assert matches_labels(label_selector_requirements(selector), WEB)
    assert not matches_labels(label_selector_requirements(selector), DB)
