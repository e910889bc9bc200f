"""The Factbook builder on two hand-written profiles (the real source is a 3 MB download).

Run: ``python -m pytest -q bench/datasets -p no:cacheprovider`` (outside ``tests/``: CI does not collect it).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_factbook as fb


def t(text: str) -> dict[str, str]:
    return {"text": text}


def profile(code: str, name: str, capital: str, domain: str, median: str, unemployment: str) -> fb.Profile:
    raw: dict[str, Any] = {
        "Government": {"Country name": {"conventional short form": t(name)},
                       "Capital": {"name": t(capital), "etymology": t("<p>old</p>")}},
        "People and Society": {"Median age": {"total": t(f"{median} years (2025 est.)"), "male": t("40 years")},
                               "Sanitation facility access": {"improved: urban": t("urban: 99% of population")}},
        "Communications": {"Internet country code": t(domain)},
        "Economy": {"Unemployment rate": {"Unemployment rate 2024": t("1% (2024 est.)"),
                                          "Unemployment rate 2023": t(f"{unemployment}% (2023 est.)"),
                                          "note": t("")}},
    }
    return fb.Profile(code, name, raw)


PROFILES = [profile("aa", "Aland", "Port Alba", ".aa", "30.5", "7.7"),
            profile("bb", "Borduria", "Szohod", ".bb", "44.1", "3.2")]


def test_clean_turns_html_into_plain_text() -> None:
    assert fb.clean("<p>one</p><p>two</p>") == "one; two"
    assert fb.clean("<br>x; ; y<br><br>") == "x; y"
    assert fb.clean("L&#39;Almanacco&nbsp;<strong>note:</strong> z") == "L'Almanacco note: z"


def test_render_keeps_headings_and_years() -> None:
    doc = fb.render(PROFILES[0], "Economy")
    assert doc.doc_id == "fb-aa-economy" and doc.title == "Aland: Economy"
    assert doc.text.splitlines() == ["# Aland: Economy", "", "## Unemployment rate",
                                     "Unemployment rate 2024: 1% (2024 est.)",
                                     "Unemployment rate 2023: 7.7% (2023 est.)"]
    people = fb.render(PROFILES[0], "People and Society").text
    assert "improved: urban: 99% of population" in people  # the label is not repeated


def test_values_read_the_answer_from_the_document() -> None:
    docs = {(p.code, c): fb.render(p, c) for p in PROFILES for c in p.sections}
    by_fact = fb.values(PROFILES, docs)
    assert [v.answer for v in by_fact["median_age"]] == ["30.5 years", "44.1 years"]
    assert [v.answer for v in by_fact["unemployment_2023"]] == ["7.7%", "3.2%"]
    assert [v.answer for v in by_fact["capital"]] == ["Port Alba", "Szohod"]
    assert "area" not in by_fact


def test_bridge_identifies_the_country_without_naming_it() -> None:
    docs = {(p.code, c): fb.render(p, c) for p in PROFILES for c in p.sections}
    found = list(fb.bridges(fb.values(PROFILES, docs), random.Random(0)))
    median = next(c for c in found if c.kind == "capital->median_age" and c.answer == "30.5 years")
    assert "Port Alba" in median.text and "Aland" not in median.text
    assert [d.doc_id for d in median.gold] == ["fb-aa-government", "fb-aa-people-and-society"]
    assert all("'s" not in c.text.split("whose")[0] for c in found if "whose" in c.text)


def test_comparison_answer_is_the_larger_value() -> None:
    docs = {(p.code, c): fb.render(p, c) for p in PROFILES for c in p.sections}
    found = {c.kind: c for c in fb.comparisons(fb.values(PROFILES, docs), random.Random(0))}
    assert found["median_age"].answer == "Borduria"
    assert found["unemployment_2023"].answer == "Aland"


def test_build_is_deterministic() -> None:
    first, again = fb.build(PROFILES, seed=5), fb.build(PROFILES, seed=5)
    assert first == again
    docs, questions = first
    assert {q.qtype for q in questions} == {"lookup", "bridge", "comparison"}
    ids = {d.doc_id for d in docs}
    assert all(set(q.gold) <= ids for q in questions)
