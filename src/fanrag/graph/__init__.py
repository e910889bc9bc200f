"""Knowledge-graph support: entity extraction (the graph itself is a store, see ``fanrag.stores``)."""

from .extract import EntityExtractor, RuleExtractor, SpacyExtractor, create_extractor, normalise

__all__ = ["EntityExtractor", "RuleExtractor", "SpacyExtractor", "create_extractor", "normalise"]
