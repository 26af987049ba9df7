"""`smf ask` and `smf chat` on a tiny model folder: answers, errors, and a terminal session."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from smf.cli import main
from smf.use.chat import render


def err_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smf: error: "), lines
    return lines[0]


def test_ask_answers(tiny_folder, capsys):
    assert main(["ask", "--model", str(tiny_folder), "--max-new-tokens", "3", "What is two plus two?"]) == 0
    assert capsys.readouterr().out.strip()  # a tiny random model says something


@pytest.mark.parametrize("argv, message", [
    (["ask", "--model", "{tiny}"], "no question"),
    (["ask", "--model", "{tiny}", "   "], "no question"),
    (["ask", "--model", "{tiny}", "--max-new-tokens", "0", "hi"], "--max-new-tokens must be >= 1"),
    (["ask", "--model", "{tmp}", "hi"], "is not a model folder"),
    (["chat", "--model", "./no/such/folder"], "does not exist"),
])
def test_bad_input_is_one_line(tiny_folder, tmp_path, capsys, argv, message):
    argv = [a.replace("{tiny}", str(tiny_folder)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in err_line(capsys)


def test_prompts_use_the_chat_template_when_there_is_one(tiny_folder):
    from smf.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_folder)
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]
    text = render(tokenizer, turns)
    assert text.index("hi") < text.index("hello") < text.index("again") and text.rstrip().endswith("assistant")
    tokenizer.chat_template = None
    assert render(tokenizer, turns[:1]) == "Question: hi\nAnswer:"
    assert render(tokenizer, turns) == "User: hi\nAssistant: hello\nUser: again\nAssistant:"


def _read_until(fd, marker: str, seen: list[str], timeout: float = 120.0) -> str:
    end = time.time() + timeout
    while marker not in "".join(seen):
        assert time.time() < end, f"no {marker!r} in {''.join(seen)[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                seen.append(os.read(fd, 4096).decode("utf-8", "replace"))
            except OSError:
                break
    text = "".join(seen)
    seen.clear()
    seen.append(text[text.index(marker) + len(marker):])
    return text


def test_chat_in_a_terminal(tiny_folder):
    """Two turns, /reset, another turn, /quit: driven through a pseudo-terminal like a person."""
    leader, follower = pty.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "smf.cli", "chat", "--model", str(tiny_folder), "--max-new-tokens", "3"],
                            stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    seen: list[str] = []
    try:
        assert "/reset" in _read_until(leader, "you> ", seen)
        for line, expect in [("hello there", "you> "), ("and again", "you> "), ("/reset", "(conversation reset)"),
                             ("a new start", "you> "), ("/nope", "unknown command /nope")]:
            os.write(leader, (line + "\n").encode())
            text = _read_until(leader, expect, seen)
            if expect != "you> ":
                text += _read_until(leader, "you> ", seen)  # the next prompt
            if not line.startswith("/"):
                assert "model> " in text
        os.write(leader, b"/quit\n")
        assert proc.wait(timeout=60) == 0, "".join(seen)[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
