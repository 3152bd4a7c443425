from pathlib import Path

import pytest

from embedding_assets.contracts.load import load_contract, load_contracts
from embedding_assets.contracts.model import ContractError
from embedding_assets_tests.conftest import SAMPLE


def test_sample_contracts_load() -> None:
    contracts = load_contracts(SAMPLE / "contracts")
    assert set(contracts) == {"helpdesk", "catalog", "guides", "kb", "manuals", "storefront"}
    helpdesk = contracts["helpdesk"]
    assert helpdesk.format == "jsonl"
    assert helpdesk.id == "ticket_id"
    assert helpdesk.text == ("subject", "body")
    assert helpdesk.deleted is not None and helpdesk.deleted.matches("Deleted")
    assert helpdesk.field_spec("modified").type == "datetime"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("source: x\nowner: o\nformat: jsonl\nid: a\n", "text"),
        ("source: x\nowner: o\nformat: xml\nid: a\ntext: b\n", "format"),
        (
            "source: x\nowner: o\nformat: jsonl\nid: a\ntext: b\nfields: {a: {type: decimal}}\n",
            "fields.a.type",
        ),
        ("source: x\nowner: o\nformat: jsonl\nid: a\ntext: b\nsurprise: 1\n", "surprise"),
        ("source: y\nowner: o\nformat: jsonl\nid: a\ntext: b\n", "source"),
        (
            "source: x\nowner: o\nformat: jsonl\nid: a\ntext: b\nquality: {max_quarantine_rate: 3}\n",
            "quality.max_quarantine_rate",
        ),
    ],
)
def test_broken_contract_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert str(path) in str(err.value)
    assert f"field '{field}'" in str(err.value)
