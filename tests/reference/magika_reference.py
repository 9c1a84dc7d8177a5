#!/usr/bin/env python3
"""Reference Magika results for a list of files, as JSON lines.

Run with the venv python from setup_venv.sh (magika 1.0.3, default model standard_v3_3,
default prediction mode high_confidence):

    PY=$(bash tests/reference/setup_venv.sh)
    $PY tests/reference/corpus.py --tsv --out corpus.tsv
    $PY tests/reference/magika_reference.py --list corpus.tsv --out magika.jsonl

Paths come as arguments and/or from --list FILE (one per line; "category<TAB>path" lines as
written by `corpus.py --tsv` are accepted and the category is kept). One JSON object per line,
in input order:

    {"path", "category"?, "status", "label", "group", "mime_type", "is_text", "score",
     "dl_label", "overwrite_reason"}

label/group/mime_type/is_text describe result.output (the final answer), dl_label is
result.dl.label (the raw model output; "undefined" when the model was not run, e.g. for files
under 8 bytes), score is result.score. A file that could not be read gets its status (e.g.
"file_not_found_error") and null fields.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_list(path: Path) -> list[tuple[str | None, str]]:
    items: list[tuple[str | None, str]] = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" in line:
            category, p = line.split("\t", 1)
            items.append((category, p))
        else:
            items.append((None, line))
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="files to identify")
    parser.add_argument("--list", type=Path, action="append", default=[],
                        help="file with one path (or category<TAB>path) per line; may be repeated")
    parser.add_argument("--out", type=Path, help="write the JSON lines here instead of stdout")
    args = parser.parse_args(argv)

    items: list[tuple[str | None, str]] = []
    for list_file in args.list:
        items.extend(read_list(list_file))
    items.extend((None, p) for p in args.paths)
    if not items:
        parser.error("no paths given (use arguments or --list FILE)")

    try:
        from magika import Magika
    except ImportError as e:
        print(f"error: cannot import magika ({e}); run with the venv python from setup_venv.sh",
              file=sys.stderr)
        return 2

    m = Magika()  # default model and prediction mode, as the Python package ships them
    results = m.identify_paths([Path(p) for _, p in items])

    lines = []
    failures = 0
    for (category, p), r in zip(items, results, strict=True):
        row: dict[str, object] = {"path": p}
        if category is not None:
            row["category"] = category
        row["status"] = str(r.status)
        if r.ok:
            out = r.output
            row.update(
                label=str(out.label),
                group=out.group,
                mime_type=out.mime_type,
                is_text=out.is_text,
                score=float(r.score),
                dl_label=str(r.dl.label),
                overwrite_reason=str(r.prediction.overwrite_reason),
            )
        else:
            failures += 1
            row.update(label=None, group=None, mime_type=None, is_text=None, score=None,
                       dl_label=None, overwrite_reason=None)
        lines.append(json.dumps(row, ensure_ascii=False))

    text = "".join(line + "\n" for line in lines)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)

    print(f"magika {m.get_module_version()} model {m.get_model_name()}: {len(items)} files, "
          f"{failures} not readable", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
