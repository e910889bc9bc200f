"""Install size and time of ``pip install fanrag`` (the default install, no extras), before vs after.

    python bench/install.py                      # before = 9e84eec (torch in the default), after = HEAD
    python bench/install.py --before REF --after REF

Each side is a git worktree of its commit (``/tmp/wt-<side>``, created if missing; the main checkout is
not touched) installed with ``pip install --no-cache-dir <worktree>`` into a fresh virtualenv
(``/tmp/venv-<side>``), so neither run reuses the other's downloads or built wheels. Reported per side:
wall time of the ``pip install``, bytes of site-packages (``du -sb``), the number of distributions,
whether torch is among them, the largest distributions, and a smoke check run in that virtualenv that
builds the default embedder from an empty model cache and embeds one text (so a wheel that lost its
packaged tokenizer fails here). Wheels come from this machine's package index, partly local files:
times are this machine's, not a user's download. Writes bench/results/install.json with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, environment, write_result

SMOKE = """
import json, sys
from fanrag.embed import create_embedder
from fanrag.settings import EmbedSettings
e = create_embedder(EmbedSettings(threads=1))
v = e.embed_query("Does vitamin D prevent fractures?")
print(json.dumps({"embedder": e.name, "dim": int(v.shape[0]), "norm": round(float(v @ v), 4),
                  "torch_imported": "torch" in sys.modules}))
"""

# Distribution name -> its files' total size, from the installed RECORD files (largest first).
SIZES = """
import json
from importlib import metadata
sizes = {d.metadata["Name"]: sum(f.size or 0 for f in (d.files or [])) for d in metadata.distributions()}
print(json.dumps(dict(sorted(sizes.items(), key=lambda kv: -kv[1]))))
"""


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)


def worktree(ref: str, side: str) -> tuple[Path, str]:
    """A checkout of ``ref`` at /tmp/wt-<side> (created once, reused if it holds that commit)."""
    commit = run(["git", "rev-parse", ref], cwd=ROOT).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"wt-{side}"
    if path.exists() and run(["git", "rev-parse", "HEAD"], cwd=path).stdout.strip() != commit:
        run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT)
    if not path.exists():
        run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT)
    return path, commit


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def du_bytes(path: Path) -> int:
    return int(run(["du", "-sb", str(path)]).stdout.split()[0])


def measure(side: str, ref: str, python: str) -> dict[str, Any]:
    src, commit = worktree(ref, side)
    venv = Path(tempfile.gettempdir()) / f"venv-{side}"
    shutil.rmtree(venv, ignore_errors=True)
    run([python, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    empty_sp = du_bytes(site_packages(venv))  # pip and setuptools of the bare venv
    load_before = os.getloadavg()
    start = time.perf_counter()
    run([py, "-m", "pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check", str(src)])
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    sp = site_packages(venv)
    sizes = json.loads(run([py, "-c", SIZES]).stdout)
    with tempfile.TemporaryDirectory() as cache:
        smoke = json.loads(run([py, "-c", SMOKE], env={**os.environ, "FANRAG_CACHE": cache},
                               cwd=tempfile.gettempdir()).stdout.splitlines()[-1])
    return {"ref": ref, "commit": commit, "venv": str(venv), "pip_install_wall_s": round(wall, 1),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
            "site_packages_bytes": du_bytes(sp), "site_packages_human": run(["du", "-sh", str(sp)]).stdout.split()[0],
            "bare_venv_site_packages_bytes": empty_sp, "distributions": len(sizes),
            "torch_installed": any(name.lower() == "torch" for name in sizes),
            "largest_mb": {name: round(size / 1e6, 1) for name, size in list(sizes.items())[:8]},
            "smoke": smoke}


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {"site_packages_after_over_before": round(after["site_packages_bytes"] / before["site_packages_bytes"], 3),
            "site_packages_saved_mb": round((before["site_packages_bytes"] - after["site_packages_bytes"]) / 1e6, 1),
            "install_time_after_over_before": round(after["pip_install_wall_s"] / before["pip_install_wall_s"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="9e84eec", help="commit of the 'before' install (default 9e84eec)")
    parser.add_argument("--after", default="HEAD", help="commit of the 'after' install (default HEAD)")
    parser.add_argument("--python", default=getattr(sys, "_base_executable", sys.executable),
                        help="interpreter that creates the virtualenvs (default: this one's base)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    env_before = environment()
    sides = {side: measure(side, ref, args.python) for side, ref in (("before", args.before), ("after", args.after))}
    for side, row in sides.items():
        print(f"{side:6s} {row['commit'][:8]} pip install {row['pip_install_wall_s']:6.1f} s  site-packages "
              f"{row['site_packages_human']:>6s}  {row['distributions']} distributions  torch={row['torch_installed']}"
              f"  smoke={row['smoke']}")
    path = write_result("install", {**sides, "comparison": compare(sides["before"], sides["after"])}, env_before,
                        results_dir=args.results_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
