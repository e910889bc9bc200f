"""The multi-hop builder on small hand-written articles (the real source is a 5 MB download).

Run: ``python -m pytest -q bench/datasets -p no:cacheprovider`` (outside ``tests/``: CI does not collect it).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_multihop as mh
from _common import Doc, Question, write_beir

ROWS = {
    "Dune Road": ("1961 film by Ana Ruiz",
                         "Dune Road is a 1961 drama film directed by Ana Ruiz. It was shot near Valparaíso."),
    "Ana Ruiz": ("Chilean filmmaker (1920–1990)", "Ana Ruiz was a Chilean filmmaker known for long takes."),
    "Salt Harbour": ("1975 film by Tomas Berg",
                     "Salt Harbour is a 1975 film directed by Tomas Berg, set in a fishing town."),
    "Tomas Berg": ("Swedish filmmaker and actor (1931–2004)",
                   "Tomas Berg was a Swedish filmmaker and actor who worked mostly in Stockholm."),
    "Chile": ("Country in South America",
              ("Chile, officially the Republic of Chile, is a country in South America. It has a population "
               "of over 18.5 million.")),
    "Valparaíso": ("City in Valparaíso Region, Chile",
                   "Valparaíso is a port city in Chile, on the Pacific coast."),
}


def articles() -> dict[str, mh.Article]:
    return {t: mh._article(t, {"extract": text, "description": d}) for t, (d, text) in sorted(ROWS.items())}


def test_life_span_goes_after_the_subject() -> None:
    assert (mh.insert_period("Stanley Kubrick was an American filmmaker.", "1928–1999")
            == "Stanley Kubrick (1928–1999) was an American filmmaker.")
    assert (mh.insert_period("Publius Cornelius Tacitus, known as Tacitus, was a historian.", "56–120")
            == "Publius Cornelius Tacitus (56–120), known as Tacitus, was a historian.")
    already = "Ada Lovelace (1815–1852) was a mathematician."
    assert mh.insert_period(already, "1815–1852") == already


def test_people_parse_life_span_and_nationality() -> None:
    persons = mh.people(articles())
    assert set(persons) == {"Ana Ruiz", "Tomas Berg"}
    ana = persons["Ana Ruiz"]
    assert (ana.born, ana.died, ana.nationality, ana.occupations) == ("1920", "1990", "Chilean", ("filmmaker",))
    alive = mh._article("Bob Dylan", {"extract": "Bob Dylan is an American singer-songwriter.",
                                      "description": "American singer-songwriter (born 1941)"})
    dylan = mh._person(alive)
    assert dylan is not None and (dylan.born, dylan.died) == ("1941", "")
    team = mh._article("Marx Brothers", {"extract": "The Marx Brothers were an American comedy team.",
                                         "description": "American comedy team (1905–1949)"})
    assert mh._person(team) is None


def test_display_names_without_giving_the_second_hop_away() -> None:
    arts = articles()
    assert mh.display(arts["Dune Road"]) == "Dune Road"
    novel = mh._article("Ulysses (novel)", {"extract": "Ulysses is a novel.", "description": "1922 novel"})
    assert mh.display(novel) == "the novel Ulysses"
    mahler = mh._article("Symphony No. 2 (Mahler)", {"extract": "A symphony.", "description": "Symphony"})
    assert mh.display(mahler) == ""
    concept = mh._article("Modular arithmetic", {"extract": "In mathematics, modular arithmetic is a system.",
                                                 "description": "Arithmetic system"})
    assert mh.display(concept) == "modular arithmetic"


def test_bridge_question_names_only_the_first_passage() -> None:
    arts = articles()
    questions = mh.build(arts, seed=1)
    by_kind = {q.kind: q for q in questions}
    born = by_kind["creator_born"]
    assert born.qtype == "bridge" and born.answers in (("1920",), ("1931",))
    film, director = ("Dune Road", "Ana Ruiz") if born.answers == ("1920",) else ("Salt Harbour", "Tomas Berg")
    assert born.gold == (arts[film].doc_id, arts[director].doc_id)
    assert director.split()[-1] not in born.text
    region = by_kind["country_region"]
    assert region.answers == ("South America",)
    assert region.gold == (arts["Valparaíso"].doc_id, arts["Chile"].doc_id)


def test_comparison_needs_both_sides() -> None:
    questions = mh.build(articles(), seed=1)
    first = next(q for q in questions if q.kind == "creator_born_first")
    assert first.qtype == "comparison" and len(first.gold) == 4
    assert first.answers == ("Dune Road",)  # directed by the one born in 1920


def test_unfit_candidates_are_refused() -> None:
    arts = articles()
    film, person = arts["Dune Road"], arts["Ana Ruiz"]
    ok = mh.Candidate("creator_born", "bridge", "When was the director of Dune Road born?", "1920",
                      "span", (film, person))
    assert mh.problem(ok) == ""
    named = mh.Candidate("creator_born", "bridge", "When was Ruiz, director of Dune Road, born?", "1920", "span",
                         (film, person))
    assert mh.problem(named) == "question names the second passage"
    in_first = mh.Candidate("creator_born", "bridge", "Who shot the film Dune Road?", "1961", "span",
                            (film, person))
    assert mh.problem(in_first) == "answer not only in the second passage"


def test_build_is_deterministic() -> None:
    first, again = mh.build(articles(), seed=3), mh.build(articles(), seed=3)
    assert first == again
    assert [(q.text, q.answers, q.gold) for q in first] == [(q.text, q.answers, q.gold) for q in again]


def test_write_beir_layout(tmp_path: Path) -> None:
    docs = [Doc("d1", "A", "alpha"), Doc("d2", "B", "beta")]
    q = Question("q1", "A or B?", ("A",), "span", "comparison", "k", ("d1", "d2"), {"entities": ["A", "B"]})
    write_beir(tmp_path, docs, [q], {"name": "t"})
    assert (tmp_path / "qrels" / "test.tsv").read_text().splitlines() == [
        "query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td2\t1"]
    answer = json.loads((tmp_path / "answers.jsonl").read_text())
    assert answer == {"_id": "q1", "answer": ["A"], "answer_type": "span", "gold_docs": ["d1", "d2"],
                      "type": "comparison", "kind": "k", "entities": ["A", "B"]}
    with pytest.raises(ValueError, match="missing from the corpus"):
        write_beir(tmp_path, docs[:1], [q], {})


def test_pairs_are_distinct_and_bounded() -> None:
    got = list(mh.pairs(list(range(5)), random.Random(0), 20, lambda x, y: True))
    assert len(got) == 10 and len({frozenset(p) for p in got}) == 10
