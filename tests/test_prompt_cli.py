"""``emo-stream prompt`` prints the exact prompt text, through the real entry point."""

from __future__ import annotations

import pytest

from emo_stream.cli import main

EXAMPLE = (
    "[INST] <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: I can't believe you "
    "did that.  [emotion] Please determine which emotion label in the video represents: happy, sad, neutral, angry, "
    "worried, surprise, fear, contempt, doubt.  [/INST]"
)


def test_prompt_prints_the_example_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", "--task", "emotion", "--label-set", "merr", "--subtitle", "I can't believe you did that"]) == 0
    out = capsys.readouterr()
    assert out.out == EXAMPLE + "\n" and out.err == ""


def test_prompt_reason_wording_and_no_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", "--task", "reason", "--label-set", "mer2023", "--instruction-index", "1"]) == 0
    assert capsys.readouterr().out == (
        "[INST] <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: .  [reason] "
        "What is the emotional state of the person in the video? Please tell me the reason.  [/INST]\n"
    )
    assert main(["prompt", "--task", "emotion", "--label-set", "mer2023", "--wording", "merr", "--subtitle", "ok."]) == 0
    out = capsys.readouterr().out
    assert "says: ok..  [emotion]" in out and "contempt, doubt.  [/INST]" in out
    assert main(["prompt", "--task", "emotion", "--label-set", "mer2023", "--template", "v2"]) == 0
    assert "<FeatureHere>" not in capsys.readouterr().out


def test_prompt_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["prompt", "--task", "emotion", "--label-set", "merr", "--tokenizer", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emo-stream: error: tokenizer:") and err.count("\n") == 1
    assert main(["prompt", "--task", "emotion", "--label-set", "merr", "--instruction-index", "-1"]) == 2
    assert "--instruction-index" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["prompt", "--task", "sing", "--label-set", "merr"])
    assert exc.value.code == 2
