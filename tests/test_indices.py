"""The index mappings (``common.indices``) held against the stored documents (``common.schema``): every field of
a document is mapped, with a type that holds its values, and the mappings map nothing else."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from msgspec import inspect

from panopticon.common.indices import LOG_MAPPING, MAPPINGS, ROLLUP_MAPPING, SPAN_MAPPING
from panopticon.common.schema import LogDoc, RollupDoc, SpanDoc

TIMES = {"@timestamp", "ingested_at", "written_at"}  # the strings that are RFC 3339 times
HOLDS = {  # the mapping types that hold the values of a field's type (a list is mapped as its items)
    inspect.StrType: {"keyword", "text"},
    inspect.IntType: {"integer", "long"},
    inspect.FloatType: {"double"},
    inspect.BoolType: {"boolean"},
    inspect.DictType: {"object"},
}
CASES = [(LogDoc, LOG_MAPPING), (SpanDoc, SPAN_MAPPING), (RollupDoc, ROLLUP_MAPPING)]


def value_type(info: inspect.Type) -> type[inspect.Type]:
    """The type of a field's values: without ``None``, a list's items."""
    if isinstance(info, inspect.UnionType):
        (info,) = [t for t in info.types if not isinstance(t, inspect.NoneType)]
    if isinstance(info, inspect.ListType):
        info = info.item_type
    return type(info)


def document_fields(doc: type[msgspec.Struct]) -> dict[str, type[inspect.Type]]:
    """Each field of a stored document by its stored name, with the type of its values (the tag is a string)."""
    info = inspect.type_info(doc)
    assert isinstance(info, inspect.StructType)
    fields = {field.encode_name: value_type(field.type) for field in info.fields}
    if info.tag_field is not None:
        fields[info.tag_field] = inspect.StrType
    return fields


@pytest.mark.parametrize("doc, mapping", CASES, ids=["logs", "spans", "rollups"])
def test_every_field_is_mapped_and_nothing_else(doc: type[msgspec.Struct], mapping: dict[str, Any]) -> None:
    assert set(mapping["properties"]) == set(document_fields(doc))


@pytest.mark.parametrize("doc, mapping", CASES, ids=["logs", "spans", "rollups"])
def test_each_field_is_mapped_with_a_type_that_holds_its_values(doc: type[msgspec.Struct],
                                                                mapping: dict[str, Any]) -> None:
    for name, kind in document_fields(doc).items():
        expected = {"date"} if name in TIMES else HOLDS[kind]
        assert mapping["properties"][name]["type"] in expected, name


def test_every_index_kind_maps_one_of_the_documents() -> None:
    for mapping in MAPPINGS.values():
        assert any(mapping is case for _, case in CASES)
