"""`python -m runner.init [DIR]`: write a small commented starter conf/ into your project.

    python -m runner.init            # ./conf
    python -m runner.init my_project # my_project/conf

It refuses to overwrite: if any of the files exists, nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:
    from importlib.abc import Traversable


def _templates() -> List[Tuple[str, str]]:
    """(path under conf/, text) of every starter file shipped in the package."""
    root = resources.files("runner.starter").joinpath("conf")
    out: List[Tuple[str, str]] = []

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif child.name.endswith((".yaml", ".md")):
                out.append((name, child.read_text(encoding="utf-8")))

    walk(root, "")
    return out


def write_starter(folder: Path) -> List[Path]:
    """Write folder/conf/...; return the files written. Raises FileExistsError naming the files."""
    conf = folder / "conf"
    files = [(conf / name, text) for name, text in _templates()]
    existing = [path for path, _ in files if path.exists()]
    if existing:
        raise FileExistsError(", ".join(str(p) for p in existing))
    for path, text in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return [path for path, _ in files]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.init", description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default=".", help="the project folder (default: the current one)")
    args = parser.parse_args(argv)
    try:
        written = write_starter(Path(args.dir))
    except FileExistsError as exc:
        print(
            f"runner: error: not overwriting existing files: {exc} (move them away or choose another DIR)",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        print(f"runner: error: cannot write the starter conf/ in {args.dir}: {exc.strerror}", file=sys.stderr)
        return 2
    conf = Path(args.dir) / "conf"
    print(f"runner: wrote {len(written)} files under {conf}:")
    for path in written:
        print(f"  {path}")
    print(f"next: runner --config-dir {conf} --config-name project   (see {conf / 'README.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
