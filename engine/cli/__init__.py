"""Command-line wiring of main.py's subcommands: each module registers its argparse commands
(``register_commands``) and runs them by importing the engine code they need only when they run, so that
``main.py --help`` stays instant. The top of the engine: nothing in engine/ imports it back."""
