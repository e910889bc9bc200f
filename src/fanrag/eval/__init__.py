"""Evaluation on BEIR datasets: trec_eval-compatible metrics, ablations over the retrieval branches, and
fusion tuning on held-out queries.

    from fanrag.eval import evaluate
    report = evaluate(engine, "data/scifact", ["bm25", "dense", "hybrid"])
    report.get("hybrid").metrics["ndcg@10"]
"""

from .beir import BeirDataset, DatasetError, load_beir, read_qrels_tsv, read_trec_run, write_trec_run
from .metrics import MetricReport, evaluate_rankings, evaluate_run, mrr_at_k, ndcg_at_k, recall_at_k
from .runner import ABLATIONS, AblationResult, EvalReport, aevaluate, evaluate, open_engine, write_runs
from .stats import latency_summary, percentile
from .tune import FusionParams, TuneReport, atune, tune, write_retrieval_settings

__all__ = [
    "ABLATIONS",
    "AblationResult",
    "BeirDataset",
    "DatasetError",
    "EvalReport",
    "FusionParams",
    "MetricReport",
    "TuneReport",
    "aevaluate",
    "atune",
    "evaluate",
    "evaluate_rankings",
    "evaluate_run",
    "latency_summary",
    "load_beir",
    "mrr_at_k",
    "ndcg_at_k",
    "open_engine",
    "percentile",
    "read_qrels_tsv",
    "read_trec_run",
    "recall_at_k",
    "tune",
    "write_retrieval_settings",
    "write_runs",
    "write_trec_run",
]
