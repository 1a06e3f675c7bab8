"""How the study and export command lines report bad input: one line `PROG: error: ...` and exit
status 2, never a traceback or argparse's usage block. Imports no torch."""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line `PROG: error: MESSAGE (see PROG --help)`
    and exit status 2; PROG is the command (a sub-command's parser names its command too)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split()[0]
        self.exit(EXIT_BAD_INPUT, f"{command}: error: {message} (see {command} --help)\n")


def one_line_reason(error: BaseException) -> str:
    """`error` as one line: an OSError with an errno as its reason and the path it names
    (`preflight.describe_os_error`), anything else its message with the whitespace collapsed."""
    if isinstance(error, OSError) and error.errno is not None:
        from contrastkit.pipelines.preflight import describe_os_error

        return describe_os_error(error)
    return " ".join(str(error).split())
