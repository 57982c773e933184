"""`python -m evaluation --config ...`: the same command as `python -m evaluation.evaluate`."""
import sys

from core.cli import run_cli
from evaluation.evaluate import main

sys.exit(run_cli(main))
