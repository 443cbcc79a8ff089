"""Job log tails: bounded, read from the end of the file, and never on the event loop."""

from __future__ import annotations

import threading

from aifactory.slurm import logs
from aifactory.slurm.jobs import SlurmJob


def test_a_tail_reads_from_the_end_and_is_bounded(tmp_path):
    # A job that prints one endless line (64 MiB of it, no newline) and then a last line.
    path = tmp_path / "aifactory-1.out"
    with open(path, "wb") as f:
        f.truncate(64 * 1024 * 1024)
        f.seek(0, 2)
        f.write(b"\nthe last line\n")
    text = logs.tail_file(path, 100_000)
    assert text.endswith("the last line\n")
    assert len(text) <= logs.MAX_TAIL_BYTES


def test_a_tail_gives_at_most_the_lines_asked_and_never_more_than_the_cap(tmp_path):
    path = tmp_path / "aifactory-2.out"
    path.write_text("".join(f"line {i}\n" for i in range(200_000)))
    assert logs.tail_file(path, 3) == "line 199997\nline 199998\nline 199999\n"
    many = logs.tail_file(path, 100_000)
    assert len(many.splitlines()) == logs.MAX_TAIL_LINES and many.endswith("line 199999\n")
    assert logs.tail_file(tmp_path / "missing.out", 5) is None
    (tmp_path / "empty.out").write_text("")
    assert logs.tail_file(tmp_path / "empty.out", 5) == ""
    (tmp_path / "no-newline.out").write_text("a\nb")
    assert logs.tail_file(tmp_path / "no-newline.out", 1) == "b"


async def test_local_logs_are_read_off_the_event_loop(tmp_path, monkeypatch):
    (tmp_path / "aifactory-3.out").write_text("hello\n")
    threads = []
    read = logs.tail_file

    def spy(path, lines):
        threads.append(threading.current_thread() is threading.main_thread())
        return read(path, lines)

    monkeypatch.setattr(logs, "tail_file", spy)
    job = SlurmJob(job_id="3", standard_output=str(tmp_path / "aifactory-%j.out"),
                   standard_error=str(tmp_path / "aifactory-%j.out"))
    assert await logs.LocalLogs().tail(job, 5) == "hello\n"
    assert threads == [False]
