"""The family × invariant matrix from a pytest -v log of the family-parametrised tests.

    python -m pytest -v -m "not slow" tests/ | tee /tmp/pytest-v.log
    python sweeps/families_matrix.py /tmp/pytest-v.log > /tmp/matrix.md

Each cell counts the passing parametrisations of a test for one family id of ``tests/conftest.py``'s FAMILIES
(✓: all of them passed, ✗ n: n failed). A test counts when every one of its parametrisations names a family id.
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import FAMILIES  # noqa: E402

ids = [f[0] for f in FAMILIES]
line = re.compile(r"^tests/\S+::(\w+)\[([^\]]+)\] (PASSED|FAILED|ERROR|SKIPPED)")
cells: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))
other: set = set()  # tests with a parametrisation that names no family (another axis: not in the matrix)
for text in Path(sys.argv[1]).read_text().splitlines():
    m = line.match(text)
    if not m:
        continue
    test, params, outcome = m.groups()
    fam = next((f for f in sorted(ids, key=len, reverse=True) if re.search(rf"(^|-){f}(_cls)?(-|$)", params)), None)
    if fam is None:
        other.add(test)
        continue
    cells[test][fam][0 if outcome == "PASSED" else 1] += 1
for test in other:
    cells.pop(test, None)
n = sum(p + f for row in cells.values() for p, f in row.values())
failed = sum(f for row in cells.values() for _, f in row.values())
print(f"{n} family-parametrised tests, {failed} not passed\n")
print("| invariant (test) | " + " | ".join(ids) + " |")
print("|---|" + "---|" * len(ids))
for test in sorted(cells):
    row = cells[test]
    fmt = lambda p, f: "–" if p + f == 0 else (f"{p} ✓" if f == 0 else f"{p} ✗ {f}")  # noqa: E731
    print(f"| {test} | " + " | ".join(fmt(*row.get(f, (0, 0))) for f in ids) + " |")
