"""docs/faults.md is in step with the tests that provoke each fault."""

from __future__ import annotations

from tests import fault_table


def test_the_fault_table_matches_the_tests():
    assert fault_table.TABLE.read_text(encoding="utf-8") == fault_table.render(), (
        "docs/faults.md is stale: run make faults-table"
    )


def test_every_fault_row_names_a_test_that_exists():
    found = fault_table.rows()
    assert len(found) >= 30
    for _, _, test in found:
        path, name = test.strip("`").split("::")
        assert f"def {name}(" in (fault_table.project_root() / path).read_text()
