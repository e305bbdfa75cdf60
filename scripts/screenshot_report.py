"""Open a built report in headless Chromium, check it as the browser test does, and save a full-page screenshot.

    python scripts/screenshot_report.py REPORT_DIR OUT.png [--height PX]

Prints each problem found (an image that did not load, a console or page error, a hidden verdict badge, a wrong
number of paper sections) and exits 1 if there was any; the screenshot is written either way. Needs Debian's
chromium and Playwright (`make browser`, the `dev` extra). Used for docs/report.png in the README.
"""
from __future__ import annotations

import argparse
import sys

from tenfold.errors import TenfoldError
from tenfold.report.browser import check_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", help="a report folder holding index.html")
    parser.add_argument("out", help="where to write the PNG screenshot")
    parser.add_argument("--height", type=int, default=None, help="only the top PX pixels (default: the whole page)")
    args = parser.parse_args(argv)
    if args.height is not None and args.height < 1:
        print("error: --height must be >= 1", file=sys.stderr)
        return 2
    try:
        problems = check_report(args.report_dir, screenshot=args.out, height=args.height)
    except TenfoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{args.out}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
