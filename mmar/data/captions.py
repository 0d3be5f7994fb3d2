"""Text captions for Bandai Namco clips, built from their content and style labels.

Each content label has hand-written verb phrases (third person, present tense, and an
``-ing`` form); each style label has an adverbial phrase (``"in an elderly manner"``), a noun
phrase for the performer (``"an elderly person"``) and a participial phrase
(``"looking tired"``). A handful of sentence templates combine them, e.g.::

    a person waves the left hand in an elderly manner.
    someone walks to the left while looking tired.
    an elderly person is raising both hands.

:func:`captions_for` is deterministic: the same labels always give the same list, rotated by
a stable hash of the clip's labels so that the first caption varies between takes. The
``normal`` style also gets plain phrasings without any manner (``"a person walks forward."``).
Between 12 and 16 distinct captions per (content, style) pair.
"""
from __future__ import annotations

import hashlib
from typing import Mapping

__all__ = ["CONTENT_PHRASES", "STYLE_PHRASES", "TEMPLATES", "captions_for", "all_captions"]

# content -> (third-person verb phrases, -ing phrases); keys are label names without the
# "dataset-N_" prefix. Dataset 1 and dataset 2 share the key when the motion is the same
# kind ("walk", "run"); the dataset's own phrasing is picked by _content_phrases.
_D1_CONTENT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "walk": (("walks forward", "walks straight ahead"), ("walking forward", "walking straight ahead")),
    "run": (("runs forward", "jogs ahead"), ("running forward", "jogging ahead")),
    "dash": (("dashes forward", "sprints ahead"), ("dashing forward", "sprinting ahead")),
    "walk-back": (("walks backward", "steps backwards"), ("walking backward", "stepping backwards")),
    "walk-left": (("walks to the left", "walks off toward the left"),
                  ("walking to the left", "walking off toward the left")),
    "walk-right": (("walks to the right", "walks off toward the right"),
                   ("walking to the right", "walking off toward the right")),
    "bow": (("bows", "bows from the waist"), ("bowing", "bowing from the waist")),
    "bye": (("waves goodbye with one hand", "waves one hand to say goodbye"),
            ("waving goodbye with one hand", "waving one hand to say goodbye")),
    "guide": (("gestures to show someone the way", "points the way with an open hand"),
              ("gesturing to show someone the way", "pointing the way with an open hand")),
    "byebye": (("waves goodbye with both hands", "waves both hands to say bye-bye"),
               ("waving goodbye with both hands", "waving both hands to say bye-bye")),
    "respond": (("responds to someone with a gesture", "answers someone with a gesture"),
                ("responding to someone with a gesture", "answering someone with a gesture")),
    "call": (("calls out to someone", "beckons with raised hands"),
             ("calling out to someone", "beckoning with raised hands")),
    "punch": (("throws punches", "punches with the fists"), ("throwing punches", "punching with the fists")),
    "kick": (("kicks", "throws a kick"), ("kicking", "throwing a kick")),
    "slash": (("slashes with a sword", "makes slashing strikes with a sword"),
              ("slashing with a sword", "making slashing strikes with a sword")),
    "dance-long": (("dances a long routine", "performs a long dance"),
                   ("dancing a long routine", "performing a long dance")),
    "dance-short": (("dances a short routine", "performs a short dance"),
                    ("dancing a short routine", "performing a short dance")),
}
_D2_CONTENT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "walk": (("walks", "walks along"), ("walking", "walking along")),
    "walk-turn-left": (("walks and turns left", "walks, then turns to the left"),
                       ("walking and turning left", "walking, then turning to the left")),
    "walk-turn-right": (("walks and turns right", "walks, then turns to the right"),
                        ("walking and turning right", "walking, then turning to the right")),
    "run": (("runs", "runs along"), ("running", "running along")),
    "wave-both-hands": (("waves both hands", "waves with both hands"),
                        ("waving both hands", "waving with both hands")),
    "wave-left-hand": (("waves the left hand", "waves with the left hand"),
                       ("waving the left hand", "waving with the left hand")),
    "wave-right-hand": (("waves the right hand", "waves with the right hand"),
                        ("waving the right hand", "waving with the right hand")),
    "raise-up-both-hands": (("raises both hands", "lifts both hands up"),
                            ("raising both hands", "lifting both hands up")),
    "raise-up-left-hand": (("raises the left hand", "lifts the left hand up"),
                           ("raising the left hand", "lifting the left hand up")),
    "raise-up-right-hand": (("raises the right hand", "lifts the right hand up"),
                            ("raising the right hand", "lifting the right hand up")),
}
CONTENT_PHRASES = {1: _D1_CONTENT, 2: _D2_CONTENT}

