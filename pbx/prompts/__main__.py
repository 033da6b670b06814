"""``python -m pbx.prompts [--data-dir DIR] [--cache DIR]``: generate the prompt set into the
cache ahead of the first start (the server does the same at start-up; both are fast when
nothing changed). Prints what it did; exits 1 when a prompt could not be generated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pbx.prompts.generate import generate
from pbx.prompts.table import PromptTable


def main(argv: list[str] | None = None) -> int:
    """Generate the prompts; 0 when all exist."""
    parser = argparse.ArgumentParser(prog="python -m pbx.prompts", description=__doc__)
    parser.add_argument("--data-dir", default="asyncpbx-data",
                        help="the PBX's data directory (default: asyncpbx-data)")
    parser.add_argument("--cache", default=None,
                        help="the prompt cache (default: DATA_DIR/prompts/generated)")
    args = parser.parse_args(argv)
    cache = Path(args.cache) if args.cache else Path(args.data_dir) / "prompts" / "generated"
    result = generate(PromptTable.load(), cache)
    print(f"prompts in {cache}: {result.generated} generated, {result.cached} cached, "
          f"{len(result.failed)} failed")
    for lang, name in result.failed:
        print(f"  failed: {lang}/{name}", file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
