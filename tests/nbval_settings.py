"""pytest plugin for `make nbval` (loaded with -p tests.nbval_settings; the notebooks are not under tests/,
so tests/conftest.py does not reach them).

nbval 0.11 waits at most 5 s for each output message of a cell that has finished, hard-coded. On a
busy shared machine a long cell's last messages can take longer, and nbval then stops the kernel and
every later cell fails. Give it a generous wait instead: a real hang is still caught by the cell timeout.
"""
OUTPUT_WAIT_S = 120


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):  # nbval's IPyNbCell
            item.output_timeout = OUTPUT_WAIT_S
