"""The layout's one rule: a room imports only the rooms above it in
docs/ARCHITECTURE.md (lazy imports inside functions included)."""

import re
from pathlib import Path

import nonrev

ORDER = ["linalg", "errors", "threads", "config", "outputs", "metrics", "data", "process", "models",
         "scores", "samplers", "regimes", "training", "experiments", "reports", "sweep",
         "integrations", "cli"]
IMPORT = re.compile(r"^\s*(?:from|import)\s+nonrev\.([a-z_]+)", re.M)


def test_imports_point_down_the_list_of_rooms():
    src = Path(nonrev.__file__).parent
    rank = {room: i for i, room in enumerate(ORDER)}
    rooms = {p.name.removesuffix(".py") for p in src.iterdir()
             if p.name != "__init__.py" and not p.name.startswith((".", "_"))
             and (p.suffix == ".py" or p.is_dir())}
    assert rooms <= set(ORDER) | {"__pycache__"}, rooms - set(ORDER)
    upward = []
    for f in src.rglob("*.py"):
        room = f.relative_to(src).parts[0].removesuffix(".py")
        if room == "__init__":
            continue
        for target in IMPORT.findall(f.read_text()):
            if rank[target] > rank[room]:
                upward.append(f"{f.relative_to(src)} imports nonrev.{target}")
    assert not upward, "\n".join(upward)
