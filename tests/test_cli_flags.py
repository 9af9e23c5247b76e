"""Command-line conventions: global flags anywhere, --version, a closed pipe is not an error."""

from __future__ import annotations

import sys

import pytest

from probdeconv import __version__
from probdeconv.cli.main import build_parser, main


@pytest.mark.parametrize("argv, flags", [
    (["--quiet", "info", "f.h5"], {"quiet"}),
    (["info", "f.h5", "--quiet"], {"quiet"}),
    (["info", "--debug", "f.h5"], {"debug"}),
    (["--verbose", "info", "f.h5", "--debug"], {"verbose", "debug"}),
    (["info", "f.h5"], set()),
])
def test_global_flags_before_or_after_the_subcommand(argv, flags):
    args = build_parser().parse_args(argv)
    assert {f for f in ("debug", "quiet", "verbose") if getattr(args, f)} == flags


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"probdeconv {__version__}"


class _ClosedPipe:
    """A stdout whose reader has gone away, as after ``| head -1``."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_info_into_a_closed_pipe_exits_quietly(tmp_path, monkeypatch, capsys):
    histpy = pytest.importorskip("histpy")
    f = tmp_path / "h.h5"
    histpy.Histogram(histpy.Axis([0.0, 1.0, 2.0], label="x"), contents=[1.0, 2.0]).write(f)
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["info", str(f)]) == 0
    assert "Traceback" not in capsys.readouterr().err
