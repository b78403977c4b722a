"""One command line: python -m ml <command>, each --help with an example."""

import pytest

from ml.__main__ import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_shows_an_example_in_its_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert f"python -m ml {command}" in text and "example" in text


def test_without_a_command_it_lists_every_command(capsys):
    assert main([]) == 2
    listing = capsys.readouterr().out
    assert all(f"  {command} " in listing for command in COMMANDS)


def test_an_unknown_command_is_refused(capsys):
    assert main(["pack"]) == 2
    assert "unknown command 'pack'" in capsys.readouterr().err
