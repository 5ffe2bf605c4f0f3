#!/usr/bin/env bash
# Build the HTML documentation: warnings are errors (-W), the gallery in examples/ is
# executed. Output in docs/_build/html (index.html). Needs the docs extra:
#   python3 -m pip install -e ".[docs]"
set -euo pipefail
cd "$(dirname "$0")"
rm -rf _build generated auto_examples gen_modules sg_execution_times.rst
MPLBACKEND=Agg python3 -m sphinx -W --keep-going -b html -j 1 . _build/html "$@"
