"""results/ is a report a reader can trust: every study's tables equal what ``python -m stat_exp.report`` makes
from its committed rows, the index equals what it makes from the studies, studies and sweeps are named by what
they measure, every sweep logs to a W&B group named after its study, and the README's front page is short and
quotes the headline table as committed."""
import json
import re

import pytest

from conftest import ROOT
from stat_exp import report

RESULTS = ROOT / "results"
TICKET = re.compile(r"issue[ _-]?#?\d|ticket", re.I)


def test_committed_tables_equal_what_the_report_makes_from_the_rows():
    found = report.studies(RESULTS)
    assert len(found) >= 20
    for d, spec, rows in found:
        for name, text in report.render(spec, rows).items():
            assert (d / name).read_text() == text, f"{d / name} differs from its rows: run python -m stat_exp.report"
    assert (RESULTS / "README.md").read_text() == report.index(RESULTS, found), \
        "results/README.md differs from the studies: run python -m stat_exp.report"


def test_every_study_says_what_it_asks_and_holds_its_files():
    for d, spec, rows in report.studies(RESULTS):
        assert {"title", "question", "answer", "protocol", "command", "section"} <= set(spec), d
        assert spec["section"] in report.SECTIONS, d
        for f in spec.get("files", []):
            assert (d / f).exists(), f"{d}: {f} listed in study.json but missing"
        if rows:
            assert any(d.glob("curve*.png")), d
            assert all({"method", "budget", "flops_ratio"} <= set(r) for r in rows), d


def test_no_file_or_heading_names_a_ticket():
    paths = [*RESULTS.rglob("*"), *(ROOT / "sweeps").rglob("*"), ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    for p in paths:
        assert not TICKET.search(p.relative_to(ROOT).as_posix()), p
        if p.is_file() and p.suffix in (".md", ".sh", ".py", ".json", ".jsonl"):
            hits = TICKET.findall(p.read_text())
            assert not hits, (p, hits[:3])


def test_every_sweep_a_document_names_exists():
    """A command quoted in results/, the README or docs/ runs: each ``sweeps/…`` script it names is in sweeps/."""
    docs = [*RESULTS.rglob("*.md"), *RESULTS.rglob("study.json"), ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    named = {(p, m) for p in docs for m in re.findall(r"sweeps/[\w./-]+?\.(?:sh|py)\b", p.read_text())}
    assert len(named) > 20
    missing = sorted((str(p.relative_to(ROOT)), m) for p, m in named if not (ROOT / m).is_file())
    assert not missing, missing


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "sweeps").glob("*.sh")
                                          if p.name != "llama2_7b_shape_rehearsal.sh"))
def test_sweeps_log_to_a_wandb_group_named_after_their_study(script):
    text = (ROOT / "sweeps" / script).read_text().replace("\\\n", " ")
    runs = [line for line in text.splitlines() if "python run.py" in line]
    studies = set(re.findall(r"stat_exp\.report results/(\S+?)(?:_\$\w+)? ", text))
    assert runs and studies, script
    for line in runs:
        groups = re.findall(r"logger\.group=(\S+)", line)
        assert groups, f"{script}: a run without logger.group: {line.strip()}"
        g = groups[0]
        assert any(s.startswith(g) or g.startswith(s) for s in studies), (script, g, studies)


def test_readme_front_page_is_short_and_quotes_the_committed_headline_table():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 120
    best = (RESULTS / "smollm2" / "wikitext2_methods" / "best.md").read_text()
    rows = [line for line in best.splitlines() if line.startswith("|")]
    assert "\n".join(rows) in text, "the README's comparison table differs from results/smollm2/wikitext2_methods"
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        assert (ROOT / link).exists(), link
    spec = json.loads((RESULTS / "smollm2" / "wikitext2_methods" / "study.json").read_text())
    assert spec["section"] == "headline"
