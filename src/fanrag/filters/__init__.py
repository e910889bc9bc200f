"""Metadata filters: a small language shared by the Python API, ``--where``, HTTP and MCP, applied inside
every retrieval branch.

    flt = as_filter("source:docs/** and year >= 2020")     # or a JSON object, or model terms
    engine.query("...", filter=flt)

``model`` holds the terms (frozen, validated), ``parse`` the two written forms, ``sql`` the query that
turns a filter into the ids of the documents it matches in a metadata store. The retriever resolves
that set once per query (``MetaStore.filter_documents``) and hands it to each branch, which searches
only those documents (each store's ``allowed`` argument): a filter never empties a result that the
index could have filled, as filtering after fusion would.
"""

from .model import (
           FIELDS,
           And,
           Compare,
           Exists,
           Filter,
           FilterError,
           In,
           Not,
           Or,
           SourceMatch,
           leaves,
           rebase,
           to_json,
)
from .parse import as_filter, from_json, parse_tag, parse_tags, parse_where

__all__ = ["FIELDS", "And", "Compare", "Exists", "Filter", "FilterError", "In", "Not", "Or", "SourceMatch", "as_filter",
           "from_json", "leaves", "parse_tag", "parse_tags", "parse_where", "rebase", "to_json"]
