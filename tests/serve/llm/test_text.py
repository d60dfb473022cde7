"""``IncrementalText``: token ids to text piece by piece, with stop strings held back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ember.serve.llm._text import IncrementalText


def decode_bytes(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def feed(text: IncrementalText, ids: list[int]) -> list[str]:
    return [text.add(i) for i in ids] + [text.finish()]


def test_a_character_split_over_tokens_comes_out_whole() -> None:
    text = IncrementalText(decode_bytes)
    pieces = feed(text, list("aé€b".encode()))
    assert "".join(pieces) == "aé€b"
    assert pieces[:4] == ["a", "", "é", ""]  # nothing while a character is incomplete
    assert "\ufffd" not in "".join(pieces)


def test_an_incomplete_character_at_the_end_is_flushed_as_it_is() -> None:
    text = IncrementalText(decode_bytes)
    assert feed(text, [104, 0xE2, 0x82]) == ["h", "", "", "\ufffd"]


def test_the_prompt_gives_context_but_is_not_part_of_the_output() -> None:
    # a tokenizer whose tokens decode differently at the start (SentencePiece's leading space)
    vocab = {1: "▁Hello", 2: "▁world", 3: "!"}

    def decode(ids: list[int]) -> str:
        return "".join(vocab[i] for i in ids).replace("▁", " ").lstrip(" ")

    text = IncrementalText(decode, prompt_ids=[1])
    assert feed(text, [2, 3]) == [" world", "!", ""]


def test_a_stop_string_ends_the_text_before_it_and_never_shows_in_part() -> None:
    text = IncrementalText(decode_bytes, stop=["END"])
    pieces = feed(text, list(b"abcENDxyz"))
    assert "".join(pieces) == "abc"
    assert text.stopped and text.text == "abc"
    assert "E" not in "".join(pieces[:4])  # held back while it could start "END"


def test_text_held_back_for_a_stop_string_that_does_not_come_is_released() -> None:
    text = IncrementalText(decode_bytes, stop=["END"])
    assert feed(text, list(b"aENx")) == ["a", "", "", "ENx", ""]


def test_the_earliest_of_several_stop_strings_wins() -> None:
    text = IncrementalText(decode_bytes, stop=["zz", "b"])
    assert "".join(feed(text, list(b"abzzc"))) == "a"


@given(st.binary(max_size=40), st.lists(st.binary(min_size=1, max_size=3), max_size=3))
def test_the_pieces_add_up_to_the_text_up_to_the_first_stop(
        data: bytes, stops_raw: list[bytes]) -> None:
    stops = [s.decode("utf-8", "replace") for s in stops_raw]
    text = IncrementalText(decode_bytes, stop=stops)
    out = "".join(feed(text, list(data)))
    full = decode_bytes(list(data))
    hits = [full.find(s) for s in stops if s in full]
    if hits:
        assert out == full[:min(hits)] and text.stopped
    else:
        assert out == full and not text.stopped
