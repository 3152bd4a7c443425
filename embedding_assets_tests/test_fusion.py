"""Field-level fusion on small frames: each rule, a lower-priority update that must not win, a
deletion in one source that removes only its fields, and the provenance of every field."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl
import pytest

from embedding_assets.contracts.load import read_contracts
from embedding_assets.contracts.model import Entity, FieldRule, Member
from embedding_assets.defs.sync import sync
from embedding_assets.gold.documents import latest_documents
from embedding_assets.gold.fusion import fuse, member_rows
from embedding_assets_tests.conftest import SAMPLE, make_pipeline

PRODUCT = Entity(
    name="product",
    path=Path("product.yaml"),
    sources=("catalog", "storefront"),
    members={
        "catalog": Member(
            "product",
            {"name": "name", "description": "description", "category": "category", "price": "price_eur"},
        ),
        "storefront": Member(
            "product", {"name": "title", "description": "blurb", "price": "price"}, key_case="upper"
        ),
    },
    fields={
        "name": FieldRule("priority"),
        "description": FieldRule("recency"),
        "category": FieldRule("first_non_null"),
        "price": FieldRule("priority", ("storefront", "catalog")),
    },
    types={"name": "str", "description": "str", "category": "str", "price": "float"},
    title="name",
    text=("name", "description"),
    metadata=("category", "price"),
)


def _at(day: int) -> datetime:
    return datetime(2026, 11, day, 9, tzinfo=UTC)


def _silver(source: str, rows: list[dict[str, object]]) -> pl.DataFrame:
    base = {
        "source_id": pl.String,
        "batch": pl.String,
        "content_hash": pl.String,
        "updated_at": pl.Datetime("us", "UTC"),
        "deleted": pl.Boolean,
    }
    fields = {
        f"f_{f}": (pl.Float64 if f in ("price_eur", "price") else pl.String)
        for f in PRODUCT.members[source].fields.values()
    }
    frame = pl.DataFrame(
        [{**dict.fromkeys(fields), **r} for r in rows], schema={**base, **fields}, orient="row"
    )
    return member_rows(PRODUCT, source, frame)


def _catalog(sku: str, day: int, deleted: bool = False, **fields: object) -> dict[str, object]:
    return {
        "source_id": sku,
        "batch": f"b{day}",
        "content_hash": f"c-{sku}-{day}",
        "updated_at": _at(day),
        "deleted": deleted,
        **fields,
    }


def _fused(*frames: pl.DataFrame) -> dict[str, dict[str, object]]:
    return {r["doc_id"]: r for r in fuse(PRODUCT, pl.concat(frames), "b9").iter_rows(named=True)}


def test_each_field_takes_its_rule_and_records_where_it_came_from() -> None:
    catalog = _silver(
        "catalog",
        [
            _catalog(
                "LH-1", 1, f_name="Brew Kettle", f_description="A kettle.", f_category=None, f_price_eur=120.0
            )
        ],
    )
    store = _silver(
        "storefront",
        [_catalog("lh-1", 3, f_title="Brew Kettle PRO deal", f_blurb="Boils in 2 minutes!", f_price=99.5)],
    )
    doc = _fused(catalog, store)["product:LH-1"]
    assert doc["title"] == "Brew Kettle"  # name: the catalog's, it ranks first
    assert doc["text"] == "Brew Kettle\n\nBoils in 2 minutes!"  # description: the newer row's
    assert json.loads(doc["metadata"]) == {
        "category": None,
        "price": 99.5,
    }  # price: the shop ranks first for it
    assert doc["updated_at"] == _at(3) and not doc["deleted"]
    provenance = json.loads(doc["provenance"])
    assert provenance["name"] == {
        "source": "catalog",
        "batch": "b1",
        "row_hash": "c-LH-1-1",
        "updated_at": provenance["name"]["updated_at"],
    }
    assert (
        provenance["description"]["source"] == "storefront" and provenance["price"]["source"] == "storefront"
    )
    assert provenance["category"] is None  # no source has one


def test_a_lower_priority_update_never_overrides_and_first_non_null_falls_back() -> None:
    catalog = _silver(
        "catalog",
        [_catalog("LH-2", 1, f_name="Glow Bulb", f_description="A bulb.", f_category=None, f_price_eur=19.0)],
    )
    later = _silver(
        "storefront",
        [_catalog("lh-2", 8, f_title="GLOW BULB (renamed by the shop)", f_blurb=None, f_price=None)],
    )
    doc = _fused(catalog, later)["product:LH-2"]
    assert doc["title"] == "Glow Bulb"  # the shop's newer name does not win the priority rule
    assert json.loads(doc["metadata"])["price"] is None  # the shop ranks first for price, and says none
    assert "A bulb." in doc["text"]  # recency skips the shop's null description
    store_category = _silver("storefront", [_catalog("lh-2", 8, f_title="x", f_blurb=None, f_price=None)])
    assert json.loads(_fused(catalog, store_category)["product:LH-2"]["provenance"])["category"] is None


def test_a_deletion_in_one_source_removes_only_its_fields() -> None:
    gone = _silver("catalog", [_catalog("LH-3", 5, deleted=True)])
    store = _silver(
        "storefront", [_catalog("lh-3", 2, f_title="Spark Plug", f_blurb="A smart plug.", f_price=25.0)]
    )
    doc = _fused(gone, store)["product:LH-3"]
    assert not doc["deleted"] and doc["title"] == "Spark Plug"  # the shop's row stands alone now
    assert json.loads(doc["provenance"])["name"]["source"] == "storefront"
    both_gone = _fused(gone, _silver("storefront", [_catalog("lh-3", 6, deleted=True)]))["product:LH-3"]
    assert both_gone["deleted"] and both_gone["text"] == "" and both_gone["metadata"] == "{}"
    assert both_gone["updated_at"] == _at(6)


@pytest.mark.slow
def test_the_sample_sources_that_disagree_are_fused_into_products_in_gold_and_the_index(
    root: Path, instance: dg.DagsterInstance
) -> None:
    """The catalogue and the web shop describe the same products and disagree: after both batches,
    the shop's rename did not win, its price did, a product the catalogue retired lives on with
    the shop's fields, one the shop delisted keeps the catalogue's."""
    pipeline = make_pipeline(root)
    assert sync(instance, pipeline, echo=lambda _: None).ok
    gold = latest_documents(pl.read_delta(str(root / "lake" / "gold" / "documents")))
    assert not gold.filter(pl.col("source").is_in(["catalog", "storefront"])).height
    products = {r["doc_id"]: r for r in gold.filter(pl.col("source") == "product").iter_rows(named=True)}
    plug, retired, delisted = (
        products["product:LH-PLU-003"],
        products["product:LH-DOO-042"],
        products["product:LH-LIG-007"],
    )
    assert plug["title"] == "Spark Smart Plug Gen 1" and plug["price_eur"] == 49.0
    provenance = json.loads(plug["provenance"])
    assert (
        provenance["price_eur"]["source"] == "storefront" and provenance["price_eur"]["batch"] == "2026-11-08"
    )
    assert provenance["name"]["source"] == "catalog" and provenance["name"]["batch"] == "2026-11-01"
    assert (
        not retired["deleted"]
        and retired["title"].endswith("| Lumen Home shop")
        and retired["category"] is None
    )
    assert (
        delisted["price_eur"] == 21.5
        and json.loads(delisted["provenance"])["price_eur"]["source"] == "catalog"
    )
    assert (
        len(products) == 105 and "product:LH-KET-201" in products
    )  # 100 catalogue products, 5 only the shop sells
    indexed = pl.from_arrow(
        lancedb.connect(str(root / "lancedb")).open_table("chunks__hashing_embedder_v1").to_arrow()
    )
    sources = set(indexed["source"].to_list())  # type: ignore[union-attr]
    assert "product" in sources and not sources & {"catalog", "storefront"}
    plug_rows = indexed.filter(pl.col("doc_id") == "product:LH-PLU-003")  # type: ignore[union-attr]
    assert plug_rows["price_eur"].to_list() == [49.0] * plug_rows.height and plug_rows.height >= 1


def _contracts_with(tmp_path: Path, entity: str) -> Path:
    folder = tmp_path / "contracts"
    shutil.copytree(SAMPLE / "contracts", folder)
    (folder / "entities" / "product.yaml").write_text(entity)
    return folder


GOOD_ENTITY = (SAMPLE / "contracts" / "entities" / "product.yaml").read_text()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("rule: recency", "rule: loudest"), "field 'fields.category.rule': 'loudest' is not one of"),
        (
            ("priority: [storefront, catalog]", "priority: [storefront, warehouse]"),
            "'warehouse' is not a member source",
        ),
        (
            ("sources: [catalog, storefront]", "sources: [catalog]"),
            "'storefront' joins 'product' in its contract but is not listed",
        ),
        (("title: name", "title: headline"), "field 'title': 'headline' is not one of the entity's fields"),
        (("entity: product", "entity: products"), "field 'entity': 'products' must equal the file name"),
    ],
)
def test_a_broken_entity_file_holds_back_its_sources_with_one_line(
    tmp_path: Path, change: tuple[str, str], problem: str
) -> None:
    found = read_contracts(_contracts_with(tmp_path, GOOD_ENTITY.replace(*change)))
    assert set(found.problems) == {"catalog", "storefront"} and problem in found.problems["catalog"]
    assert {"helpdesk", "guides"} <= set(found.contracts) and "catalog" not in found.contracts


def test_member_fields_must_exist_and_agree_in_type(tmp_path: Path) -> None:
    folder = _contracts_with(tmp_path, GOOD_ENTITY)
    store = folder / "storefront.yaml"
    store.write_text(store.read_text().replace("price_eur: price}", "price_eur: cost}"))
    assert "'cost' is not one of its fields" in read_contracts(folder).problems["storefront"]
    store.write_text(store.read_text().replace("price_eur: cost}", "price_eur: title}"))
    assert "its sources declare different types" in read_contracts(folder).problems["storefront"]
    (folder / "entities" / "product.yaml").unlink()
    assert "has no file" in read_contracts(folder).problems["catalog"]
