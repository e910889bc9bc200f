"""Entity extractors: what the rules find and drop, normalisation."""

from __future__ import annotations

from fanrag.graph.extract import RuleExtractor, normalise, query_ngrams

TEXT = ("TNF-α and IL-6 levels rose in BRCA1 carriers; p53, mTOR and miR-21 were measured in CD4+ T cells. "
        "The World Health Organization and the National Institutes of Health funded diffusion-weighted MRI. "
        "In conclusion, the long-term follow-up (95% CI) was done by Smith.")


def names(text: str) -> dict[str, str]:
    return dict(RuleExtractor().extract([text])[0])


def test_rules_find_symbols_acronyms_phrases_and_terms() -> None:
    found = names(TEXT)
    for name in ("tnf-α", "il-6", "brca1", "p53", "mtor", "mir-21", "cd4+", "mri", "world health organization",
                 "national institutes of health", "diffusion-weighted", "smith"):
        assert name in found, name
    assert found["world health organization"] == "PHRASE"


def test_rules_drop_noise() -> None:
    found = names(TEXT)
    for name in ("the", "in conclusion", "conclusion", "in", "ci", "long-term", "follow-up", "95"):
        assert name not in found, name
    assert names("") == {} and names("the of and 1234 .") == {}


def test_each_name_once_per_text_in_order() -> None:
    out = RuleExtractor().extract(["IL-6 binds IL-6R; IL-6 again.", "nothing here"])
    assert [n for n, _ in out[0]] == ["il-6", "il-6r"]
    assert out[1] == []


def test_normalise() -> None:
    assert normalise("  TNF-α, ") == "tnf-α"
    assert normalise("the World\n  Health") == "world health"
    assert normalise("ＢＲＣＡ１") == "brca1"  # NFKC folds full-width forms


def test_extract_query_gives_entities_and_ngrams() -> None:
    out = RuleExtractor().extract_query("does BRCA1 cause breast cancer?")
    assert out[0] == "brca1"
    assert "breast cancer" in out and "does" not in out
    assert query_ngrams("the cat of the house") == ["cat", "house"]
