"""``create_extractor(name)``: the entity extractor ``stores.entity_extractor`` names, imported lazily.

``none`` builds no graph, so it has no entry: ``create_extractor("none")`` is None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from .extract import EntityExtractor

NONE = "none"

# Each class is built without arguments; spaCy's model loads on the first ``extract``.
EXTRACTORS: Registry[type[EntityExtractor]] = Registry("stores.entity_extractor", "entity extractor")
EXTRACTORS.add("rules", "fanrag.graph.extract:RuleExtractor")
EXTRACTORS.add("spacy", "fanrag.graph.extract:SpacyExtractor", extra="spacy")


def create_extractor(name: str) -> EntityExtractor | None:
    """The extractor named by ``stores.entity_extractor``; None for ``none`` (no graph is built)."""
    if name == NONE:
        return None
    return EXTRACTORS.create(name)
