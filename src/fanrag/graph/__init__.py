"""Knowledge-graph support: entity extraction (the graph itself is a store, see ``fanrag.stores``)."""

from .extract import EntityExtractor, RuleExtractor, SpacyExtractor, normalise
from .factory import EXTRACTORS, create_extractor

__all__ = ["EXTRACTORS", "EntityExtractor", "RuleExtractor", "SpacyExtractor", "create_extractor", "normalise"]
