"""Entry point of the built app (PyInstaller): the commands of main.py, unchanged.

``doctor`` is served from engine.cli.doctor when this main.py does not register it itself yet, so a build
from any checkout has it."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

if not getattr(sys, "frozen", False):  # run from the source tree: main.py is one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _main_knows(command: str) -> bool:
    import main

    parser = main.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return command in action.choices
    return False


DEVELOPER_COMMANDS = ("export", "quantize", "export-features")  # need torch/onnx, which the app does not hold


def run(argv: list[str]) -> int:
    if getattr(sys, "frozen", False) and argv[:1] and argv[0] in DEVELOPER_COMMANDS:
        print(f"error: `{argv[0]}` needs the export tools (torch, optimum, onnx), which the installed app does not "
              "hold: run it from a source checkout (pip install -e '.[cpu,export]'), then copy the bundle into the "
              "app's models folder", file=sys.stderr)
        return 2
    if argv[:1] == ["doctor"] and not _main_knows("doctor"):
        from engine.cli.doctor import register_commands

        parser = argparse.ArgumentParser(prog="polypforge")
        handlers = register_commands(parser.add_subparsers(dest="command"))
        args = parser.parse_args(argv)
        return handlers[args.command](args)
    import main

    return main.main(argv)


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(run(sys.argv[1:]))
