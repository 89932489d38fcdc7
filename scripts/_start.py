"""Imported first by every script, before the package (whose imports take seconds): a SIGINT or
SIGTERM while Python is still importing ends the command in one line, with status 128 + signum.
Nothing exists yet to clean up; ``linreg_pl.cli.run_command`` takes over once the command runs.

Garbage collection is off while importing (the objects made live as long as the program; ~0.5 s
of collections walked them); ``linreg_pl.commands.started`` freezes them and turns it back on."""

import gc
import os
import signal
import sys

if "__mp_main__" not in sys.modules:  # not in a spawned child (a DataLoader worker, a ddp_spawn rank)
    gc.disable()  # which re-imports this script but never reaches its start


def _ended_while_starting(signum: int, frame) -> None:
    os.write(2, f"error: interrupted ({signal.Signals(signum).name}) while starting; nothing was done\n".encode())
    os._exit(128 + signum)


for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, _ended_while_starting)
