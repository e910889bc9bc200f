"""``fanrag eval`` and ``fanrag tune``: a BEIR directory in, a table (or one JSON object) out."""

from __future__ import annotations

import json
import sys

import click

from ..eval.runner import ABLATIONS, EvalReport, evaluate, open_engine, write_runs
from ..eval.tune import TuneReport, write_retrieval_settings
from ..eval.tune import tune as run_tune
from .options import home_option, json_option


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command("eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
@home_option
@click.option("--branches", default=None, help="Evaluate one branch set instead of the ablations, e.g. dense,bm25.")
@click.option("--ablations", default=None,
              help=f"Comma-separated subset of: {', '.join(ABLATIONS)} (default: all; +rerank needs a reranker).")
@click.option("--k", "k", type=int, default=100, show_default=True, help="Documents ranked per query.")
@click.option("--limit", type=int, default=None, help="Only the first N judged queries.")
@click.option("--split", default="test", show_default=True, help="Which qrels/<split>.tsv to use.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write a TREC run file (one per ablation, FILE.<ablation>.ext, when several run).")
@click.option("--ignore-identical-ids", is_flag=True,
              help="Leave each query's own id out of its ranking (BEIR's rule for ArguAna).")
@click.option("--no-answers", is_flag=True, help="Do not score answers even if the set has answers.jsonl.")
@json_option
def eval_cmd(dataset_dir: str, home: str | None, branches: str | None, ablations: str | None, k: int,
             limit: int | None, split: str, out: str | None, ignore_identical_ids: bool, no_answers: bool,
             as_json: bool) -> None:
    """Score retrieval on a BEIR dataset (ingesting its corpus.jsonl first if needed).

    Reports nDCG@10, Recall@100, MRR@10 and per-query latency p50/p95/p99 for each ablation: default
    (exactly what a user gets with no options), bm25, dense, hybrid (dense+bm25), +subqueries, +graph,
    +rerank. Queries run one at a time, so the latencies are each query's own. Where the set has
    answers.jsonl, the default row also scores the answers (exact match, token F1, answer found in the
    cited chunks, citation precision and recall).
    """
    engine, needs_ingest = open_engine(home, dataset_dir, split)
    with engine:
        show = not as_json and sys.stderr.isatty()
        report = evaluate(engine, dataset_dir, _csv(ablations), k, branches=_csv(branches), limit=limit,
                          split=split, ingest=needs_ingest, on_query=_progress_line if show else None,
                          ignore_identical_ids=ignore_identical_ids, answers=not no_answers)
    if show:
        click.echo("", err=True)
    paths = write_runs(report, out) if out else []
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "run_files": [str(p) for p in paths]}))
        return
    _print_report(report)
    for p in paths:
        click.echo(f"run file: {p}")


def _progress_line(name: str, done: int, total: int) -> None:
    click.echo(f"\r{name}: {done}/{total} queries", nl=False, err=True)


def _print_report(report: EvalReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.dataset} ({report.split}, {report.n_queries} queries)")
    for col in ("ablation", "branches", "nDCG@10", "Recall@100", "MRR@10", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="left" if col in ("ablation", "branches") else "right")
    for a in report.ablations:
        m, lat = a.metrics, a.latency
        table.add_row(a.name, ",".join(a.branches) + (" +rerank" if a.rerank else ""),
                      f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}", f"{m['mrr@10']:.4f}",
                      f"{lat['p50_ms']:.1f}", f"{lat['p95_ms']:.1f}", f"{lat['p99_ms']:.1f}")
    # a pipe gets 80 columns by default, which would cut the metric headers
    console = Console()
    Console(width=max(console.width, 120)).print(table)
    for a in report.ablations:
        if a.answers:
            click.echo(f"answers ({a.name}, {len(a.answer_scores)} questions): " +
                       ", ".join(f"{m} {v:.4f}" for m, v in a.answers.items()))
    for name, why in report.skipped.items():
        click.echo(f"skipped {name}: {why}")
    for a in report.ablations:
        for branch, statuses in a.branch_status.items():
            bad = {s: n for s, n in statuses.items() if s != "ok"}
            if bad:
                click.echo(f"note: {a.name}: branch {branch}: " + "; ".join(f"{n}× {s}" for s, n in bad.items()))


@click.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
@home_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the tuning/test split.")
@click.option("--branches", default=None, help="Branches to fuse (default: retrieval.branches), e.g. dense,bm25.")
@click.option("--limit", type=int, default=None, help="Only the first N judged queries.")
@click.option("--split", default="test", show_default=True, help="Which qrels/<split>.tsv to use.")
@click.option("--write", is_flag=True, help="Write the best settings into HOME/fanrag.toml under [retrieval].")
@json_option
def tune(dataset_dir: str, home: str | None, seed: int, branches: str | None, limit: int | None, split: str,
         write: bool, as_json: bool) -> None:
    """Grid-search RRF k, dense/bm25 weights and candidate depth on half of the judged queries; report
    nDCG@10 of the best and of the current settings on the other half."""
    engine, needs_ingest = open_engine(home, dataset_dir, split)
    with engine:
        report = run_tune(engine, dataset_dir, seed, limit=limit, split=split, ingest=needs_ingest,
                          branches=_csv(branches))
        written = write_retrieval_settings(engine.settings.home, report.best) if write else None
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "written": str(written) if written else None}))
        return
    _print_tune(report)
    if written:
        click.echo(f"wrote [retrieval] rrf_k, branch_k, weights to {written}")


def _print_tune(r: TuneReport) -> None:
    click.echo(f"{r.grid_size} settings on {r.n_tune} tuning queries (seed {r.seed}); "
               f"retrieval {r.retrieve_s:.1f} s, grid {r.grid_s:.1f} s")
    for label in ("best", "default"):
        p = r.best if label == "best" else r.default
        click.echo(f"{label:>8}: rrf_k={p.rrf_k} branch_k={p.branch_k} weights={dict(p.weights)}  "
                   f"nDCG@10 tuning {r.tune_scores[label]:.4f}  test ({r.n_test} queries) "
                   f"{r.test_scores[label]:.4f}")
    gain = r.test_scores["best"] - r.test_scores["default"]
    click.echo(f"on the held-out half the tuned settings change nDCG@10 by {gain:+.4f}")
