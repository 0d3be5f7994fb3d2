"""Captions from Bandai Namco content and style labels."""
from __future__ import annotations

import re

import pytest

from mmar.data.bandai import bandai_label_lists, parse_clip_name
from mmar.data.captions import CONTENT_PHRASES, STYLE_PHRASES, TEMPLATES, all_captions, captions_for


def _check_sentence(s: str) -> None:
    assert "{" not in s and "}" not in s, s
    assert s == s.strip() and "  " not in s, s
    assert s[0].islower() and s.endswith(".") and not s.endswith(".."), s
    assert " ," not in s and " ." not in s and ",." not in s, s
    assert not re.search(r"\ba [aeiou]", s), s  # "a elderly"
    assert not re.search(r"\ban [bcdfgjklmnpqrstvwxyz]", s), s  # "an tired"
    assert not re.search(r"\b(\w+) \1\b", s), s  # doubled word
    for m in re.finditer(r"\bis (\w+)", s):  # "is walking", never "is walks"
        assert m.group(1).endswith("ing"), s


def test_phrase_tables_cover_the_label_lists(bandai_dir):
    for d in (1, 2):
        contents, styles = bandai_label_lists(d, bandai_dir)
        assert set(contents) == set(CONTENT_PHRASES[d])
        assert set(styles) <= set(STYLE_PHRASES)
    assert 4 <= len(TEMPLATES) <= 6


def test_every_label_pair_has_three_distinct_grammatical_captions(bandai_dir, bandai_clip_names):
    pairs = {(d, c, s) for d in (1, 2) for c in bandai_label_lists(d, bandai_dir)[0]
             for s in bandai_label_lists(d, bandai_dir)[1]}
    in_data = {(lab["dataset"], lab["content"], lab["style"])
               for lab in map(parse_clip_name, bandai_clip_names)}
    assert in_data <= pairs  # every pair in the data has a cfg entry
    for d, c, s in sorted(pairs):
        caps = captions_for({"dataset": d, "content": c, "style": s, "take": 1})
        assert len(set(caps)) == len(caps) >= 3, (d, c, s)
        for cap in caps:
            _check_sentence(cap)


def test_examples_read_naturally():
    elderly = all_captions(2, "wave-left-hand", "elderly")
    assert "a person waves the left hand in an elderly manner." in elderly
    assert "an elderly person is waving the left hand." in elderly
    tired = all_captions(1, "walk-left", "tired")
    assert "someone walks to the left while looking tired." in tired
    assert "a tired person walks to the left." in tired
    normal = all_captions(1, "bow", "normal")
    assert "a person bows." in normal  # the normal style may add no manner at all
    happy = all_captions(2, "run", "youthful")
    assert "a youthful person is running." in happy


def test_deterministic_and_n():
    lab = {"dataset": 1, "content": "kick", "style": "normal", "take": 1}
    a = captions_for(lab)
    assert a == captions_for(dict(lab))
    assert captions_for(lab, n=3) == a[:3] and captions_for(lab, n=0) == []
    assert sorted(a) == sorted(all_captions(1, "kick", "normal"))
    # different takes start on different phrasings (rotation by a stable hash)
    firsts = {captions_for({**lab, "take": t}, n=1)[0] for t in range(1, 9)}
    assert len(firsts) > 1


def test_unknown_labels_raise():
    with pytest.raises(KeyError):
        captions_for({"dataset": 1, "content": "swim", "style": "normal"})
    with pytest.raises(KeyError):
        captions_for({"dataset": 2, "content": "walk", "style": "sleepy"})
