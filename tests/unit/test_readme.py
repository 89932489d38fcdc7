"""The README stays true: every file, script and config it names exists, and its code map names
every module of the package (a new module without a line there fails here)."""

import re

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))


def code_map_paths() -> list[str]:
    section = README.split("## Code map", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)`", section, flags=re.M)


def test_every_path_in_the_code_map_exists():
    paths = code_map_paths()
    assert len(paths) >= 10, "the README has no code map table"
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert not missing, f"the README's code map names files that do not exist: {missing}"


def test_the_code_map_names_every_module():
    named = set(code_map_paths())
    modules = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "linreg_pl").rglob("*.py")
        if path.name != "__init__.py" or path.parent.name == "linreg_pl"
    ]
    folders = {path.rstrip("/") for path in named}
    unnamed = [m for m in modules if m not in named and m.rsplit("/", 1)[0] not in folders]
    assert not unnamed, f"modules missing from the README's code map: {unnamed}"


def test_every_file_the_docs_name_exists():
    texts = [README, *(doc.read_text() for doc in DOCS)]
    named = set()
    for text in texts:
        named |= set(re.findall(r"\b((?:scripts|configs|benchmarks|docs)/[\w./-]+\.(?:py|yaml|md|png|csv))\b", text))
        named |= {f"{m.replace('.', '/')}.py" for m in re.findall(r"python -m (benchmarks\.\w+)", text)}
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"README/docs name files that do not exist: {missing}"
