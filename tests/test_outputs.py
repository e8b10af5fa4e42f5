"""emo_stream/outputs.py and the sinks: outputs never alias inputs, failed writes are one line and lose nothing.

Real files, links, pipes and /dev/full (which refuses every write even for root).
Permission-bit cases skip when the tests run as root, where those bits are not enforced.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from emo_stream.errors import OutputError
from emo_stream.labels import get_label_set
from emo_stream.outputs import atomic_output, check_writable, make_dir, refuse_alias, same_file, write_text
from emo_stream.state import EmotionState, read_jsonl
from emo_stream.stream.sinks import JsonlSink, StdoutSink

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="/dev/full is Linux-only")
root_skip = pytest.mark.skipif(os.geteuid() == 0, reason="running as root: permission bits are not enforced")


def _state(i: int) -> EmotionState:
    ls = get_label_set("mer2023")
    probs = [1.0 / len(ls.labels)] * len(ls.labels)
    return EmotionState.build(
        window_start=0.5 * i, window_end=0.5 * (i + 1), sequence=i, label_set=ls, probabilities=probs, modalities=("video",), model_id="test"
    )


# -- aliasing ---------------------------------------------------------------------------------


@pytest.fixture
def media_copy(tmp_path: Path) -> Path:
    p = tmp_path / "in.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(100))
    return p


@pytest.mark.parametrize("how", ["same", "dotted", "symlink", "hardlink", "relative"])
def test_an_output_that_is_the_input_is_refused(media_copy: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d = media_copy.parent
    if how == "same":
        out = media_copy
    elif how == "dotted":
        out = d / "." / ".." / d.name / "in.mp4"
    elif how == "symlink":
        out = d / "link.jsonl"
        out.symlink_to(media_copy)
    elif how == "hardlink":
        out = d / "hard.jsonl"
        os.link(media_copy, out)
    else:
        monkeypatch.chdir(d)
        out = Path("in.mp4")
    before = media_copy.read_bytes()
    with pytest.raises(OutputError, match=r"--jsonl .* is the same file as --input .*refusing to overwrite an input"):
        refuse_alias({"--jsonl": out}, {"--input": media_copy})
    assert media_copy.read_bytes() == before


def test_distinct_or_absent_paths_pass_and_outputs_may_not_collide(media_copy: Path) -> None:
    other = media_copy.with_name("states.jsonl")
    refuse_alias({"--jsonl": other, "--out": None}, {"--input": media_copy, "--config": None})
    refuse_alias({"--jsonl": other}, {"--input": "camera:0"})  # not a file: never matches
    other.write_text("x")
    assert not same_file(other, media_copy)
    # a symlink output pointing nowhere yet still resolves to the same path as the missing target
    dangling = media_copy.with_name("dangling")
    dangling.symlink_to(media_copy.with_name("future.jsonl"))
    assert same_file(dangling, media_copy.with_name("future.jsonl"))
    with pytest.raises(OutputError, match="same file as --out .*another output"):
        refuse_alias({"--out": other, "--jsonl": other}, {"--input": media_copy})


# -- write failures ---------------------------------------------------------------------------


@needs_dev_full
def test_jsonl_sink_on_a_full_disk_is_one_line() -> None:
    sink = JsonlSink(DEV_FULL)
    with pytest.raises(OutputError) as ei:
        sink.write(_state(0))
    assert str(ei.value) == "cannot write /dev/full: No space left on device"
    sink.close()  # nothing buffered is retried (no second error)


def test_jsonl_sink_writes_through_every_line(tmp_path: Path) -> None:
    """Each state is on disk before the next is computed: a later failure cannot take earlier lines with it."""
    p = tmp_path / "s.jsonl"
    sink = JsonlSink(p)
    for i in range(3):
        sink.write(_state(i))
        assert len(read_jsonl(str(p))) == i + 1  # read back while the sink is still open
    sink.close()


def test_stdout_sink_reports_a_broken_pipe_and_a_closed_stream() -> None:
    r, w = os.pipe()
    os.close(r)  # the reader went away (`| head`)
    stream = os.fdopen(w, "w")
    sink = StdoutSink(stream)
    with pytest.raises(OutputError, match="^cannot write stdout: Broken pipe$"):
        sink.write(_state(0))
    with pytest.raises(OSError):
        stream.close()  # the failed line is still buffered
    with pytest.raises(OutputError, match="cannot write stdout: it is closed"):
        StdoutSink(stream)


@needs_dev_full
def test_atomic_output_keeps_the_previous_file_and_never_replaces_a_device(tmp_path: Path) -> None:
    p = write_text(tmp_path / "report.md", "old\n")
    with pytest.raises(RuntimeError), atomic_output(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert p.read_text() == "old\n" and sorted(x.name for x in tmp_path.iterdir()) == ["report.md"]
    # a symlink to /dev/full: written in place (fails), the device node stays a device
    link = tmp_path / "full.md"
    link.symlink_to(DEV_FULL)
    with pytest.raises(OutputError, match=r"cannot write .*full.md: No space left on device"):
        write_text(link, "x" * 10)
    assert stat.S_ISCHR(os.stat(DEV_FULL).st_mode)


def test_output_under_a_regular_file_or_onto_a_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"cannot write .*file/sub/x.md: .*(not a directory|Not a directory)"):
        write_text(blocker / "sub" / "x.md", "x")
    with pytest.raises(OutputError, match="it is a directory"):
        check_writable(tmp_path)
    with pytest.raises(OutputError, match="cannot write run dir"):
        make_dir(blocker / "run", "run dir")
    assert blocker.read_text() == ""


@root_skip
def test_read_only_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            write_text(ro / "x.md", "x")
        with pytest.raises(OutputError, match="Permission denied"):
            check_writable(ro / "x.jsonl")
        with pytest.raises(OutputError, match="Permission denied"):
            JsonlSink(ro / "s.jsonl")
    finally:
        ro.chmod(0o755)


def test_write_error_reason_is_the_os_text() -> None:
    from emo_stream.outputs import write_error

    assert str(write_error("x", OSError(errno.EROFS, os.strerror(errno.EROFS)))) == "cannot write x: Read-only file system"
