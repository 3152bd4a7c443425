"""Reading ``data/contracts/entities/<entity>.yaml``: which sources describe one kind of entity, in
which priority, and the rule that picks each field. A source joins an entity in its own contract
(``entity: {name: product, fields: {name: title}}``); its id is the entity key.

    entity: product
    owner: catalogue-team@lumen-home.example
    sources: [catalog, storefront]          # priority order, highest first
    title: name
    text: [name, description]
    metadata: [category, price_eur]
    fields:
      name: {rule: priority}
      description: {rule: first_non_null}
      category: {rule: recency}
      price_eur: {rule: priority, priority: [storefront, catalog]}

A broken entity file holds back its member sources, one line naming the file and the field, as a
broken source contract holds back its source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from embedding_assets.contracts.model import (
    FUSION_RULES,
    SAFE_NAME,
    Contract,
    ContractError,
    Entity,
    FieldRule,
    Member,
    field_error,
)
from embedding_assets.core.strict_yaml import StrictYAMLError, load_strict

ENTITY_KEYS = {"entity", "owner", "description", "sources", "title", "text", "metadata", "fields"}


def read_entities(
    contracts_dir: Path, contracts: Mapping[str, Contract]
) -> tuple[dict[str, Contract], dict[str, str]]:
    """The contracts with their entity attached, and a problem per member source of each entity
    file that does not load (those sources are left out)."""
    good, problems = dict(contracts), {}
    folder = contracts_dir / "entities"
    paths = sorted(folder.glob("*.y*ml")) if folder.is_dir() else []
    for path in paths:
        try:
            entity = load_entity(path, contracts)
        except ContractError as exc:
            for source in _claimed(path.stem, contracts):
                problems[source] = str(exc).splitlines()[0]
                good.pop(source, None)
            continue
        for source in entity.sources:
            good[source] = replace(contracts[source], entity=entity)
    orphans = {s for s, c in good.items() if c.member and c.entity is None}
    for source in orphans:
        member = good.pop(source).member
        problems[source] = (
            f"{contracts[source].path}: field 'entity.name': entity {member.entity!r} has no file "  # type: ignore[union-attr]
            f"{folder / (member.entity + '.yaml')}"  # type: ignore[union-attr]
        )
    return good, problems


def _claimed(name: str, contracts: Mapping[str, Contract]) -> list[str]:
    return [s for s, c in contracts.items() if c.member and c.member.entity == name]


def load_entity(path: Path, contracts: Mapping[str, Contract]) -> Entity:
    try:
        raw = load_strict(path.read_bytes(), "the entity")
    except StrictYAMLError as exc:
        raise ContractError(f"{path}: not a valid entity: {exc}") from None
    if not isinstance(raw, dict) or not ENTITY_KEYS.issuperset(raw):
        unknown = sorted(set(raw) - ENTITY_KEYS) if isinstance(raw, dict) else []
        raise field_error(path, unknown[0] if unknown else "entity", "is not a field of an entity file")
    name = str(raw.get("entity", ""))
    if name != path.stem or not SAFE_NAME.match(name):
        raise field_error(path, "entity", f"{name!r} must equal the file name {path.stem!r}")
    if name in contracts:
        raise field_error(path, "entity", f"{name!r} is also a source: their document ids would collide")
    sources = tuple(str(s) for s in raw.get("sources") or ())
    _check_sources(path, name, sources, contracts)
    fields = _rules(path, raw.get("fields") or {}, sources)
    members = {s: _resolved(path, contracts[s], fields) for s in sources}
    entity = Entity(
        name, path, sources, members, fields, _types(path, fields, members, contracts),
        raw.get("title"), _names(raw.get("text")), _names(raw.get("metadata")), raw.get("owner"),
    )  # fmt: skip
    for where, names in (
        ("title", [entity.title] if entity.title else []),
        ("text", entity.text),
        ("metadata", entity.metadata),
    ):
        if unknown := [n for n in names if n not in fields]:
            raise field_error(
                path, where, f"{unknown[0]!r} is not one of the entity's fields {sorted(fields)}"
            )
    return entity


def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value or ())


def _check_sources(
    path: Path, name: str, sources: tuple[str, ...], contracts: Mapping[str, Contract]
) -> None:
    if not sources:
        raise field_error(path, "sources", "list the member sources, highest priority first")
    for source in sources:
        member = contracts[source].member if source in contracts else None
        if member is None or member.entity != name:
            raise field_error(
                path, "sources", f"{source!r} has no contract that joins {name!r} (entity: {{name: {name}}})"
            )
    if extra := sorted(set(_claimed(name, contracts)) - set(sources)):
        raise field_error(path, "sources", f"{extra[0]!r} joins {name!r} in its contract but is not listed")


def _rules(path: Path, raw: Mapping[str, Any], sources: tuple[str, ...]) -> dict[str, FieldRule]:
    if not raw:
        raise field_error(path, "fields", "name the entity's fields and the rule of each")
    rules = {}
    for name, spec in raw.items():
        spec = {"rule": spec} if isinstance(spec, str) else dict(spec or {})
        rule, order = spec.get("rule", "priority"), tuple(str(s) for s in spec.get("priority") or ())
        if rule not in FUSION_RULES:
            raise field_error(
                path, f"fields.{name}.rule", f"{rule!r} is not one of {', '.join(FUSION_RULES)}"
            )
        if unknown := [s for s in order if s not in sources]:
            raise field_error(path, f"fields.{name}.priority", f"{unknown[0]!r} is not a member source")
        rules[str(name)] = FieldRule(rule, order)
    return rules


def _resolved(path: Path, contract: Contract, fields: Mapping[str, FieldRule]) -> Member:
    """The member's mapping with every entity field its source has under the same name added."""
    member = contract.member
    assert member is not None
    mapped = {**{f: f for f in fields if f in contract.fields}, **member.fields}
    if unknown := [f for f in member.fields if f not in fields]:
        raise field_error(contract.path, f"entity.fields.{unknown[0]}", f"is not a field of {path.name}")
    if missing := [f for f, to in mapped.items() if to not in contract.fields]:
        raise field_error(
            contract.path, f"entity.fields.{missing[0]}", f"{mapped[missing[0]]!r} is not one of its fields"
        )
    return replace(member, fields=mapped)


def _types(
    path: Path,
    fields: Mapping[str, FieldRule],
    members: Mapping[str, Member],
    contracts: Mapping[str, Contract],
) -> dict[str, str]:
    """Each entity field's type: what every member that maps it declares, or an error."""
    types: dict[str, str] = {}
    for name in fields:
        declared = {
            s: contracts[s].field_spec(m.fields[name]).type for s, m in members.items() if name in m.fields
        }
        if not declared:
            raise field_error(path, f"fields.{name}", "no member source maps it")
        if len(set(declared.values())) > 1:
            raise field_error(path, f"fields.{name}", f"its sources declare different types: {declared}")
        types[name] = next(iter(declared.values()))
    return types
