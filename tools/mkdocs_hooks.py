"""mkdocs hooks (mkdocs.yml `hooks:`): files that live outside docs/ join the site
from their one place in the repository, and the API reference is checked for
missing docstrings.

- README.md is the site's front page (index.md), its `docs/` links rewritten to
  site-relative ones; CHANGELOG.md becomes changelog.md.
- bench/results/full.png (written by `python -m bench --plot`) becomes
  assets/full.png, so the Benchmarks page shows the chart of record.
- Every public function, class and method that zkalloc_np exports (its
  __all__, and the modules listed in DOCUMENTED_MODULES) must have a
  docstring: a missing one is logged as a warning, which fails
  `mkdocs build --strict`."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED_MODULES = ["zkalloc_np", "zkalloc_np.dask", "zkalloc_np.interop"]
log = logging.getLogger("mkdocs.hooks.zkalloc")


def _front_page() -> str:
    text = (ROOT / "README.md").read_text()
    # README links to docs/page.md and CHANGELOG.md (right on a repository browser); on the
    # site they are page.md and changelog.md
    return re.sub(r"\]\(docs/", "](", text).replace("](CHANGELOG.md)", "](changelog.md)")


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", content=_front_page()))
    files.append(File.generated(config, "changelog.md", abs_src_path=str(ROOT / "CHANGELOG.md")))
    files.append(File.generated(config, "assets/full.png", abs_src_path=str(ROOT / "bench" / "results" / "full.png")))
    return files


def _missing_docstrings() -> list[str]:
    import griffe
    package = griffe.load("zkalloc_np", search_paths=[str(ROOT)], resolve_aliases=True,
                          resolve_external=False)
    missing = []

    def check(obj, path: str) -> None:
        if obj.is_alias:
            obj = obj.final_target
        if not (obj.is_function or obj.is_class):
            return
        if not obj.docstring or not obj.docstring.value.strip():
            missing.append(path)
        if obj.is_class:
            for name, member in obj.members.items():
                if not name.startswith("_") and (member.is_function or (member.is_alias and member.final_target.is_function)):
                    check(member, f"{path}.{name}")

    for module_path in DOCUMENTED_MODULES:
        module = package if module_path == "zkalloc_np" else package[module_path.split(".", 1)[1]]
        exported = module.exports if module.exports is not None else [n for n in module.members if not n.startswith("_")]
        for name in exported:
            name = getattr(name, "name", name)
            check(module[name], f"{module_path}.{name}")
    return missing


def on_pre_build(config) -> None:
    for path in _missing_docstrings():
        log.warning("API reference: %s has no docstring", path)
