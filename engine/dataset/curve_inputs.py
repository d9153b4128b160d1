"""The learning curve's typed-in inputs, read one way for the command line (`evaluate --test/--arm/--real-fractions`)
and the app's Evaluate… form: shares of the training frames, and NAME=PATH folders. Stdlib only, so the app's form
checks them without torch; each error is an InputError that names what was typed. In engine.dataset (not the
torch lab, engine.evaluation) because the installed app and command line, which leave the lab out, parse them too."""

from __future__ import annotations

from pathlib import Path

from engine.errors import InputError


def parse_fraction(text: str) -> float:
    """One share of the training frames, in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"fractions: {text.strip()!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise InputError(f"fractions: {value:g} must be in (0, 1] (a share of the training frames)")
    return value


def parse_fractions(text: str) -> tuple[float, ...]:
    """Comma- (or semicolon-) separated shares, sorted, each once; () when nothing was typed."""
    return tuple(sorted({parse_fraction(part) for part in text.replace(";", ",").split(",") if part.strip()}))


def named_path(text: str) -> tuple[str, Path]:
    """NAME=PATH, or PATH alone named by its last part: a folder by its name, a file (a job file) by its stem."""
    text = text.strip()
    name, sep, path = text.partition("=")
    if sep and name.strip() and path.strip():
        return name.strip(), Path(path.strip()).expanduser()
    path = Path(text).expanduser()
    if path.suffix and not path.is_dir():
        return path.stem, path
    return path.name or path.resolve().name, path


def parse_test_folders(lines: list[str] | str, must_exist: bool = True) -> dict[str, Path]:
    """Test folders (NAME=DIR or DIR, one an entry), no two of one name; each must exist unless ``must_exist`` is
    False (the command line, whose settings check_settings checks as a whole)."""
    entries = lines.splitlines() if isinstance(lines, str) else lines
    tests: dict[str, Path] = {}
    for entry in entries:
        if not entry.strip():
            continue
        name, path = named_path(entry)
        if name in tests:
            raise InputError(f"test folders: two are named {name!r}; name them NAME=DIR")
        if must_exist and not path.is_dir():
            raise InputError(f"{path}: test folder not found")
        tests[name] = path
    if not tests:
        raise InputError("add at least one test folder: real frames + masks never trained on (NAME=DIR or DIR, "
                         "one a line)")
    return tests
