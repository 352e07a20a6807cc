"""Execute the tutorials and write their Markdown, so that text, numbers and figures cannot drift apart.

Sources are jupytext *percent* files ``docs/tutorials/src/NN-name.py``: cells start at lines ``# %%`` (code)
or ``# %% [markdown]`` (text; every line ``# ``-prefixed). A markdown cell may carry a language,
``# %% [markdown] lang=bg``; unmarked text is English. Code cells are shared, so both languages show the
numbers of the same run. The parser is these few lines rather than the ``jupytext`` package: the format
needs nothing more, and the runner then needs nothing beyond difflab's own dependencies.

All code cells of a tutorial run in one namespace, which the runner seeds with:

* ``QUICK``: True with ``--quick`` (CI budgets, minutes for all five), False for the documented full budgets;
* ``WORK``: a folder for runs and checkpoints (not published); ``DATA``: the shared data folder
  (``../shared/data`` from the repository root, or ``$DIFFLAB_DATA``), which a tutorial checks and skips with
  a printed note when absent;
* ``figure(name) -> Path``: where to write a figure; the cell's output then shows it, and the run fails if the
  cell did not write it;
* ``record(name, value)``: a named result, written to ``results.json`` and usable in any markdown cell and in
  the quiz and pitfall templates as ``{{name}}`` or ``{{name:.2f}}``;
* ``cli(*args)``: runs ``python -m difflab ARGS`` (this checkout's difflab), prints the command and its output,
  and fails the cell if the command fails.

A cell that raises, or does not write a figure it announced, stops the run with exit status 1 and a message
naming the tutorial and the cell. Usage::

    python scripts/tutorials.py --quick              # all five at CI budgets, into docs/
    python scripts/tutorials.py                      # the full budgets
    python scripts/tutorials.py --only 01,03 --out /tmp/t --quick
    python scripts/tutorials.py --fill-only          # after editing docs/src/*.md: refill from results.json
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LANGS = ("en", "bg")
TEMPLATES = ("quiz.md", "pitfalls.md", "bg/quiz.md", "bg/pitfalls.md")   # docs/src/X -> docs/X, filled from results
_CELL = re.compile(r"^# %%(?P<md>\s*\[markdown\])?(?P<rest>.*)$")
_FIELD = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*(?::([^}]*))?\}\}")


class TutorialError(Exception):
    """A tutorial cell failed, or a figure it announced is missing."""


@dataclass
class Cell:
    kind: str            # "code" or "markdown"
    lang: str | None     # markdown only: "en" or "bg"
    source: str
    line: int            # 1-based line of the cell marker


@dataclass
class CellRun:
    cell: Cell
    output: str = ""
    figures: list[str] = field(default_factory=list)


def parse(text: str) -> list[Cell]:
    """Split a percent-format source into cells; text before the first marker is dropped (a module header)."""
    cells: list[Cell] = []
    for i, line in enumerate(text.splitlines(), 1):
        m = _CELL.match(line)
        if m:
            lang = None
            if m["md"]:
                lm = re.search(r"lang=(\w+)", m["rest"])
                lang = lm[1] if lm else "en"
                if lang not in LANGS:
                    raise TutorialError(f"line {i}: unknown language {lang!r} (known: {', '.join(LANGS)})")
            cells.append(Cell("markdown" if m["md"] else "code", lang, "", i))
        elif cells:
            cells[-1].source += line + "\n"
    for c in cells:
        if c.kind == "markdown":
            c.source = "\n".join(_unprefix(s, c.line) for s in c.source.strip("\n").splitlines())
        else:
            c.source = c.source.strip("\n")
    return [c for c in cells if c.source.strip()]


def _unprefix(line: str, where: int) -> str:
    if line == "#":
        return ""
    if not line.startswith("# "):
        raise TutorialError(f"markdown cell at line {where}: line {line!r} does not start with '# '")
    return line[2:]


def fill(text: str, results: dict[str, Any], where: str) -> str:
    """Replace ``{{name}}`` / ``{{name:fmt}}`` by recorded results; an unknown name is an error."""
    def sub(m: re.Match) -> str:
        if m[1] not in results:
            raise TutorialError(f"{where}: no recorded result {m[1]!r}")
        v = results[m[1]]
        if m[2]:
            return format(v, m[2])
        return format(v, ".3g") if isinstance(v, float) else str(v)
    return _FIELD.sub(sub, text)


def _relative(text: str) -> str:
    """Paths as a reader at the repository root would type them (``tutorial_runs/...``, ``../shared/...``)."""
    return text.replace(f"{ROOT}{os.sep}", "").replace(f"{ROOT.parent}{os.sep}", f"..{os.sep}")


def _cli(args: tuple[Any, ...], log: list[str]) -> str:
    argv = [str(a) for a in args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    shown = _relative("difflab " + " ".join(shlex.quote(a) for a in argv))
    print("$ " + shown)
    log.append(shown)
    p = subprocess.run([sys.executable, "-m", "difflab", *argv], capture_output=True, text=True, env=env)
    out = p.stdout.strip("\n")
    if out:
        print(_relative(out))
    if p.returncode != 0:
        raise RuntimeError(f"difflab {argv[0]} exited with status {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p.stdout


def run_tutorial(src: Path, out: Path, work: Path, quick: bool, results: dict[str, Any],
                 data: Path | None = None) -> list[CellRun]:
    """Execute every code cell of ``src`` in one namespace; figures go to ``out/figures``."""
    stem = src.stem
    cells = parse(src.read_text())
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    (work / stem).mkdir(parents=True, exist_ok=True)
    runs = [CellRun(c) for c in cells]
    announced: list[str] = []
    commands: list[str] = []

    def figure(name: str) -> Path:
        fname = f"{stem}-{name}"
        announced.append(fname)
        path = figdir / fname
        if path.exists():
            path.unlink()        # a stale file must not pass for this run's figure
        return path

    def record(name: str, value: Any) -> Any:
        if isinstance(value, (int, float, str, bool)) or value is None:
            results[name] = value
        else:
            raise TutorialError(f"{stem}: record({name!r}, ...) takes a number or a string, got {type(value).__name__}")
        return value

    ns: dict[str, Any] = {"__name__": f"tutorial_{stem.replace('-', '_')}", "QUICK": quick, "WORK": work / stem,
                          "DATA": data if data is not None else _data_dir(), "figure": figure, "record": record,
                          "cli": lambda *a: _cli(a, commands)}
    number = 0
    for r in runs:
        if r.cell.kind != "code":
            continue
        number += 1
        where = f"tutorial {stem}, cell {number} (line {r.cell.line})"
        announced.clear()
        buf = io.StringIO()
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(r.cell.source, f"{src}:{r.cell.line}", "exec"), ns)
        except Exception as e:
            tb = traceback.format_exc(limit=-3)
            raise TutorialError(f"{where} raised {type(e).__name__}: {e}\n{tb}") from e
        missing = [f for f in announced if not (figdir / f).is_file()]
        if missing:
            raise TutorialError(f"{where}: figure {', '.join(missing)} was announced but not written")
        r.output, r.figures = _relative(buf.getvalue().rstrip("\n")), list(announced)
        print(f"  {stem} cell {number}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    results[f"{stem}.commands"] = commands
    return runs


def _data_dir() -> Path:
    return Path(os.environ.get("DIFFLAB_DATA", ROOT.parent / "shared" / "data"))


def render(runs: list[CellRun], lang: str, results: dict[str, Any], stem: str, header: str, fig_prefix: str) -> str:
    """The Markdown of one language: its text cells, every code cell with its output and figures."""
    parts = [header]
    for r in runs:
        c = r.cell
        if c.kind == "markdown":
            if c.lang == lang:
                parts.append(fill(c.source, results, f"{stem} line {c.line}"))
            continue
        parts.append(f"```python\n{c.source}\n```")
        if r.output:
            parts.append(f"```text\n{r.output}\n```")
        parts.extend(f"![{f}]({fig_prefix}figures/{f})" for f in r.figures)
    return "\n\n".join(parts) + "\n"


HEADERS = {
    "en": "<!-- generated by scripts/tutorials.py from src/{stem}.py: edit the source, not this file -->\n"
          "*Executed {setting} in {seconds:.0f} s on {machine}. Full budgets: `python scripts/tutorials.py "
          "--only {num}`.*",
    "bg": "<!-- генерирано от scripts/tutorials.py от ../src/{stem}.py: редактирайте източника, не този файл -->\n"
          "*Изпълнено {setting} за {seconds:.0f} s на {machine}. Пълен бюджет: `python scripts/tutorials.py "
          "--only {num}`.*",
}
SETTING = {("en", True): "at the quick setting (`--quick`)", ("en", False): "at the full budgets",
           ("bg", True): "с бързата настройка (`--quick`)", ("bg", False): "с пълния бюджет"}


def _machine(lang: str) -> str:
    import torch
    n = torch.get_num_threads()
    if lang == "bg":
        return f"{os.cpu_count()} процесорни ядра, {n} {'нишки' if n > 1 else 'нишка'} на torch"
    return f"{os.cpu_count()} CPU cores, {n} torch thread{'s' if n > 1 else ''}"


def write_tutorial(runs: list[CellRun], stem: str, out: Path, results: dict[str, Any], quick: bool,
                   seconds: float) -> list[Path]:
    paths = []
    for lang in LANGS:
        folder = out if lang == "en" else out / lang
        folder.mkdir(parents=True, exist_ok=True)
        head = HEADERS[lang].format(stem=stem, setting=SETTING[lang, quick], seconds=seconds, machine=_machine(lang),
                                    num=stem[:2])
        text = render(runs, lang, results, stem, head, "" if lang == "en" else "../")
        path = folder / f"{stem}.md"
        path.write_text(text)
        paths.append(path)
    return paths


def fill_templates(template_dir: Path, out: Path, results: dict[str, Any]) -> list[Path]:
    written = []
    for name in TEMPLATES:
        src = template_dir / name
        if src.is_file():
            text = "<!-- generated by scripts/tutorials.py from docs/src/%s: edit that template -->\n" % name
            text += fill(src.read_text(), results, str(src))
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)
            written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI budgets (minutes for all five)")
    ap.add_argument("--only", default="", help="comma-separated tutorial numbers or names (default: all)")
    ap.add_argument("--src", type=Path, default=ROOT / "docs" / "tutorials" / "src")
    ap.add_argument("--out", type=Path, default=ROOT / "docs",
                    help="docs folder: tutorials go to OUT/tutorials, quiz and pitfalls to OUT")
    ap.add_argument("--templates", type=Path, default=ROOT / "docs" / "src")
    ap.add_argument("--work", type=Path, default=ROOT / "tutorial_runs", help="runs and checkpoints (not published)")
    ap.add_argument("--threads", type=int, help="CPU threads for torch, here and in the commands (default: 1 with "
                    "--quick, where small models on a shared machine run fastest single-threaded; else torch's own)")
    ap.add_argument("--fill-only", action="store_true",
                    help="only refill the quiz and pitfall templates from OUT/tutorials/results.json")
    a = ap.parse_args(argv)
    if a.fill_only:
        res_path = a.out / "tutorials" / "results.json"
        if not res_path.is_file():
            print(f"tutorials: no {res_path}; run the tutorials first", file=sys.stderr)
            return 2
        try:
            for p in fill_templates(a.templates, a.out, json.loads(res_path.read_text())):
                print(f"  wrote {p}", file=sys.stderr)
        except TutorialError as e:
            print(f"tutorials: error: {e}", file=sys.stderr)
            return 1
        return 0
    threads = a.threads if a.threads is not None else (1 if a.quick else 0)
    if threads <= 0:
        return _run(a)
    import torch
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        return _run(a)
    finally:                  # restored: the runner may be called from a test process
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def _run(a: argparse.Namespace) -> int:
    from difflab.io import atomic_write_text
    sources = sorted(a.src.glob("[0-9][0-9]-*.py"))
    if a.only:
        want = [w.strip() for w in a.only.split(",") if w.strip()]
        sources = [s for s in sources if any(s.stem == w or s.stem.startswith(w + "-") for w in want)]
    if not sources:
        print(f"tutorials: no tutorial sources in {a.src} match {a.only or '*'}", file=sys.stderr)
        return 2
    tut_out = a.out / "tutorials"
    res_path = tut_out / "results.json"
    # a run of all tutorials starts afresh; a partial run (--only) adds to the recorded ones of the same setting
    results: dict[str, Any] = json.loads(res_path.read_text()) if a.only and res_path.is_file() else {}
    if results and results.get("quick") != a.quick:
        print(f"tutorials: {res_path} holds {'quick' if results.get('quick') else 'full'}-setting numbers; run all "
              f"tutorials (without --only) to replace them, so the quiz never mixes the two", file=sys.stderr)
        return 2
    total = time.perf_counter()
    try:
        for src in sources:
            print(f"tutorial {src.stem} ...", file=sys.stderr)
            t0 = time.perf_counter()
            runs = run_tutorial(src, tut_out, a.work, a.quick, results)
            seconds = time.perf_counter() - t0
            results[f"{src.stem}.seconds"] = round(seconds, 1)
            for p in write_tutorial(runs, src.stem, tut_out, results, a.quick, seconds):
                print(f"  wrote {p}", file=sys.stderr)
            results["quick"] = a.quick   # saved after each tutorial: its page and its numbers agree on disk
            tut_out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(res_path, json.dumps(results, indent=1, sort_keys=True) + "\n")
        for p in fill_templates(a.templates, a.out, results):
            print(f"  wrote {p}", file=sys.stderr)
    except TutorialError as e:
        print(f"tutorials: error: {e}", file=sys.stderr)
        return 1
    print(f"tutorials: {len(sources)} done in {time.perf_counter() - total:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
