"""Target of test_safety.py's Ctrl-C tests: ``python -m tools.tests.interrupt_run MOMENT MAIN_ARGS...``
(from code/) runs main.py's command line and, at MOMENT, sends SIGINT to its own process group, as a terminal's
Ctrl-C does (the test starts it in a session of its own):

  train-workers  in the parent's after-fork callbacks of the first DataLoader worker
  val-workers    the same for the second worker started (-j 1: the first validation's)
  cache-workers  the same for the first worker, with a --cache-dir to build (the builder's)
  validation     at the first validation batch
  checkpoint     while a checkpoint file is being written
  cache-build    while the decoded cache is being written
"""
import os
import signal
import sys

import decoded_cache
import main


def ctrl_c():
    os.killpg(os.getpgrp(), signal.SIGINT)


def at_call(module, name, call):
    """Send Ctrl-C at the ``call``-th call of ``module.name`` (counted from 1), then make it."""
    real, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            ctrl_c()
        return real(*args, **kwargs)

    setattr(module, name, wrapped)


def at_fork(count):
    """Send Ctrl-C in the parent's after-fork callbacks of the ``count``-th fork."""
    forks = []

    def after_fork():
        forks.append(1)
        if len(forks) == count:
            ctrl_c()

    os.register_at_fork(after_in_parent=after_fork)


if __name__ == "__main__":
    moment = sys.argv[1]
    if moment in ("train-workers", "val-workers", "cache-workers"):
        at_fork(2 if moment == "val-workers" else 1)
    elif moment == "validation":
        at_call(main, "predict", 1)
    elif moment == "checkpoint":
        at_call(main.os, "fsync", 1)  # the first file is written, not yet renamed
    elif moment == "cache-build":
        at_call(decoded_cache, "_write_all", 3)
    else:
        sys.exit(f"unknown moment {moment}")
    main.cli(sys.argv[2:])
