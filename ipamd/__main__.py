"""``python -m ipamd``: run the node daemon."""

from ipamd.cli import run_ipamd

raise SystemExit(run_ipamd())