# style -> (adverbial phrases, performer noun phrases, participial phrases)
_STYLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # dataset 1
    "normal": (("in a normal manner", "in an ordinary way"), ("a person", "someone"),
               ("looking relaxed", "looking calm")),
    "happy": (("happily", "in a cheerful way"), ("a happy person", "a cheerful person"),
              ("looking happy", "smiling cheerfully")),
    "sad": (("sadly", "in a gloomy way"), ("a sad person", "a downcast person"),
            ("looking sad", "feeling down")),
    "angry": (("angrily", "in an angry way"), ("an angry person", "a furious person"),
              ("looking angry", "fuming with anger")),
    "proud": (("proudly", "in a proud, confident way"), ("a proud person", "a self-assured person"),
              ("looking proud", "holding the head high")),
    "not-confident": (("timidly", "without any confidence"), ("a timid person", "an insecure person"),
                      ("looking unsure", "lacking confidence")),
    "masculinity": (("in a masculine manner", "in a manly way"), ("a masculine person", "a manly person"),
                    ("looking masculine", "acting in a manly way")),
    "feminine": (("in a feminine manner", "in a graceful, feminine way"),
                 ("a feminine person", "a graceful, feminine person"),
                 ("looking feminine", "moving gracefully")),
    "childish": (("in a childish manner", "like a child"), ("a childlike person", "a playful child"),
                 ("acting childish", "acting like a child")),
    "old": (("like an old person", "in an elderly manner"), ("an old person", "an elderly person"),
            ("looking frail and old", "moving like an old person")),
    "tired": (("wearily", "in a tired way"), ("a tired person", "a weary person"),
              ("looking tired", "worn down by fatigue")),
    "active": (("energetically", "in a lively way"), ("an energetic person", "a lively person"),
               ("looking energetic", "full of energy")),
    "musical": (("theatrically, as if in a musical", "like a performer in a musical"),
                ("a musical performer", "a theatrical performer"),
                ("acting as if on a musical stage", "performing theatrically")),
    "giant": (("like a giant", "with heavy, giant-like movements"), ("a giant", "a huge, lumbering giant"),
              ("moving like a giant", "lumbering like a giant")),
    "chimpira": (("like a swaggering thug", "in a thuggish, swaggering way"),
                 ("a swaggering thug", "a small-time hoodlum"),
                 ("swaggering like a thug", "acting like a street punk")),
    # dataset 2
    "elderly": (("in an elderly manner", "like an elderly person"), ("an elderly person", "an old person"),
                ("looking elderly", "moving slowly like an elderly person")),
    "exhausted": (("in an exhausted way", "with exhaustion"), ("an exhausted person", "a worn-out person"),
                  ("looking exhausted", "worn out")),
    "masculine": (("in a masculine manner", "in a manly way"), ("a masculine person", "a manly person"),
                  ("looking masculine", "acting in a manly way")),
    "youthful": (("in a youthful way", "with youthful energy"), ("a youthful person", "a young person"),
                 ("looking youthful", "full of youthful energy")),
}
STYLE_PHRASES = _STYLES

# {vp}: verb phrase, {ving}: -ing phrase, {adv}: manner, {np}: performer, {part}: participle
TEMPLATES: tuple[str, ...] = (
    "a person {vp} {adv}.",
    "someone {vp} while {part}.",
    "{np} {vp}.",
    "{np} is {ving}.",
    "the person {vp}, {part}.",
    "a person is {ving} {adv}.",
)
# templates that still read well without a manner for the "normal" style
_NEUTRAL_TEMPLATES = ("a person {vp}.", "someone is {ving}.", "the person {vp}.")


def _content_phrases(dataset: int, content: str):
    table = CONTENT_PHRASES.get(int(dataset))
    if table is None or content not in table:
        other = CONTENT_PHRASES[2 if int(dataset) == 1 else 1]
        if content in other:
            return other[content]
        raise KeyError(f"no caption phrases for content {content!r} of dataset {dataset}")
    return table[content]


def all_captions(dataset: int, content: str, style: str) -> list[str]:
    """Every phrasing for one (dataset, content, style), in a fixed order, duplicates removed."""
    vps, vings = _content_phrases(dataset, content)
    if style not in _STYLES:
        raise KeyError(f"no caption phrases for style {style!r}")
    advs, nps, parts = _STYLES[style]
    out: list[str] = []
    seen = set()

    def add(s: str) -> None:
        s = " ".join(s.split())
        if s not in seen:
            seen.add(s)
            out.append(s)

    for k in range(2):  # interleave the phrase variants so the first few differ most
        vp, ving = vps[k % len(vps)], vings[k % len(vings)]
        adv, np_, part = advs[k % len(advs)], nps[k % len(nps)], parts[k % len(parts)]
        if style == "normal":
            for t in _NEUTRAL_TEMPLATES:
                add(t.format(vp=vp, ving=ving))
        for t in TEMPLATES:
            add(t.format(vp=vp, ving=ving, adv=adv, np=np_, part=part))
    return out


def captions_for(labels: Mapping, n: int | None = None) -> list[str]:
    """Captions of a Bandai clip from its labels (``dataset``, ``content``, ``style`` and
    optionally ``take``). Deterministic; ``n`` keeps the first ``n``."""
    dataset = int(labels.get("dataset", 1))
    caps = all_captions(dataset, str(labels["content"]), str(labels["style"]))
    key = f"{dataset}|{labels['content']}|{labels['style']}|{labels.get('take', 0)}"
    shift = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % len(caps)
    caps = caps[shift:] + caps[:shift]
    return caps if n is None else caps[: max(0, int(n))]
