"""``manage.py minoots <noun> <verb>``: the operator's commands, one module per noun.

Each verb parses its options, calls services and selectors (no rules here), prints a table by
default or JSON with ``--json``, and fails with a ``CommandError`` (exit 1, one line) naming
what was wrong. The command itself is ``timers/management/commands/minoots.py``.
"""
