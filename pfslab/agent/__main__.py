"""`python -m pfslab.agent many SPEC.json`: the same as `pfslab phone many SPEC.json`."""
import sys

from ..cli import main

sys.exit(main(["phone", *sys.argv[1:]]))
