"""The learning path: the tutorial runner (scripts/tutorials.py), the five tutorials at the quick setting, and the
commands the quiz and the pitfalls point to."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from difflab.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tutorials_runner", ROOT / "scripts" / "tutorials.py")
tut = importlib.util.module_from_spec(_spec)
sys.modules["tutorials_runner"] = tut
_spec.loader.exec_module(tut)


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text)
    return p


GOOD = """# header dropped
# %% [markdown]
# # Title
# value is {{answer}}

# %% [markdown] lang=bg
# # Заглавие
# стойността е {{answer}}

# %%
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
x = 6 * 7
print("x =", x, QUICK)
record("answer", x)

# %%
fig = plt.figure()
plt.plot([0, 1], [0, x])
fig.savefig(figure("line.png"))
cli("samplers")
"""


def test_parse_percent_format():
    cells = tut.parse(GOOD)
    assert [(c.kind, c.lang) for c in cells] == [("markdown", "en"), ("markdown", "bg"), ("code", None),
                                                 ("code", None)]
    assert cells[0].source == "# Title\nvalue is {{answer}}"
    assert cells[2].source.startswith("import matplotlib") and cells[2].line == 10
    with pytest.raises(tut.TutorialError, match="does not start with"):
        tut.parse("# %% [markdown]\nno prefix\n")
    with pytest.raises(tut.TutorialError, match="unknown language"):
        tut.parse("# %% [markdown] lang=xx\n# text\n")


def test_runner_writes_both_languages_with_output_figures_and_results(tmp_path):
    _write(tmp_path / "src", "01-good.py", GOOD)
    rc = tut.main(["--quick", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "docs"),
                   "--work", str(tmp_path / "work"), "--templates", str(tmp_path / "none")])
    assert rc == 0
    en = (tmp_path / "docs/tutorials/01-good.md").read_text()
    bg = (tmp_path / "docs/tutorials/bg/01-good.md").read_text()
    assert "value is 42" in en and "Заглавие" not in en
    assert "стойността е 42" in bg and "value is" not in bg
    assert "x = 42 True" in en and "x = 42 True" in bg                          # the same run in both
    assert "![01-good-line.png](figures/01-good-line.png)" in en
    assert "![01-good-line.png](../figures/01-good-line.png)" in bg
    assert "$ difflab samplers" in en and "ddpm" in en                          # the CLI's own output
    assert (tmp_path / "docs/tutorials/figures/01-good-line.png").stat().st_size > 1000
    assert '"answer": 42' in (tmp_path / "docs/tutorials/results.json").read_text()


@pytest.mark.parametrize("body, message", [
    ("# %%\nx = 1\n\n# %%\nraise ValueError('boom')\n", r"tutorial 01-bad, cell 2 \(line 4\) raised ValueError: boom"),
    ("# %%\np = figure('never.png')\n", r"tutorial 01-bad, cell 1 \(line 1\): figure 01-bad-never.png was announced"),
    ("# %%\ncli('no-such-command')\n", r"tutorial 01-bad, cell 1 \(line 1\) raised RuntimeError: difflab no-such"),
    ("# %% [markdown]\n# {{missing}}\n# %%\nx = 1\n", r"no recorded result 'missing'"),
])
def test_runner_fails_naming_tutorial_and_cell(tmp_path, capsys, body, message):
    _write(tmp_path / "src", "01-bad.py", body)
    _write(tmp_path / "src", "02-later.py", "# %%\nprint('never run')\n")
    rc = tut.main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "docs"), "--work", str(tmp_path / "w"),
                   "--templates", str(tmp_path / "none")])
    assert rc == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "docs/tutorials/02-later.md").exists()      # the run stops at the first failure


def test_stale_figure_does_not_pass(tmp_path):
    """A figure left over from an earlier run must not satisfy a cell that no longer writes it."""
    figs = tmp_path / "docs/tutorials/figures"
    _write(figs, "01-bad-old.png", "stale")
    _write(tmp_path / "src", "01-bad.py", "# %%\np = figure('old.png')\n")
    with pytest.raises(tut.TutorialError, match="was announced but not written"):
        tut.run_tutorial(tmp_path / "src/01-bad.py", tmp_path / "docs/tutorials", tmp_path / "w", True, {})


def test_templates_are_filled_and_refuse_unknown_names(tmp_path):
    _write(tmp_path / "tpl", "quiz.md", "answer {{a:.1f}} and {{b}}\n")
    out = tut.fill_templates(tmp_path / "tpl", tmp_path, {"a": 0.25, "b": "x"})
    assert out == [tmp_path / "quiz.md"] and "answer 0.2 and x" in (tmp_path / "quiz.md").read_text()
    with pytest.raises(tut.TutorialError, match="no recorded result 'b'"):
        tut.fill_templates(tmp_path / "tpl", tmp_path, {"a": 1.0})
    _write(tmp_path / "docs/tutorials", "results.json", '{"a": 1.5, "b": "y"}')
    assert tut.main(["--fill-only", "--out", str(tmp_path / "docs"), "--templates", str(tmp_path / "tpl")]) == 0
    assert "answer 1.5 and y" in (tmp_path / "docs/quiz.md").read_text()


def _broken_links(md: Path) -> list[str]:
    """Relative links and images of a Markdown file that point to no file."""
    links = re.findall(r"\]\(([^)#]+)\)", re.sub(r"```.*?```", "", md.read_text(), flags=re.S))
    return [u for u in links if "://" not in u and not (md.parent / u).is_file()]


def _doc_commands(text: str) -> list[list[str]]:
    """The ``difflab ...`` commands quoted in backticks in a document."""
    return [c.split() for c in re.findall(r"`difflab ([^`]+)`", text)]


@pytest.mark.parametrize("doc", ["docs/quiz.md", "docs/pitfalls.md", "docs/bg/quiz.md", "docs/bg/pitfalls.md"])
def test_documented_commands_exist_and_parse(doc, capsys):
    """Every command the quiz and the pitfalls point to is a registered difflab command whose arguments parse
    (and whose --help runs)."""
    text = (ROOT / doc).read_text()
    commands = _doc_commands(text)
    assert len(commands) >= 5, f"{doc} points to too few commands"
    names = {c.NAME for c in COMMANDS}
    parser = build_parser()
    for argv in commands:
        assert argv[0] in names, f"{doc}: difflab {argv[0]} is not a command"
        args = [a.replace("...", "x") for a in argv]
        parser.parse_args(args)                               # its options exist and parse
        with pytest.raises(SystemExit) as e:
            parser.parse_args([argv[0], "--help"])
        assert e.value.code == 0
    assert "{{" not in text, f"{doc} has an unfilled placeholder"
    assert not _broken_links(ROOT / doc)


@pytest.mark.tutorials
def test_all_tutorials_at_the_quick_setting(tmp_path):
    """Executes the five tutorials as CI does (about 4 minutes on 2 cores); every figure each Markdown file
    shows exists, in both languages, and the quiz and pitfalls templates fill from the run's results."""
    rc = tut.main(["--quick", "--out", str(tmp_path / "docs"), "--work", str(tmp_path / "work")])
    assert rc == 0
    sources = sorted((ROOT / "docs/tutorials/src").glob("0*.py"))
    assert len(sources) == 5
    for src in sources:
        for md, prefix in ((tmp_path / "docs/tutorials" / f"{src.stem}.md", ""),
                           (tmp_path / "docs/tutorials/bg" / f"{src.stem}.md", "../")):
            text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)     # outputs may quote Markdown
            figs = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
            assert figs, f"{md} shows no figure"
            for f in figs:
                assert f.startswith(prefix + "figures/") and (md.parent / f).is_file(), f"{md}: {f} missing"
    for name in ("quiz.md", "pitfalls.md", "bg/quiz.md", "bg/pitfalls.md"):
        assert "{{" not in (tmp_path / "docs" / name).read_text()
        assert not _broken_links(tmp_path / "docs" / name)
