#!/usr/bin/env python3
"""Reads the index.json of a kosoku (Autobahn TestSuite) report and counts
its cases by verdict. Exits 1 when any case is FAILED, UNIMPLEMENTED or
could not run (ERROR, MISSING), or its close is anything but OK or
INFORMATIONAL; and when the report holds no case at all.

    check.py REPORT_DIR [--markdown]

--markdown prints the counts as a table, for tests/autobahn/reports/.
"""

import collections
import json
import sys
from pathlib import Path

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASSING_CLOSE = {"OK", "INFORMATIONAL"}
ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    report = Path(argv[1])
    index = json.loads((report / "index.json").read_text())
    cases = {
        case_id: result
        for agent in index.values()
        for case_id, result in agent.items()
    }
    if not cases:
        print(f"{report}: no case was run", file=sys.stderr)
        return 1
    counts = collections.Counter(result["behavior"] for result in cases.values())
    bad = sorted(
        (
            case_id
            for case_id, result in cases.items()
            if result["behavior"] not in PASSING
            or result["behaviorClose"] not in PASSING_CLOSE
        ),
        key=case_key,
    )
    sections = sorted({case_id.split(".")[0] for case_id in cases}, key=int)
    verdicts = sorted(counts, key=lambda v: ORDER.index(v) if v in ORDER else len(ORDER))
    if "--markdown" in argv:
        print(f"| sections | cases | {' | '.join(verdicts)} |")
        print(f"|---|---|{'---|' * len(verdicts)}")
        row = " | ".join(str(counts[verdict]) for verdict in verdicts)
        print(f"| {', '.join(sections)} | {len(cases)} | {row} |")
    else:
        summary = ", ".join(f"{verdict} {counts[verdict]}" for verdict in verdicts)
        print(f"Autobahn sections {', '.join(sections)}: {len(cases)} cases: {summary}")
    for case_id in bad:
        result = cases[case_id]
        print(
            f"  {case_id}: {result['behavior']}, close {result['behaviorClose']}"
            f" (see {report / result['reportfile']})",
            file=sys.stderr,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
