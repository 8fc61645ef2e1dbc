"""Bad input across the whole CLI: for every command, every file it reads and its numeric options get seeded bad
values (empty, truncated, wrong type, wrong encoding, random bytes, huge or non-finite numbers, missing). Every
case must exit 2 with one line on stderr (no traceback), create none of the command's outputs and leave the
bad input itself untouched. Bounded: a fixed number of seeded cases per input, each fails before any real work."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from smoltolk.cli import COMMANDS, main

SEED = 20261207


def bad_files(rng: random.Random) -> dict[str, bytes | None]:
    """Named bad contents for a file an option expects (None: the file does not exist)."""
    return {
        "missing": None,
        "empty": b"",
        "truncated json": b'{"format": "smoltolk.TextSpeechLM", "model": {"backbone": [1, 2',
        "wrong type": b"[1, 2, 3]\n",
        "latin-1": "caf\xe9 id=\xff\n".encode("latin-1"),
        "random bytes": bytes(rng.randrange(256) for _ in range(rng.randrange(16, 512))),
        "huge number": b'{"id": "u1", "units": [1e999, 3], "num_units": 123456789012345678901234567890}\n',
        "yaml junk": b"model: {backbone: [\n  - : :\n",
    }


def _place(root: Path, name: str, content: bytes | None, folder: bool) -> Path:
    """The bad input as a file, or (``folder``) as a folder whose config.json is the bad file."""
    path = root / name.replace(" ", "_")
    if content is None:
        return path
    if folder:
        path.mkdir()
        (path / "config.json").write_bytes(content)
        (path / "model.safetensors").write_bytes(content)
    else:
        path.write_bytes(content)
    return path


# command -> (argv builder given the bad input and an output path, whether the input is a folder)
CASES = {
    "train": (lambda bad, out: ["train", str(bad), "--set", f"run.out_dir={out}"], False),
    "prepare manifest": (lambda bad, out: ["prepare", str(bad), str(out), "--kind", "speech", "--tokenizer",
                                           str(bad)], False),
    "prepare text": (lambda bad, out: ["prepare", str(bad), str(out), "--kind", "text", "--tokenizer", str(bad)],
                     False),
    "inspect": (lambda bad, out: ["inspect", str(bad)], True),
    "convert-gguf": (lambda bad, out: ["convert-gguf", str(bad), str(out)], False),
    "wrap": (lambda bad, out: ["wrap", str(bad), str(out)], True),
    "generate": (lambda bad, out: ["generate", str(bad), "--text", "the cat", "--to", "text", "--out",
                                   str(out)], True),
    "generate units": (lambda bad, out: ["generate", str(bad.parent / "nowhere"), "--units", str(bad), "--to",
                                         "speech", "--out", str(out)], False),
    "tokenize": (lambda bad, out: ["tokenize", str(bad), str(out), "--features", "logmel", "--kmeans", str(bad)],
                 False),
    "fit-kmeans": (lambda bad, out: ["fit-kmeans", str(bad), str(out), "--features", "logmel"], False),
    "convert-kmeans": (lambda bad, out: ["convert-kmeans", str(bad), str(out)], False),
    "eval": (lambda bad, out: ["eval", str(bad), "--tasks", f"speech_nll={bad}", "--out", str(out)], True),
    "eval config": (lambda bad, out: ["eval", str(bad.parent / "nowhere"), "--config", str(bad), "--out",
                                      str(out)], False),
    "analyze": (lambda bad, out: ["analyze", str(bad), "--speech", str(bad), "--out", str(out)], True),
    "world tokenizer": (lambda bad, out: ["world", str(out), "--quick", "--tokenizer", str(bad)], False),
    "synth-data tokenizer": (lambda bad, out: ["synth-data", str(out), "--tokenizer", str(bad)], False),
    "align": (lambda bad, out: ["align", str(bad), str(out), "--ctc-model", str(bad)], False),
}


def _check_one_line_exit_2(argv: list[str], capsys, out: Path, keep: Path | None, before: bytes | None) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) == 1 and "Traceback" not in err[0] and err[0].startswith("smoltolk"), (argv, err)
    assert not out.exists(), (argv, "an output was written")
    if keep is not None and before is not None and keep.is_file():
        assert keep.read_bytes() == before, (argv, "the input was changed")


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_answers_bad_files_in_one_line(case, tmp_path, capsys):
    build, folder = CASES[case]
    rng = random.Random(f"{SEED}-{case}")
    for name, content in bad_files(rng).items():
        bad = _place(tmp_path, f"{name}-input", content, folder)
        out = tmp_path / f"{name}-out"
        keep = bad / "config.json" if folder else bad
        _check_one_line_exit_2(build(bad, out), capsys, out, keep, content)


def _numeric_options() -> list[tuple[str, str]]:
    """(command, option) of every option that parses a number."""
    found = []
    for command in COMMANDS:
        for names, options in command.args:
            if "_number" in getattr(options.get("type"), "__qualname__", ""):
                found.append((command.name, names[0]))
    return found


BAD_NUMBERS = ["nan", "inf", "-inf", "1e999", "12abc", "", "0x10", "-7.5"]  # no numeric option accepts any


@pytest.mark.parametrize(("command", "option"), _numeric_options())
def test_every_numeric_option_refuses_bad_numbers_in_one_line(command, option, tmp_path, capsys):
    required = {"prepare": ["m", "o", "--kind", "text", "--tokenizer", "t"], "generate": ["c", "--to", "text"],
                "tokenize": ["m", "o", "--features", "logmel", "--kmeans", "k"],
                "fit-kmeans": ["m", "o", "--features", "logmel"], "eval": ["c", "--out", str(tmp_path / "o")],
                "analyze": ["c", "--out", str(tmp_path / "o")], "world": [str(tmp_path / "o")],
                "synth-data": [str(tmp_path / "o")]}
    for value in random.Random(f"{SEED}-{command}-{option}").sample(BAD_NUMBERS, 5):
        argv = [command, *required.get(command, []), option, value]
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and option in err[0] and "Traceback" not in err[0], (argv, err)
    assert not (tmp_path / "o").exists()
