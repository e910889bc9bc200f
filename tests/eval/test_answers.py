"""Answer scores, checked against values computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fanrag.eval.answers import GoldAnswer, load_answers, mean_scores, normalize, score_answer, token_f1
from fanrag.eval.beir import DatasetError


def test_normalize_drops_case_articles_currency_and_separators_but_keeps_decimals() -> None:
    assert normalize("The $1,568.6 million.") == "1568.6 million"
    assert normalize("An increase of 12.5%") == "increase of 12.5"
    assert normalize("  (3.1)  ") == "3.1"


def test_token_f1_by_hand() -> None:
    # prediction "revenue grew 5 percent" vs gold "revenue grew": common 2, P = 2/4, R = 2/2, F1 = 2/3
    assert token_f1("revenue grew 5 percent", "revenue grew") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("a b", "c") == 0.0


def test_score_answer_by_hand() -> None:
    gold = GoldAnswer(("1,568.6", "690.5"), "multi-span", ("t1", "p2"))
    s = score_answer(gold, "1568.6 690.5", ["Inventories were $1,568.6 in 2019", "and 690.5 in 2018"], ["t1", "x9"])
    assert s.em == 1.0 and s.f1 == 1.0
    assert s.found == 1.0  # both spans are in the cited text
    assert s.cite_precision == 0.5 and s.cite_recall == 0.5  # one of two cited is gold; one of two gold cited
    miss = score_answer(gold, "1568.6", ["Inventories were $1,568.6"], [])
    assert miss.em == 0.0 and miss.found == 0.0 and miss.cite_precision == 0.0 and miss.cite_recall == 0.0
    assert miss.f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # P = 1/1, R = 1/2
    assert mean_scores({"a": s, "b": miss})["cite_recall"] == 0.25


def test_load_answers(tmp_path: Path) -> None:
    assert load_answers(tmp_path) == {}
    (tmp_path / "answers.jsonl").write_text(json.dumps(
        {"_id": "q1", "answer": ["x"], "answer_type": "span", "gold_docs": ["d1"]}) + "\n\n" +
        json.dumps({"_id": "q2", "answer": "y"}) + "\n")
    got = load_answers(tmp_path)
    assert got["q1"] == GoldAnswer(("x",), "span", ("d1",)) and got["q2"].spans == ("y",)
    (tmp_path / "answers.jsonl").write_text("{not json\n")
    with pytest.raises(DatasetError, match="line 1"):
        load_answers(tmp_path)
